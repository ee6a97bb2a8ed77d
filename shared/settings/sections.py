"""The settings sections of the pipeline: instruments, locations, acquisition, watcher, file mover, Airflow."""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import Field, field_validator

from shared.instrument_types import INSTRUMENT_TYPES
from shared.settings.base import CRON_FIX, FIXES, CronExpression, FolderPath, Section
from shared.settings.purge import PurgeOverrides

INSTRUMENT_TYPE_FIX = f"set it to one of {', '.join(sorted(INSTRUMENT_TYPES))}"
INSTRUMENT_PATH_FIX = "set it to the folder the instrument writes its raw files to"
INSTRUMENT_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,62}$")

FIXES.update(
    {
        "watcher.schedule": CRON_FIX,
        "acquisition.redrive_schedule": CRON_FIX,
        "acquisition.max_redrives": "use a whole number from 0 (never re-drive) to 100",
        "acquisition.redrive_delay_minutes": "use minutes from 0 to 1440 (the first wait, doubled per re-drive)",
        "acquisition.step_timeout_hours": "use hours above 0 (at most 720): the longest checksum or copy of one try",
        "instruments": "list each instrument as <instrument_id>: {type: ..., path: ...}",
        "locations.backup": "set it to the root folder of the local backup",
        "file_mover.verify": (
            "use size_mtime (every file keeps the size and modification time it had when checksummed) or rehash "
            "(every file's MD5 is computed again)"
        ),
    }
)


class InstrumentSettings(Section):
    """One instrument: its type and the folder it writes raw files to."""

    type: str
    path: FolderPath
    purge: PurgeOverrides | None = None  # this instrument's own purge keys (shared.settings.purge)

    @field_validator("type")
    @classmethod
    def _known_type(cls, value: str) -> str:
        if value not in INSTRUMENT_TYPES:
            raise ValueError(f"unknown instrument type {value!r}")
        return value


class LocationSettings(Section):
    """Where the local backup lives."""

    backup: FolderPath


class AcquisitionSettings(Section):
    """When an acquisition counts as finished, and how often a failed acquisition handler is started again."""

    poke_interval_seconds: Annotated[float, Field(gt=0)] = 60.0
    size_stable_seconds: Annotated[float, Field(ge=0)] = 300.0
    timeout_hours: Annotated[float, Field(gt=0)] = 48.0
    # acquisition_redrive: how often it looks, how many times it starts a raw file's handler again after a
    # transient failure or a lost run, and the first wait after a failure (doubled per re-drive, at most 6 h).
    redrive_schedule: CronExpression = "*/10 * * * *"
    max_redrives: Annotated[int, Field(ge=0, le=100)] = 6
    redrive_delay_minutes: Annotated[float, Field(ge=0, le=24 * 60)] = 15.0
    # execution_timeout of one try of compute_checksum and of copy_raw_file: a read hung on a dead share fails
    # (and is re-driven) instead of holding its worker slot for ever.
    step_timeout_hours: Annotated[float, Field(gt=0, le=24 * 30)] = 24.0


class WatcherSettings(Section):
    """How instrument folders are watched for new raw files."""

    schedule: CronExpression = "*/5 * * * *"
    fallback_project_id: str = "_FALLBACK"


class FileMoverSettings(Section):
    """When and where acquisitions are moved aside on the instrument share."""

    delay_minutes: float = 60.0
    target_folder: str = "Backup"
    # How the mover makes sure the set on the share is still the one backed up (rawvault.recorded_set):
    # size_mtime: each file's size and modification time as recorded at checksum time; rehash: a fresh MD5.
    verify: Literal["size_mtime", "rehash"] = "size_mtime"

    @field_validator("target_folder")
    @classmethod
    def _plain_folder_name(cls, value: str) -> str:
        if not value or "/" in value or "\\" in value or value in (".", ".."):
            raise ValueError("must be a plain folder name inside the instrument folder, e.g. Backup")
        return value


class AirflowSettings(Section):
    """Airflow wiring: Celery queue names."""

    queue_prefix: str = ""
    task_retries: Annotated[int, Field(ge=0, le=20)] = 2
    retry_delay_minutes: Annotated[float, Field(ge=0)] = 5.0
    max_active_handler_runs: Annotated[int, Field(ge=1, le=100_000)] = 1000
