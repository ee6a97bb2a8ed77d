"""Per-environment settings, loaded from YAML and validated on load.

``RAWVAULT_CONFIG=<path>`` names the YAML file; otherwise ``RAWVAULT_ENV=<env>``
selects ``envs/rawvault.<env>.yaml`` in this repository. Any problem raises a
single :class:`SettingsError` naming the file, the key path and the fix.
"""

from __future__ import annotations

import os
import re
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from croniter import croniter  # installed with Airflow (its cron timetables use it)
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from shared.bucket_names import bucket_name
from shared.instrument_types import INSTRUMENT_TYPES

REPO_ROOT = Path(__file__).resolve().parent.parent
ENVS_DIR = REPO_ROOT / "envs"
ENV_VAR_ENV = "RAWVAULT_ENV"
ENV_VAR_CONFIG = "RAWVAULT_CONFIG"

MIB = 1024 * 1024
# S3 multipart limits: parts of 5 MiB to 5 GiB, at most 10,000 parts per object.
S3_MIN_PART_MB = 5
S3_MAX_PART_MB = 5 * 1024
S3_MAX_PARTS = 10_000
DEFAULT_PART_SIZE_MB = 64

STORAGE_CLASSES = (
    "STANDARD",
    "STANDARD_IA",
    "ONEZONE_IA",
    "INTELLIGENT_TIERING",
    "GLACIER_IR",
    "GLACIER",
    "DEEP_ARCHIVE",
)

# Airflow's cron presets (airflow.utils.dates.cron_presets); other @-names are not cron schedules.
CRON_PRESETS = ("@hourly", "@daily", "@weekly", "@monthly", "@quarterly", "@yearly")
_CRON_FIX = (
    "write 5 cron fields in quotes (minute hour day-of-month month day-of-week), e.g. '*/15 * * * *', "
    f"or one of {', '.join(CRON_PRESETS)}"
)

# How to fix a problem at a key path; shown after pydantic's description of it.
_FIXES: dict[str, str] = {
    "backup.backup_type": "set it to 'local' (local copy only) or 's3' (local copy plus S3 upload)",
    "backup.s3": "add a backup.s3 section (region, bucket_prefix, ...) or set backup.backup_type: local",
    "backup.s3.region": "set it to the AWS region of your buckets, e.g. eu-central-1",
    "backup.s3.bucket_prefix": "set it to the prefix of your bucket names, e.g. myfacility-rawdata",
    "backup.s3.part_size_mb": (
        f"use a whole number of MiB from {S3_MIN_PART_MB} to {S3_MAX_PART_MB}; with at most "
        f"{S3_MAX_PARTS} parts per object, the largest raw file is part_size_mb x {S3_MAX_PARTS}"
    ),
    "backup.s3.storage_class": f"use one of {', '.join(STORAGE_CLASSES)}",
    "backup.s3.server_side_encryption": "use AES256 or aws:kms (with kms_key_id)",
    "backup.s3.max_upload_attempts": "use a whole number from 1 to 100 (attempts of one raw file's upload in total)",
    "backup.s3.stale_upload_minutes": (
        "use minutes above 0 (at most a day) and below backup.s3.upload_retry_delay_minutes (when upload_retries "
        "is above 0), so an Airflow retry of upload_to_s3 finds the lease of a dead run expired"
    ),
    "backup.s3.pending_upload_after_hours": "use hours above 0 (at most a year), e.g. 6",
    "backup.s3.sweep_schedule": _CRON_FIX,
    "watcher.schedule": _CRON_FIX,
    "instruments": "list each instrument as <instrument_id>: {type: ..., path: ...}",
    "locations.backup": "set it to the root folder of the local backup",
}
_TYPE_FIXES: dict[str, str] = {
    "bool_type": "write true or false, unquoted",
    "int_type": "write a whole number, unquoted",
    "float_type": "write a number, unquoted",
    "finite_number": "write a finite number (not .nan or .inf)",
    "string_type": "write text (quote it if YAML reads it as something else)",
    "dict_type": "write a mapping of key: value lines",
    "model_type": "write a mapping of key: value lines",
}
_INSTRUMENT_TYPE_FIX = f"set it to one of {', '.join(sorted(INSTRUMENT_TYPES))}"
_INSTRUMENT_PATH_FIX = "set it to the folder the instrument writes its raw files to"
_INSTRUMENT_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,62}$")


