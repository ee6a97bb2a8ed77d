"""Task callables of ``backup_sweeper`` (find and mark) and ``s3_upload_retry`` (one raw file's retry).

The sweeper never uploads itself: it triggers one ``s3_upload_retry`` run per
raw file and ends, so a retry that takes hours never delays the next sweep
(nor its release of stale leases). Each run's id names the raw file and the
attempt it retries, so a sweep never triggers the same retry twice while it
waits for a pool slot; only a retry that has been due for a whole
``MAX_UPLOAD_RETRY_DELAY`` without anyone attempting the upload is triggered again.
"""

from __future__ import annotations

import logging
from typing import Any

from airflow.sdk.exceptions import AirflowFailException, AirflowSkipException

from rawvault.impl.context import raw_file_id_from
from rawvault.impl.fail_fast import fail_fast
from rawvault.keys import ATTEMPTS_KEY, RAW_FILE_ID_KEY, retry_run_id
from shared.db.interface import utc_now
from shared.settings import get_settings

log = logging.getLogger(__name__)

# s3_upload_retry runs active at once. Runs waiting for an s3_upload_pool slot count as active, and the pool
# (not this) is what limits the uploads; a sweep triggers at most rawvault.sweeper.MAX_RETRIES_PER_SWEEP.
MAX_ACTIVE_RETRY_RUNS = 200


def find_upload_retries(**context: Any) -> list[dict[str, Any]]:
    """backup_sweeper: release stale uploads; one TriggerDagRunOperator kwargs per raw file to retry now."""
    from rawvault.sweeper import find_upload_retries as find

    now = utc_now()
    return [
        {
            "trigger_run_id": retry_run_id(retry.raw_file_id, retry.attempts, retry.retry_round(now)),
            "conf": {RAW_FILE_ID_KEY: retry.raw_file_id, ATTEMPTS_KEY: retry.attempts},
        }
        for retry in find(get_settings(), now)
    ]


def _attempts_from(context: dict[str, Any]) -> int | None:
    dag_run = context.get("dag_run")
    conf = (getattr(dag_run, "conf", None) or {}) if dag_run is not None else {}
    value = conf.get(ATTEMPTS_KEY, (context.get("params") or {}).get(ATTEMPTS_KEY))
    if value is None:
        return None  # triggered by hand: retry whatever the attempt count
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise AirflowFailException(
            f"the conf key {ATTEMPTS_KEY!r} of this run must be the raw file's upload attempt count (a whole number "
            f'of 0 or more) or be left out, not {value!r}: trigger it with {{"{RAW_FILE_ID_KEY}": "<raw file id>"}}'
        )
    return value


def _instrument_of(raw_file_id: str) -> str:
    """The raw file's instrument (metrics tag, asset), or "unknown" when it cannot be read (the upload says why)."""
    from shared.db.interface import get_raw_file

    try:
        return get_raw_file(raw_file_id).instrument_id or "unknown"
    except Exception:
        return "unknown"


@fail_fast
def retry_upload_to_s3(**context: Any) -> dict[str, Any]:
    """s3_upload_retry: upload one raw file again from its recorded file_info and local backup folder.

    Skipped (nothing written) when another run is uploading it or has attempted it since the sweep.
    """
    from rawvault.backup import upload_raw_file
    from rawvault.claim import UploadInProgressError, UploadSupersededError
    from rawvault.impl.assets import record_backup_event
    from rawvault.impl.metrics import measured_upload

    raw_file_id = raw_file_id_from(context)
    attempts = _attempts_from(context)
    instrument_id = _instrument_of(raw_file_id)
    try:
        result = measured_upload(
            instrument_id,
            lambda: upload_raw_file(raw_file_id, get_settings(), expected_attempts=attempts),
            not_failures=(UploadInProgressError, UploadSupersededError),
        )
    except (UploadInProgressError, UploadSupersededError) as error:
        raise AirflowSkipException(str(error)) from error
    record_backup_event(context, instrument_id, raw_file_id, result)
    return {
        RAW_FILE_ID_KEY: raw_file_id,
        "s3_backup_key": result.s3_backup_key,
        "s3_etag": result.s3_etag,
        "uploaded": len(result.uploaded),
        "skipped": len(result.skipped),
        "parts_resumed": result.parts_resumed,
    }
