"""Task callable of ``acquisition_redrive``: decide and claim the re-drives, hand their triggers to Airflow."""

from __future__ import annotations

from typing import Any

from rawvault.keys import RAW_FILE_ID_KEY, START_ACQUISITION_HANDLER_TASK, watcher_dag_id
from shared.settings import get_settings

# A watcher's start_acquisition_handler task that has still to run: not scheduled yet ("null": also the
# unexpanded task of a running watcher), waiting for a worker slot, running, or about to be retried.
PENDING_TASK_STATES = ["null", "scheduled", "queued", "running", "up_for_retry", "restarting"]


def _run_state(ti: Any) -> Any:
    """The state of a DAG run from the Task SDK (the execution API); None when the run does not exist."""

    def state(dag_id: str, run_id: str) -> str | None:
        if ti.get_dr_count(dag_id=dag_id, run_ids=[run_id]) == 0:
            return None
        value = ti.get_dagrun_state(dag_id=dag_id, run_id=run_id)
        return str(getattr(value, "value", value))

    return state


def _triggers_pending(ti: Any) -> Any:
    """Whether an instrument's watcher has start_acquisition_handler triggers still to run (Task SDK count)."""

    def pending(instrument_id: str) -> bool:
        count = ti.get_ti_count(
            dag_id=watcher_dag_id(instrument_id),
            task_ids=[START_ACQUISITION_HANDLER_TASK],
            states=PENDING_TASK_STATES,
        )
        return bool(count)

    return pending


def find_acquisitions_to_redrive(**context: Any) -> list[dict[str, Any]]:
    """acquisition_redrive: one TriggerDagRunOperator kwargs per acquisition handler to start again now."""
    from rawvault.redrive import AirflowView, log_report, plan_redrives

    settings = get_settings()
    ti = context["ti"]
    report = plan_redrives(settings, AirflowView(_run_state(ti), _triggers_pending(ti)))
    log_report(report, settings)
    return [
        {"trigger_dag_id": r.dag_id, "trigger_run_id": r.run_id, "conf": {RAW_FILE_ID_KEY: r.raw_file_id}}
        for r in report.redrives
    ]