def _cron_expression(value: str) -> str:
    """``value`` if Airflow can schedule it: 5 valid cron fields that fire at some time, or a cron preset."""
    text = value.strip()
    if text in CRON_PRESETS:
        return text
    if len(text.split()) != 5 or not croniter.is_valid(text):
        raise ValueError(f"{value!r} is not a valid cron expression")
    try:
        croniter(text).get_next(float)
    except Exception:  # croniter's CroniterBadDateError: a valid expression that never fires (e.g. 31 February)
        raise ValueError(f"cron expression {value!r} never fires") from None
    return text


CronExpression = Annotated[str, AfterValidator(_cron_expression)]


def _folder_path(value: Any) -> Path:
    # YAML gives text; anything else (a number, a list, an empty string) is a mistake, not a path.
    if not isinstance(value, str) or not value.strip():
        raise ValueError("must be a non-empty folder path")
    return Path(value)


FolderPath = Annotated[Path, BeforeValidator(_folder_path)]


class SettingsError(ValueError):
    """The settings file is missing or invalid; the message says where and how to fix it."""


class _Section(BaseModel):
    # strict: no silent coercion ("yes" is not a bool, 64 is not a path);
    # forbid: a misspelt key is an error, not a silently ignored setting.
    # allow_inf_nan=False: YAML's .nan and .inf are never a sensible duration or size.
    model_config = ConfigDict(strict=True, extra="forbid", frozen=True, allow_inf_nan=False)


class InstrumentSettings(_Section):
    """One instrument: its type and the folder it writes raw files to."""

    type: str
    path: FolderPath

    @field_validator("type")
    @classmethod
    def _known_type(cls, value: str) -> str:
        if value not in INSTRUMENT_TYPES:
            raise ValueError(f"unknown instrument type {value!r}")
        return value


class LocationSettings(_Section):
    """Where the local backup lives."""

    backup: FolderPath


class AcquisitionSettings(_Section):
    """When an acquisition counts as finished."""

    poke_interval_seconds: Annotated[float, Field(gt=0)] = 60.0
    size_stable_seconds: Annotated[float, Field(ge=0)] = 300.0
    timeout_hours: Annotated[float, Field(gt=0)] = 48.0


class WatcherSettings(_Section):
    """How instrument folders are watched for new raw files."""

    schedule: CronExpression = "*/5 * * * *"
    fallback_project_id: str = "_FALLBACK"


class FileMoverSettings(_Section):
    """When and where acquisitions are moved aside on the instrument share."""

    delay_minutes: float = 60.0
    target_folder: str = "Backup"

    @field_validator("target_folder")
    @classmethod
    def _plain_folder_name(cls, value: str) -> str:
        if not value or "/" in value or "\\" in value or value in (".", ".."):
            raise ValueError("must be a plain folder name inside the instrument folder, e.g. Backup")
        return value


class AirflowSettings(_Section):
    """Airflow wiring: Celery queue names."""

    queue_prefix: str = ""
    task_retries: Annotated[int, Field(ge=0, le=20)] = 2
    retry_delay_minutes: Annotated[float, Field(ge=0)] = 5.0
    max_active_handler_runs: Annotated[int, Field(ge=1, le=100_000)] = 1000


