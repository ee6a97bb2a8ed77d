"""Run real Airflow DAG runs in the test process (``dag.test()``) and read their outcome."""

from __future__ import annotations

from typing import Any

_db_ready = False


def init_airflow_db() -> None:
    """Create the metadata DB once per test session (like ``airflow db migrate``)."""
    global _db_ready
    if not _db_ready:
        from airflow.utils import db

        db.initdb()
        _db_ready = True


def load_dags() -> dict[str, Any]:
    """Parse the DAG folder now (with the current settings) and return its DAGs by id."""
    import os

    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(os.environ["AIRFLOW__CORE__DAGS_FOLDER"])
    assert not bag.import_errors, bag.import_errors
    return bag.dags


def ti_states(dag_id: str, run_id: str) -> dict[str, str | None]:
    """Task id -> state of one DAG run (mapped tasks: the state of their last map index)."""
    from airflow.models.taskinstance import TaskInstance
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as session:
        rows = session.scalars(select(TaskInstance).where(TaskInstance.dag_id == dag_id, TaskInstance.run_id == run_id))
        return {ti.task_id: getattr(ti.state, "value", ti.state) for ti in rows}


def run_dag(dag: Any, conf: dict[str, Any] | None = None, mark_success: str | None = None) -> dict[str, str | None]:
    """Run one DAG run in-process; task states plus ``__dagrun__`` (never raises on task failure).

    ``mark_success``: a regex of task ids marked successful instead of run (to re-run only the later
    tasks, as clearing one task in the UI does).
    """
    run = dag.test(run_conf=conf or {}, mark_success_pattern=mark_success)
    states = ti_states(dag.dag_id, run.run_id)
    states["__dagrun__"] = getattr(run.state, "value", run.state)
    return states


def run_triggered(dags: dict[str, Any], dag_id_prefix: str = "") -> list[dict[str, Any]]:
    """Execute the DAG runs that TriggerDagRunOperator queued (``dag.test`` only creates them)."""
    from airflow.models.dagrun import DagRun
    from airflow.utils.session import create_session
    from airflow.utils.state import DagRunState
    from sqlalchemy import delete, select

    with create_session() as session:
        queued_runs = [
            run
            for run in session.scalars(select(DagRun).where(DagRun.state == DagRunState.QUEUED))
            if run.dag_id.startswith(dag_id_prefix)
        ]
        queued = [(run.dag_id, run.logical_date, dict(run.conf or {})) for run in queued_runs]
        # dag.test() would replace each queued run (same logical date) with session.delete(), and SQLAlchemy
        # then lazy-loads DagRun.serialized_dag, which Airflow joins on dag_id alone: once a DAG has several
        # serialized versions (a test parsed it again with other settings), that finds several rows and
        # SQLAlchemy warns "Multiple rows returned with uselist=False". One DELETE statement (the database
        # cascades to the task instances) takes the queued runs out without that load.
        session.execute(delete(DagRun).where(DagRun.id.in_([run.id for run in queued_runs])))
    results = []
    for dag_id, logical_date, conf in queued:
        run = dags[dag_id].test(logical_date=logical_date, run_after=logical_date, run_conf=conf)
        results.append(
            {
                "dag_id": dag_id,
                "conf": conf,
                "state": getattr(run.state, "value", run.state),
                "tasks": ti_states(dag_id, run.run_id),
            }
        )
    return results
