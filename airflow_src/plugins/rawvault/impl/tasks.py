"""Task callables: read the Airflow context, call the plain pipeline functions.

Errors that a retry cannot fix (a conflict in the backup, files that differ
from the recorded ones, a refused move) become ``AirflowFailException``: the
task turns red at once instead of burning its retries; a person looks, fixes
and clears the task. A file that changed *while* it was read (an acquisition
still writing a side file) is retried like any transient error.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from airflow.sdk.exceptions import AirflowFailException, AirflowSkipException

from rawvault import pipeline, watcher
from rawvault.acquisition import AcquisitionGoneError, WrongInstrumentError, acquisition_finished
from rawvault.checksum import TooManyPartsError
from rawvault.file_mover import MoveRefusedError
from rawvault.impl.context import raw_file_id_from, run_id_for
from rawvault.local_backup import BackupConflictError, CopyVerificationError
from rawvault.s3.errors import S3PermanentError
from shared.instrument_types import RawFileSetError
from shared.settings import get_settings

log = logging.getLogger(__name__)

PERMANENT_ERRORS: tuple[type[BaseException], ...] = (
    AcquisitionGoneError,
    WrongInstrumentError,
    BackupConflictError,
    CopyVerificationError,
    TooManyPartsError,
    RawFileSetError,
    MoveRefusedError,
    pipeline.FileInfoMismatchError,
    S3PermanentError,
)


def _fail_fast_on_permanent_errors(function: Any) -> Any:
    def wrapper(**context: Any) -> Any:
        try:
            return function(**context)
        except PERMANENT_ERRORS as error:
            raise AirflowFailException(f"{type(error).__name__}: {error}") from error

    wrapper.__name__ = function.__name__
    wrapper.__doc__ = function.__doc__
    return wrapper


@_fail_fast_on_permanent_errors
def register_new_raw_files(instrument_id: str, **context: Any) -> list[dict[str, Any]]:
    """Register new raw files; return the acquisition handler's trigger arguments per raw file to start."""
    raw_file_ids = watcher.raw_files_to_start(instrument_id, get_settings())
    return [{"conf": {"raw_file_id": rid}, "trigger_run_id": run_id_for(rid)} for rid in raw_file_ids]


@_fail_fast_on_permanent_errors
def monitor_acquisition(**context: Any) -> bool:
    """Sensor poke: return whether the acquisition has finished."""
    instrument_id = context["dag"].dag_id.partition(".")[2]
    return acquisition_finished(raw_file_id_from(context), get_settings(), instrument_id)


@_fail_fast_on_permanent_errors
def compute_checksum(**context: Any) -> dict[str, Any]:
    """Checksum the set; the returned file info goes to XCom for copy and upload."""
    settings = get_settings()
    raw_file_id = raw_file_id_from(context)
    file_info = pipeline.checksum_raw_file(raw_file_id, settings)
    return {"raw_file_id": raw_file_id, "file_info": file_info, "part_size": settings.part_size_bytes}


@_fail_fast_on_permanent_errors
def copy_raw_file(**context: Any) -> dict[str, str]:
    """Copy the set to the verified local backup; the backup folder goes to XCom."""
    backup_folder = pipeline.copy_to_local_backup(raw_file_id_from(context), get_settings())
    return {"backup_folder": str(backup_folder)}


@_fail_fast_on_permanent_errors
def move_raw_file(**context: Any) -> None:
    """Move the acquisition aside on the instrument share."""
    pipeline.move_on_share(raw_file_id_from(context), get_settings())


def file_mover_delay_passed(delay_minutes: float, **context: Any) -> bool:
    """Sensor poke: return whether the configured delay has passed since the file mover was triggered."""
    dag_run = context["dag_run"]
    started = getattr(dag_run, "run_after", None) or getattr(dag_run, "start_date", None) or datetime.now(UTC)
    due = started + timedelta(minutes=delay_minutes)
    if datetime.now(UTC) >= due:
        return True
    log.info("moving at %s (%g minutes after the backup)", due.isoformat(timespec="seconds"), delay_minutes)
    return False


def file_mover_disabled(**context: Any) -> None:
    """Stand-in for start_file_mover when file_mover.delay_minutes is negative: skip."""
    raise AirflowSkipException("the file mover is disabled (file_mover.delay_minutes is negative)")


@_fail_fast_on_permanent_errors
def upload_to_s3(**context: Any) -> dict[str, Any]:
    """Upload the verified local copy to S3 (file info from compute_checksum's XCom, folder from copy's)."""
    from rawvault.backup import XcomFileInfo, upload_raw_file
    from rawvault.claim import UploadInProgressError

    ti = context["ti"]
    checksum = ti.xcom_pull(task_ids="compute_checksum") or {}
    copy = ti.xcom_pull(task_ids="copy_raw_file") or {}
    xcom = XcomFileInfo(
        file_info=checksum.get("file_info"),
        part_size=checksum.get("part_size"),
        backup_folder=Path(copy["backup_folder"]) if copy.get("backup_folder") else None,
    )
    try:
        result = upload_raw_file(raw_file_id_from(context), get_settings(), xcom=xcom)
    except UploadInProgressError as error:
        # Another run (the sweeper, a second trigger) holds the claim and records the outcome itself.
        raise AirflowSkipException(str(error)) from error
    return {
        "s3_backup_key": result.s3_backup_key,
        "s3_etag": result.s3_etag,
        "uploaded": len(result.uploaded),
        "skipped": len(result.skipped),
    }