class S3Settings(_Section):
    """The S3 upload: buckets, credentials, part size and object settings."""

    region: str
    bucket_prefix: str
    aws_conn_id: str = "aws_default"
    part_size_mb: Annotated[int, Field(ge=S3_MIN_PART_MB, le=S3_MAX_PART_MB)] = DEFAULT_PART_SIZE_MB
    auto_create_buckets: bool = False
    storage_class: Literal[STORAGE_CLASSES] = "STANDARD"  # type: ignore[valid-type]
    server_side_encryption: Literal["AES256", "aws:kms"] | None = "AES256"
    kms_key_id: str | None = None
    max_concurrency: Annotated[int, Field(ge=1, le=64)] = 8
    upload_retries: Annotated[int, Field(ge=0, le=20)] = 3
    upload_retry_delay_minutes: Annotated[float, Field(ge=0)] = 15.0
    upload_timeout_hours: Annotated[float, Field(gt=0)] = 24.0
    # backup_sweeper: when it looks for failed and stale uploads, and how often it retries one.
    sweep_schedule: CronExpression = "*/15 * * * *"
    max_upload_attempts: Annotated[int, Field(ge=1, le=100)] = 5
    # Lease of a running upload on its raw file (renewed while it runs); an upload_in_progress
    # raw file whose lease expired is stale (its worker died) and may be taken over.
    stale_upload_minutes: Annotated[float, Field(gt=0, le=24 * 60)] = 10.0
    # backup_sweeper also uploads copying_done raw files untouched this long: their upload_to_s3 never ran.
    pending_upload_after_hours: Annotated[float, Field(gt=0, le=24 * 365)] = 6.0

    @field_validator("region", "bucket_prefix")
    @classmethod
    def _not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("must not be empty")
        return value

    @field_validator("bucket_prefix")
    @classmethod
    def _bucket_prefix_shape(cls, value: str) -> str:
        if not re.fullmatch(r"[a-z0-9][a-z0-9-]{1,40}", value):
            raise ValueError(
                "must be 2-41 characters of lower-case letters, digits and '-', starting with a letter or digit"
            )
        return value

    @model_validator(mode="after")
    def _kms_needs_key(self) -> S3Settings:
        if self.kms_key_id and self.server_side_encryption != "aws:kms":
            raise ValueError("kms_key_id is set but server_side_encryption is not 'aws:kms'")
        return self

    @property
    def part_size_bytes(self) -> int:
        return self.part_size_mb * MIB


class BackupSettings(_Section):
    """Which backup to make: local only, or local plus S3."""

    backup_type: Literal["local", "s3"]
    s3: Annotated[S3Settings | None, Field(validate_default=True)] = None

    @field_validator("s3", mode="after")
    @classmethod
    def _s3_section_when_s3(cls, value: S3Settings | None, info: ValidationInfo) -> S3Settings | None:
        if value is None and info.data.get("backup_type") == "s3":
            raise ValueError("backup_type is 's3' but this section is missing")
        return value


class Settings(_Section):
    """All settings of one environment."""

    instruments: dict[str, InstrumentSettings]
    locations: LocationSettings
    acquisition: AcquisitionSettings = AcquisitionSettings()
    watcher: WatcherSettings = WatcherSettings()
    file_mover: FileMoverSettings = FileMoverSettings()
    airflow: AirflowSettings = AirflowSettings()
    backup: BackupSettings
    source: Path = Path("<memory>")  # the YAML file these settings came from

    @field_validator("instruments")
    @classmethod
    def _instrument_ids(cls, value: dict[str, InstrumentSettings]) -> dict[str, InstrumentSettings]:
        if not value:
            raise ValueError("at least one instrument is needed")
        for instrument_id in value:
            if not _INSTRUMENT_ID_RE.fullmatch(instrument_id):
                raise ValueError(
                    f"instrument id {instrument_id!r} must be 1-63 letters, digits, '_' or '-' "
                    "(it becomes part of DAG ids, queue names and backup paths)"
                )
        return value

    @property
    def s3_enabled(self) -> bool:
        return self.backup.backup_type == "s3"

    @property
    def part_size_bytes(self) -> int:
        """Part size of the S3 multipart ETag recorded for every file."""
        s3 = self.backup.s3
        return s3.part_size_bytes if s3 else DEFAULT_PART_SIZE_MB * MIB

    def queue(self, name: str) -> str:
        """The Celery queue called ``name`` in this environment."""
        return f"{self.airflow.queue_prefix}{name}"


