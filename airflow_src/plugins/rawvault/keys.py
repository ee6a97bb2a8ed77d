"""The names rawvault's DAGs, tasks, queues, pools and DAG run confs go by, and the run ids it gives them.

One home for every name that more than one module must spell alike: the DAG
files, the task callables (``rawvault.impl``), the sweeper and the Backups
page take them from here. Most are contract (``DESIGN.md``): other tools
trigger these DAGs and read these task ids, so renaming one is a breaking
change. Pure names and functions: no Airflow import (only the constants of ``shared.s3_limits``), cheap to
import anywhere.
"""

from __future__ import annotations

import hashlib
import re
from datetime import timedelta

from shared.s3_limits import UPLOAD_BACKOFF_CAP_HOURS

# --- DAG ids: one DAG per instrument is "<kind>.<instrument_id>"
WATCHER_DAG_PREFIX = "instrument_watcher"
HANDLER_DAG_PREFIX = "acquisition_handler"
FILE_MOVER_DAG_PREFIX = "file_mover"
FILE_REMOVER_DAG_PREFIX = "file_remover"  # the purge (DESIGN.md): only for instruments with purge.enabled

# --- DAG ids of the DAGs that exist once (S3 backups only)
SWEEPER_DAG_ID = "backup_sweeper"
UPLOAD_RETRY_DAG_ID = "s3_upload_retry"
VERIFIER_DAG_ID = "backup_verifier"
# --- DAG ids of the housekeeping DAGs (on the maintenance queue)
ALERTS_DAG_ID = "backup_alerts"
DIGEST_DAG_ID = "backup_digest"
REDRIVE_DAG_ID = "acquisition_redrive"  # starts acquisition handlers again (every backup type)


def watcher_dag_id(instrument_id: str) -> str:
    """``instrument_watcher.<instrument_id>``: registers the instrument's new raw files."""
    return f"{WATCHER_DAG_PREFIX}.{instrument_id}"


def handler_dag_id(instrument_id: str) -> str:
    """``acquisition_handler.<instrument_id>``: monitor, checksum, local copy, upload of one raw file."""
    return f"{HANDLER_DAG_PREFIX}.{instrument_id}"


def file_mover_dag_id(instrument_id: str) -> str:
    """``file_mover.<instrument_id>``: moves one backed-up raw file aside on the instrument share."""
    return f"{FILE_MOVER_DAG_PREFIX}.{instrument_id}"


def file_remover_dag_id(instrument_id: str) -> str:
    """``file_remover.<instrument_id>``: deletes moved acquisitions from the share after re-checking their backup."""
    return f"{FILE_REMOVER_DAG_PREFIX}.{instrument_id}"


# --- task ids
# instrument_watcher.<id>
REGISTER_NEW_RAW_FILES_TASK = "register_new_raw_files"
START_ACQUISITION_HANDLER_TASK = "start_acquisition_handler"
# acquisition_handler.<id> (contract: DESIGN.md)
MONITOR_ACQUISITION_TASK = "monitor_acquisition"
COMPUTE_CHECKSUM_TASK = "compute_checksum"
COPY_RAW_FILE_TASK = "copy_raw_file"
UPLOAD_TO_S3_TASK = "upload_to_s3"  # also the one task of s3_upload_retry
START_FILE_MOVER_TASK = "start_file_mover"
# file_mover.<id>
WAIT_BEFORE_MOVING_TASK = "wait_before_moving"
MOVE_RAW_FILE_TASK = "move_raw_file"
# file_remover.<id>
PURGE_BACKED_UP_SETS_TASK = "purge_backed_up_sets"
# backup_sweeper
FIND_BACKUPS_TO_RETRY_TASK = "find_backups_to_retry"
TRIGGER_UPLOAD_RETRY_TASK = "trigger_upload_retry"
# backup_verifier
VERIFY_BACKUPS_TASK = "verify_backups"
# acquisition_redrive
FIND_ACQUISITIONS_TO_REDRIVE_TASK = "find_acquisitions_to_redrive"
REDRIVE_HANDLER_TASK = "redrive_acquisition_handler"
# backup_alerts, backup_digest
CHECK_ALERTS_TASK = "check_alerts"
SEND_DIGEST_TASK = "send_digest"

