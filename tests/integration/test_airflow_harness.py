"""The dag.test() harness itself: triggered runs are replaced cleanly, whatever the DAG's history."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest
from sqlalchemy.exc import SAWarning

from shared.settings import get_settings
from tests.airflow_harness import init_airflow_db, load_dags, run_dag, run_triggered
from tests.data_factory import KIB, make_thermo
from tests.pipeline_env import activate, write_pipeline_env

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]


def test_triggered_run_of_a_dag_with_several_serialized_versions_runs_without_sqlalchemy_warnings(
    tmp_path: Path, mongo_uri: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Issue 17 item 6: the suite printed "SAWarning: Multiple rows returned with uselist=False for
    # lazily-loaded attribute 'DagRun.serialized_dag'" once a DAG had two serialized versions (tests
    # parse the DAGs again with other settings) and the harness replaced a queued run of it.
    init_airflow_db()
    # Airflow writes a changed DAG at most every 30 s; the suite's test files are further apart than that.
    monkeypatch.setenv("AIRFLOW__CORE__MIN_SERIALIZED_DAG_UPDATE_INTERVAL", "0")
    env = write_pipeline_env(tmp_path)
    activate(env, monkeypatch)
    # A name of its own: the file mover's run id is derived from it, and other tests use the default.
    make_thermo(env.instrument_path("thermo1"), name="harness_versions.raw", size=64 * KIB)
    assert run_dag(load_dags()["instrument_watcher.thermo1"])["__dagrun__"] == "success"  # queues a handler run

    # Other queues change the handler's serialized form: Airflow stores a second version of it.
    activate(write_pipeline_env(tmp_path, airflow={"queue_prefix": "other_"}), monkeypatch)
    dags = load_dags()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        (handler,) = run_triggered(dags, "acquisition_handler.thermo1")

    assert [str(w.message) for w in caught if issubclass(w.category, SAWarning)] == []
    assert handler["state"] == "success", handler
    assert run_triggered(dags, "acquisition_handler.thermo1") == []  # the queued run was replaced, not kept
    assert _task_instances_without_run() == []  # and its task instances went with it
    # Leave no queued run behind for the next test's run_triggered (the handler queued a file mover run).
    assert [run["state"] for run in run_triggered(dags, "file_mover.thermo1")] == ["success"]
    get_settings.cache_clear()


def _task_instances_without_run() -> list[tuple[str, str]]:
    from airflow.models.dagrun import DagRun
    from airflow.models.taskinstance import TaskInstance
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as session:
        run_ids = set(session.scalars(select(DagRun.run_id)))
        return [(ti.dag_id, ti.run_id) for ti in session.scalars(select(TaskInstance)) if ti.run_id not in run_ids]