def _format_errors(source: Path, error: ValidationError) -> str:
    lines = [f"invalid rawvault settings in {source}:"]
    for item in error.errors():
        loc = [str(part) for part in item["loc"]]
        key = ".".join(loc) or "<top level>"
        message = item["msg"].removeprefix("Value error, ")
        if item["type"] == "extra_forbidden":
            message = "unknown key (misspelt?)"
            fix = "remove it or correct its spelling; see the comments in envs/rawvault.local.yaml"
        elif item["type"] == "missing":
            message = "missing"
            fix = _fix_for(loc)
        else:
            fix = _fix_for(loc) or _TYPE_FIXES.get(item["type"], "")
            if item["type"] != "value_error" and item["type"] not in ("model_type", "dict_type"):
                message += f" (got {item['input']!r})"
        lines.append(f"  {key}: {message}" + (f" -> fix: {fix}" if fix else ""))
    return "\n".join(lines)


def _fix_for(loc: list[str]) -> str:
    if len(loc) >= 3 and loc[0] == "instruments":
        if loc[2] == "type":
            return _INSTRUMENT_TYPE_FIX
        if loc[2] == "path":
            return _INSTRUMENT_PATH_FIX
    return _FIXES.get(".".join(loc), "")


_ENV_REF_RE = re.compile(r"\$\{(\w+)(?::-([^}]*))?\}")


def _resolve_path(value: Path, base: Path, source: Path, key: str) -> Path:
    """Expand ``${VAR}``, ``${VAR:-default}`` and ``~``; make relative paths relative to ``base``."""

    def expand(match: re.Match[str]) -> str:
        name, default = match.group(1), match.group(2)
        if name in os.environ:
            return os.environ[name]
        if default is not None:
            return default
        raise SettingsError(
            f"invalid rawvault settings in {source}:\n  {key}: uses ${{{name}}}, which is not set "
            f"-> fix: set the environment variable {name} or write ${{{name}:-<default>}}"
        )

    expanded = Path(_ENV_REF_RE.sub(expand, str(value))).expanduser()
    return expanded if expanded.is_absolute() else (base / expanded).resolve()


def parse_settings(raw: Any, source: Path) -> Settings:
    """Validate an already-parsed YAML document; relative paths resolve against ``source``'s folder."""
    if not isinstance(raw, dict):
        raise SettingsError(
            f"invalid rawvault settings in {source}: the file must hold a YAML mapping at the top level"
        )
    try:
        settings = Settings.model_validate({**raw, "source": source})
    except ValidationError as error:
        raise SettingsError(_format_errors(source, error)) from None
    base = source.parent
    instruments = {
        instrument_id: instrument.model_copy(
            update={"path": _resolve_path(instrument.path, base, source, f"instruments.{instrument_id}.path")}
        )
        for instrument_id, instrument in settings.instruments.items()
    }
    backup = _resolve_path(settings.locations.backup, base, source, "locations.backup")
    locations = settings.locations.model_copy(update={"backup": backup})
    settings = settings.model_copy(update={"instruments": instruments, "locations": locations})
    problems = _cross_checks(settings)
    if problems:
        lines = [f"invalid rawvault settings in {source}:"]
        lines += [f"  {key}: {message} -> fix: {fix}" for key, message, fix in problems]
        raise SettingsError("\n".join(lines))
    return settings


def _inside(path: Path, folder: Path) -> bool:
    """Whether ``path`` is ``folder`` or below it (symbolic links of existing parts followed)."""
    path, folder = path.resolve(), folder.resolve()
    return path == folder or folder in path.parents


