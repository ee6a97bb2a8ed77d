"""The ``purge`` section: when ``file_remover.<instrument>`` deletes backed-up acquisitions from an instrument share.

``purge:`` holds the defaults of every instrument; ``instruments.<id>.purge``
overrides any of its keys for one instrument. :func:`purge_policy` resolves
both into the :class:`PurgePolicy` the purge runs with, including the two
defaults that depend on the environment: ``require`` (both ``s3`` and
``local`` with ``backup_type: s3``, ``local`` otherwise) and ``dry_run`` (true
unless the settings file is the production one, ``rawvault.production.yaml``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Literal

from pydantic import Field, field_validator

from shared.settings.base import CRON_FIX, FIXES, CronExpression, Section

if TYPE_CHECKING:
    from shared.settings.model import Settings

GB = 10**9  # decimal gigabytes, as `df -H` and the free space alerts count them
PRODUCTION_ENV = "production"
REQUIREMENTS = ("s3", "local")
_ENV_FILE_RE = re.compile(r"^rawvault\.([A-Za-z0-9_-]+)\.yaml$")

Requirement = Literal["s3", "local"]
FreeGb = Annotated[float, Field(ge=0, le=10**6)]
AgeDays = Annotated[float, Field(ge=0, le=3650)]
PerRun = Annotated[int, Field(ge=1, le=1000)]
RequireList = Annotated[list[Requirement], Field(min_length=1, max_length=2)]

_REQUIRE_FIX = (
    "list what must hold a verified copy before a set is deleted: [s3, local], [s3] or [local] "
    "(s3 only with backup.backup_type: s3)"
)
_PURGE_FIXES = {
    "enabled": "write true or false, unquoted (false: no file_remover DAG)",
    "schedule": CRON_FIX,
    "min_free_gb": "use GB (10^9 bytes) of 0 or more: the free space the purge makes on the instrument folder",
    "min_age_days": "use days of 0 or more: acquisitions younger than this are never deleted",
    "max_per_run": "use a whole number from 1 to 1000: sets deleted at most per run",
    "require": _REQUIRE_FIX,
    "dry_run": "write true (report only, delete nothing) or false (delete), unquoted",
}
FIXES.update({f"purge.{key}": fix for key, fix in _PURGE_FIXES.items()})


def purge_fix(key: str) -> str:
    """The fix of ``purge.<key>``, also shown for ``instruments.<id>.purge.<key>``."""
    return _PURGE_FIXES.get(key, "")


def _unique(value: list[str]) -> list[str]:
    if len(set(value)) != len(value):
        raise ValueError(f"lists {value} with a repetition")
    return value


class PurgeSettings(Section):
    """Defaults of every instrument's purge (``purge:``)."""

    enabled: bool = False
    schedule: CronExpression = "17 * * * *"
    min_free_gb: FreeGb = 500.0
    min_age_days: AgeDays = 30.0
    max_per_run: PerRun = 10
    require: RequireList | None = None  # None: [s3, local] with backup_type s3, [local] otherwise
    dry_run: bool | None = None  # None: false in production, true elsewhere

    @field_validator("require")
    @classmethod
    def _no_repetition(cls, value: list[str] | None) -> list[str] | None:
        return None if value is None else _unique(value)


class PurgeOverrides(Section):
    """One instrument's own purge keys (``instruments.<id>.purge``); a key left out keeps ``purge:``'s value."""

    enabled: bool | None = None
    schedule: CronExpression | None = None
    min_free_gb: FreeGb | None = None
    min_age_days: AgeDays | None = None
    max_per_run: PerRun | None = None
    require: RequireList | None = None
    dry_run: bool | None = None

    @field_validator("require")
    @classmethod
    def _no_repetition(cls, value: list[str] | None) -> list[str] | None:
        return None if value is None else _unique(value)


@dataclass(frozen=True)
class PurgePolicy:
    """The purge of one instrument as it runs: every key resolved."""

    instrument_id: str
    enabled: bool
    schedule: str
    min_free_gb: float
    min_age: timedelta
    max_per_run: int
    require: frozenset[str]
    dry_run: bool

    @property
    def min_free_bytes(self) -> int:
        return int(self.min_free_gb * GB)

    @property
    def requires_s3(self) -> bool:
        return "s3" in self.require

    @property
    def requires_local(self) -> bool:
        return "local" in self.require


def environment_of(source: Path) -> str | None:
    """The environment a settings file is for (``rawvault.<env>.yaml``); None for any other file name."""
    match = _ENV_FILE_RE.fullmatch(Path(source).name)
    return match.group(1) if match else None


def _merged(settings: Settings, instrument_id: str) -> PurgeSettings:
    overrides = settings.instruments[instrument_id].purge
    if overrides is None:
        return settings.purge
    given = {key: value for key, value in overrides.model_dump().items() if value is not None}
    return settings.purge.model_copy(update=given)


def _default_require(settings: Settings) -> frozenset[str]:
    return frozenset(REQUIREMENTS) if settings.backup.backup_type == "s3" else frozenset({"local"})


def purge_policy(settings: Settings, instrument_id: str) -> PurgePolicy:
    """The resolved purge keys of ``instrument_id``: its own, else ``purge:``'s, else the defaults."""
    merged = _merged(settings, instrument_id)
    dry_run = merged.dry_run
    if dry_run is None:  # deleting is opt-in everywhere but production
        dry_run = environment_of(settings.source) != PRODUCTION_ENV
    return PurgePolicy(
        instrument_id=instrument_id,
        enabled=merged.enabled,
        schedule=merged.schedule,
        min_free_gb=merged.min_free_gb,
        min_age=timedelta(days=merged.min_age_days),
        max_per_run=merged.max_per_run,
        require=frozenset(merged.require) if merged.require else _default_require(settings),
        dry_run=dry_run,
    )


def purge_cross_checks(settings: Settings) -> list[tuple[str, str, str]]:
    """Problems of the purge keys that involve other sections, as ``(key path, message, fix)``."""
    if settings.backup.backup_type == "s3":
        return []
    problems = []
    places = [("purge.require", settings.purge.require)] + [
        (f"instruments.{instrument_id}.purge.require", instrument.purge.require if instrument.purge else None)
        for instrument_id, instrument in settings.instruments.items()
    ]
    for key, require in places:
        if require and "s3" in require:
            problems.append(
                (
                    key,
                    "requires a verified S3 copy, but backup.backup_type is 'local': no set could ever be deleted",
                    "use [local], or set backup.backup_type: s3",
                )
            )
    return problems