# --- Celery queues (each environment prefixes them: Settings.queue) and Airflow pools
S3_UPLOADER_QUEUE = "s3_uploader"
FILE_MOVER_QUEUE = "file_mover"
# Housekeeping (sweeps, re-drives, alerts, verification): never behind uploads on the s3_uploader queue.
MAINTENANCE_QUEUE = "rawvault_maintenance"
S3_UPLOAD_POOL = "s3_upload_pool"

# --- DAG run conf keys (also the DAGs' params)
RAW_FILE_ID_KEY = "raw_file_id"  # every per-raw-file DAG: acquisition_handler, file_mover, s3_upload_retry
ATTEMPTS_KEY = "attempts"  # s3_upload_retry: the raw file's upload attempts when backup_sweeper saw it

# --- templates a DAG file hands to a TriggerDagRunOperator (rendered by Airflow per run)
RUN_ID_MACRO = "run_id_for"  # the name run_id_for is registered under as a user-defined macro
RAW_FILE_ID_TEMPLATE = f"{{{{ params.{RAW_FILE_ID_KEY} }}}}"
RUN_ID_TEMPLATE = f"{{{{ {RUN_ID_MACRO}(params.{RAW_FILE_ID_KEY}) }}}}"

# The longest wait between two tries of one upload: the cap of Airflow's exponential retry delay of
# upload_to_s3 and of backup_sweeper's backoff, one value so the sweeper never races Airflow's own retry
# (and the lifecycle settings check counts with it: defined in shared, which cannot import rawvault).
MAX_UPLOAD_RETRY_DELAY = timedelta(hours=UPLOAD_BACKOFF_CAP_HOURS)

# The longest wait before acquisition_redrive starts a failed acquisition handler again (its backoff's cap).
MAX_REDRIVE_DELAY = timedelta(hours=6)

# The handler tasks whose failure is recorded on the RawFile (status error) and may be re-driven; upload_to_s3
# records its own outcome through the upload claim (backup_status upload_failed) and backup_sweeper retries it.
HANDLER_PIPELINE_TASKS = (MONITOR_ACQUISITION_TASK, COMPUTE_CHECKSUM_TASK, COPY_RAW_FILE_TASK, START_FILE_MOVER_TASK)
REDRIVE_SUFFIX = "__redrive"
_REDRIVE_RE = re.compile(rf"{REDRIVE_SUFFIX}(\d+)$")

# Airflow accepts run ids of [A-Za-z0-9_.~:+-] (its default [scheduler] allowed_run_id_pattern), without "..",
# at most 250 characters (its ID_LEN).
_RUN_ID_UNSAFE_RE = re.compile(r"[^A-Za-z0-9_.~:+-]")
_RUN_ID_MAX_ID_CHARS = 180


def run_id_for(raw_file_id: str) -> str:
    """The one DAG run id a raw file gets in each triggered DAG (so it is never triggered twice).

    Airflow allows only ``[A-Za-z0-9_.~:+-]`` in run ids and no ``..``; other
    characters become ``_``, ``..`` becomes ``._``, and a hash of the full id
    keeps distinct ids distinct.
    """
    digest = hashlib.sha1(raw_file_id.encode(), usedforsecurity=False).hexdigest()[:10]
    readable = _RUN_ID_UNSAFE_RE.sub("_", raw_file_id)[:_RUN_ID_MAX_ID_CHARS].replace("..", "._")
    return f"rawvault__{readable}__{digest}"


def retry_run_id(raw_file_id: str, attempts: int, retry_round: int = 0) -> str:
    """The ``s3_upload_retry`` run id of attempt ``attempts + 1`` of a raw file (``retry_round`` > 0: re-triggered)."""
    return f"{run_id_for(raw_file_id)}__attempt{attempts + 1}" + (f"__{retry_round}" if retry_round else "")


def handler_run_id(raw_file_id: str, redrives: int = 0) -> str:
    """The ``acquisition_handler`` run id of a raw file's attempt: :func:`run_id_for` first, then ``__redrive<N>``.

    Each re-drive by ``acquisition_redrive`` is a new deterministic run id, so
    a re-drive is never triggered twice and never collides with the first run.
    """
    return run_id_for(raw_file_id) + (f"{REDRIVE_SUFFIX}{redrives}" if redrives > 0 else "")


def redrive_of_run_id(run_id: str | None) -> int:
    """Which re-drive a handler run id belongs to (0: the first run, or a run triggered by hand)."""
    match = _REDRIVE_RE.search(run_id or "")
    return int(match.group(1)) if match else 0