def _cross_checks(settings: Settings) -> list[tuple[str, str, str]]:
    """Problems that involve several keys, as ``(key path, message, fix)``; paths are resolved already."""
    problems: list[tuple[str, str, str]] = []
    seen: dict[Path, str] = {}
    backup = settings.locations.backup
    for instrument_id, instrument in settings.instruments.items():
        key = f"instruments.{instrument_id}.path"
        folder = instrument.path.resolve()
        if folder in seen:
            problems.append(
                (
                    key,
                    f"{instrument.path} is also the folder of instrument {seen[folder]!r}: both watchers would "
                    "register the same raw files",
                    "give each instrument a folder of its own",
                )
            )
        seen.setdefault(folder, instrument_id)
        if _inside(backup, instrument.path):
            problems.append(
                (
                    "locations.backup",
                    f"{backup} is inside the folder of instrument {instrument_id!r} ({instrument.path}): the watcher "
                    "would see the backup and the file mover could move it",
                    "put the local backup outside every instrument folder",
                )
            )
        elif _inside(instrument.path, backup):
            problems.append(
                (
                    key,
                    f"{instrument.path} is inside the local backup ({backup}, locations.backup): the instrument would "
                    "write into the backup",
                    "keep instrument folders and the local backup apart",
                )
            )
    s3 = settings.backup.s3
    if settings.s3_enabled and s3 is not None:
        try:
            bucket_name(s3.bucket_prefix, settings.watcher.fallback_project_id)
        except ValueError as error:
            problems.append(
                (
                    "watcher.fallback_project_id",
                    f"gives no valid S3 bucket with backup.s3.bucket_prefix {s3.bucket_prefix!r}: {error}",
                    "use a short project id of letters and digits (e.g. _FALLBACK gives "
                    f"{s3.bucket_prefix}-fallback), or a shorter backup.s3.bucket_prefix",
                )
            )
        if s3.upload_retries > 0 and s3.stale_upload_minutes >= s3.upload_retry_delay_minutes:
            problems.append(
                (
                    "backup.s3.stale_upload_minutes",
                    f"{s3.stale_upload_minutes:g} is not below backup.s3.upload_retry_delay_minutes "
                    f"({s3.upload_retry_delay_minutes:g}): a worker that dies mid-upload keeps its claim on the raw "
                    "file this long, so upload_to_s3's Airflow retry would find the claim still held, fail with "
                    "'being uploaded by another run' and leave the upload to backup_sweeper",
                    "lower stale_upload_minutes or raise upload_retry_delay_minutes (or set upload_retries: 0)",
                )
            )
    return problems


def settings_path() -> Path:
    """The YAML file selected by ``RAWVAULT_CONFIG`` or ``RAWVAULT_ENV``."""
    config = os.environ.get(ENV_VAR_CONFIG)
    if config:
        return Path(config).expanduser().resolve()
    env = os.environ.get(ENV_VAR_ENV)
    if not env:
        available = ", ".join(
            sorted(p.name[len("rawvault.") : -len(".yaml")] for p in ENVS_DIR.glob("rawvault.*.yaml"))
        )
        raise SettingsError(
            f"no rawvault environment selected: set {ENV_VAR_ENV} to one of {available} "
            f"(reads {ENVS_DIR}/rawvault.<env>.yaml) or {ENV_VAR_CONFIG} to the path of a settings YAML file"
        )
    if not re.fullmatch(r"[A-Za-z0-9_-]+", env):
        raise SettingsError(f"{ENV_VAR_ENV}={env!r} is not a valid environment name: use letters, digits, '_' or '-'")
    return ENVS_DIR / f"rawvault.{env}.yaml"


def load_settings(path: Path | None = None) -> Settings:
    """Read and validate a settings file (by default the one the environment selects)."""
    path = path or settings_path()
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        hint = f" (selected by {ENV_VAR_CONFIG})" if os.environ.get(ENV_VAR_CONFIG) else ""
        raise SettingsError(
            f"rawvault settings file {path}{hint} does not exist: create it or select another one"
        ) from None
    except OSError as error:
        raise SettingsError(f"cannot read rawvault settings file {path}: {error.strerror}") from None
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as error:
        raise SettingsError(f"rawvault settings file {path} is not valid YAML: {error}") from None
    return parse_settings(raw, path)


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The settings of this process's environment, loaded once."""
    return load_settings()
