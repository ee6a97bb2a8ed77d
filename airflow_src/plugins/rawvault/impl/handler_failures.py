"""``on_failure_callback`` of the acquisition handler's tasks: record the failure on the ``RawFile``.

Where Airflow 3.3 runs it (read in ``airflow/sdk/execution_time/task_runner.py``,
``airflow/jobs/scheduler_job_runner.py`` and ``airflow/dag_processing/processor.py``):

- **In the task's own process** (the Task SDK's ``finalize``) after the last
  try: an ordinary exception, ``AirflowFailException`` (``fail_fast``),
  ``AirflowSensorTimeout`` (``monitor_acquisition`` after
  ``acquisition.timeout_hours``) and ``AirflowTaskTimeout``
  (``execution_timeout``). ``context["exception"]`` holds the error.
- **In the dag-processor** for a task whose worker died or that stopped
  heartbeating (the scheduler's task heartbeat timeout), or that its executor
  reported finished while it was still queued or running ("killed
  externally"): the scheduler sends a ``TaskCallbackRequest``; the context
  has the DAG run (its conf names the raw file) but no exception.
- **Nowhere** when only the task process is SIGKILLed while its supervisor
  lives (the supervisor reports the task failed, no callback), and of course
  when MongoDB is down as it runs: the callback logs and gives up, and
  ``acquisition_redrive`` finds the raw file still in an open status with
  its handler run ended, and records it then.

Retries are not failures: ``on_retry_callback`` is not set, so only the last
try of a task records anything. ``upload_to_s3`` is not covered here: it
records ``upload_failed`` through the upload claim itself.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from airflow.sdk.exceptions import AirflowFailException, AirflowSensorTimeout, AirflowTaskTerminated, AirflowTaskTimeout

from rawvault.failures import describe, is_transient, record_failure
from rawvault.impl.context import raw_file_id_from
from rawvault.keys import HANDLER_PIPELINE_TASKS, MONITOR_ACQUISITION_TASK, redrive_of_run_id, run_id_for
from shared.settings import get_settings

log = logging.getLogger(__name__)

# Airflow's own exceptions for the one classification (rawvault.failures.is_transient): fail_fast raises
# AirflowFailException for errors a retry cannot fix; timeouts and a terminated task may go away.
AIRFLOW_PERMANENT: tuple[type[BaseException], ...] = (AirflowFailException,)
AIRFLOW_TRANSIENT: tuple[type[BaseException], ...] = (AirflowTaskTimeout, AirflowSensorTimeout, AirflowTaskTerminated)


def classify(error: BaseException | None) -> bool:
    """Whether a handler task's failure is transient (re-driven) or permanent, Airflow's exceptions included."""
    return is_transient(error, permanent=AIRFLOW_PERMANENT, transient=AIRFLOW_TRANSIENT)


def failure_reason(task_id: str, error: BaseException | None) -> str:
    """The reason recorded for a failed handler task (a sensor timeout says which setting ran out)."""
    if task_id == MONITOR_ACQUISITION_TASK and isinstance(error, AirflowSensorTimeout):
        hours = get_settings().acquisition.timeout_hours
        return f"the acquisition did not finish within acquisition.timeout_hours ({hours:g} h): {describe(error)}"
    return describe(error)


def _redrive_of(context: Mapping[str, Any], raw_file_id: str) -> int | None:
    """The re-drive the failed run belongs to; None for a run triggered by hand (it records whatever the count)."""
    run_id = context.get("run_id") or getattr(context.get("dag_run"), "run_id", None) or ""
    return redrive_of_run_id(run_id) if run_id.startswith(run_id_for(raw_file_id)) else None


def record_handler_failure(context: Mapping[str, Any]) -> None:
    """Record a handler task's final failure on its raw file; never raises (a callback must not)."""
    task = context.get("task")
    task_id = getattr(context.get("ti"), "task_id", None) or getattr(task, "task_id", "")
    if task_id not in HANDLER_PIPELINE_TASKS:
        return
    try:
        raw_file_id = raw_file_id_from(context)
        error = context.get("exception")
        if not isinstance(error, BaseException):
            error = None  # the dag-processor's callback of a killed task has no exception
        record_failure(
            raw_file_id,
            step=task_id,
            reason=failure_reason(task_id, error),
            transient=classify(error),
            redrives=_redrive_of(context, raw_file_id),
        )
    except Exception:
        # MongoDB down, or a run without a raw file: acquisition_redrive finds the raw file later.
        log.exception("could not record the failure of %s on its raw file", task_id)
