"""The root of one environment's settings: every section, and the checks that involve several keys."""

from __future__ import annotations

from pathlib import Path

from pydantic import field_validator

from shared.bucket_names import bucket_name
from shared.s3_limits import MIB
from shared.settings import sections
from shared.settings.alerts import AlertSettings, alert_cross_checks
from shared.settings.base import Section
from shared.settings.purge import PurgeSettings, purge_cross_checks
from shared.settings.s3 import DEFAULT_PART_SIZE_MB, BackupSettings
from shared.settings.s3_compat import compat_cross_checks, zone


class Settings(Section):
    """All settings of one environment."""

    instruments: dict[str, sections.InstrumentSettings]
    locations: sections.LocationSettings
    acquisition: sections.AcquisitionSettings = sections.AcquisitionSettings()
    watcher: sections.WatcherSettings = sections.WatcherSettings()
    file_mover: sections.FileMoverSettings = sections.FileMoverSettings()
    airflow: sections.AirflowSettings = sections.AirflowSettings()
    backup: BackupSettings
    # The facility's IANA time zone: backup.s3.bandwidth windows are read in it.
    timezone: str = "UTC"
    alerts: AlertSettings = AlertSettings()
    purge: PurgeSettings = PurgeSettings()
    source: Path = Path("<memory>")  # the YAML file these settings came from

    @field_validator("timezone")
    @classmethod
    def _known_timezone(cls, value: str) -> str:
        zone(value)
        return value

    @field_validator("instruments")
    @classmethod
    def _instrument_ids(cls, value: dict[str, sections.InstrumentSettings]) -> dict[str, sections.InstrumentSettings]:
        if not value:
            raise ValueError("at least one instrument is needed")
        for instrument_id in value:
            if not sections.INSTRUMENT_ID_RE.fullmatch(instrument_id):
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


def _inside(path: Path, folder: Path) -> bool:
    """Whether ``path`` is ``folder`` or below it (symbolic links of existing parts followed)."""
    path, folder = path.resolve(), folder.resolve()
    return path == folder or folder in path.parents


Problem = tuple[str, str, str]  # (key path, message, fix)


def _folder_checks(settings: Settings) -> list[Problem]:
    """Instrument folders apart from each other and from the local backup."""
    problems: list[Problem] = []
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
    return problems


def _s3_checks(settings: Settings) -> list[Problem]:
    """The fallback project's bucket name, the upload lease against the retry delay, S3-compatible stores."""
    problems: list[Problem] = []
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
        problems += compat_cross_checks(s3.storage_class, s3.max_upload_attempts, s3.upload_timeout_hours, s3.lifecycle)
    return problems


def cross_checks(settings: Settings) -> list[Problem]:
    """Problems that involve several keys, as ``(key path, message, fix)``; paths are resolved already."""
    return _folder_checks(settings) + _s3_checks(settings) + alert_cross_checks(settings) + purge_cross_checks(settings)
