"""Task callables: read the Airflow context, call the plain pipeline functions.

Errors that a retry cannot fix fail the task at once (:mod:`rawvault.impl.fail_fast`).
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta
from typing import Any

from airflow.sdk.exceptions import AirflowSkipException

from rawvault import pipeline, watcher
from rawvault.acquisition import acquisition_finished
from rawvault.impl.context import raw_file_id_from
from rawvault.impl.fail_fast import fail_fast
from rawvault.keys import COMPUTE_CHECKSUM_TASK, COPY_RAW_FILE_TASK, RAW_FILE_ID_KEY
from shared.settings import get_settings

log = logging.getLogger(__name__)


@fail_fast
def register_new_raw_files(instrument_id: str, **context: Any) -> list[dict[str, Any]]:
    """Register new raw files; return the acquisition handler's trigger arguments per raw file to start."""
    starts = watcher.handler_starts(instrument_id, get_settings())
    return [{"conf": {RAW_FILE_ID_KEY: rid}, "trigger_run_id": run_id} for rid, run_id in starts]


@fail_fast
def monitor_acquisition(instrument_id: str, **context: Any) -> bool:
    """Sensor poke: return whether the acquisition has finished (a raw file of another instrument is refused)."""
    return acquisition_finished(raw_file_id_from(context), get_settings(), instrument_id)


@fail_fast
def compute_checksum(**context: Any) -> dict[str, Any]:
    """Checksum the set; the returned file info goes to XCom for copy and upload."""
    settings = get_settings()
    raw_file_id = raw_file_id_from(context)
    file_info = pipeline.checksum_raw_file(raw_file_id, settings)
    return {RAW_FILE_ID_KEY: raw_file_id, "file_info": file_info, "part_size": settings.part_size_bytes}


@fail_fast
def copy_raw_file(**context: Any) -> dict[str, str]:
    """Copy the set to the verified local backup; the backup folder goes to XCom."""
    backup_folder = pipeline.copy_to_local_backup(raw_file_id_from(context), get_settings())
    return {"backup_folder": str(backup_folder)}


@fail_fast
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


@fail_fast
def upload_to_s3(instrument_id: str, **context: Any) -> dict[str, Any]:
    """Upload the verified local copy to S3 (file info from compute_checksum's XCom, folder from copy's).

    Sends the upload's metrics (:mod:`rawvault.impl.metrics`) and gives the instrument's asset event its extra
    (:mod:`rawvault.impl.assets`).
    """
    from rawvault.backup import XcomFileInfo, upload_raw_file
    from rawvault.claim import UploadInProgressError
    from rawvault.impl.assets import record_backup_event
    from rawvault.impl.metrics import measured_upload

    ti = context["ti"]
    xcom = XcomFileInfo.from_pushed(
        ti.xcom_pull(task_ids=COMPUTE_CHECKSUM_TASK) or {}, ti.xcom_pull(task_ids=COPY_RAW_FILE_TASK) or {}
    )
    raw_file_id = raw_file_id_from(context)
    try:
        result = measured_upload(
            instrument_id,
            lambda: upload_raw_file(raw_file_id, get_settings(), xcom=xcom),
            not_failures=(UploadInProgressError,),
        )
    except UploadInProgressError as error:
        # Another run (the sweeper, a second trigger) holds the claim and records the outcome itself.
        raise AirflowSkipException(str(error)) from error
    record_backup_event(context, instrument_id, raw_file_id, result)
    return {
        "s3_backup_key": result.s3_backup_key,
        "s3_etag": result.s3_etag,
        "uploaded": len(result.uploaded),
        "skipped": len(result.skipped),
    }
