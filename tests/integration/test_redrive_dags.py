"""Failed acquisition handlers recorded and re-driven, through real DAG runs (dag.test), MongoDB and S3 servers.

Each fault is made for real: the acquisition is deleted while it is monitored
(permanent), the instrument folder disappears (the share unmounted:
transient), the acquisition never finishes within ``acquisition.timeout_hours``
(the sensor times out: transient), and the watcher's trigger of a handler is
lost. The failure is recorded by the handler tasks' ``on_failure_callback``;
with the cause removed, ``acquisition_redrive`` starts the handler again and the
backup ends ``upload_done`` without anybody clicking. The permanent one is
never re-driven.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from devtools.local_stack import aws_connection_uri
from devtools.servers import S3Server, local_s3_client
from rawvault import keys
from rawvault.watcher import register_new_raw_files
from shared.db.interface import get_raw_file, update_raw_file, utc_now
from shared.db.models import RawFile
from shared.settings import get_settings
from tests.airflow_harness import init_airflow_db, load_dags, run_dag, run_triggered
from tests.data_factory import MIB, write_bytes
from tests.pipeline_env import PipelineEnv, activate, write_pipeline_env

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

INSTRUMENT = "thermo1"
HANDLER = keys.handler_dag_id(INSTRUMENT)


@pytest.fixture(scope="module")
def s3_server() -> Iterator[S3Server]:
    with S3Server() as server:
        yield server


@pytest.fixture
def env(tmp_path: Path, mongo_uri: str, s3_server: S3Server, monkeypatch: pytest.MonkeyPatch) -> Iterator[PipelineEnv]:
    init_airflow_db()
    environment = write_pipeline_env(
        tmp_path,
        backup={
            "backup_type": "s3",
            "s3": {
                "region": "us-east-1",
                "bucket_prefix": f"rv-{uuid.uuid4().hex[:8]}",
                "part_size_mb": 5,
                "auto_create_buckets": True,
                "upload_retries": 0,
            },
        },
        # 0.2 s pokes; the sensor gives up after 4 s; re-drive at once (no backoff), at most twice.
        acquisition={"timeout_hours": 4 / 3600, "redrive_delay_minutes": 0, "max_redrives": 2},
    )
    activate(environment, monkeypatch)
    monkeypatch.setenv("AIRFLOW_CONN_AWS_DEFAULT", aws_connection_uri(s3_server.endpoint_url))
    yield environment
    get_settings.cache_clear()


def _name(stem: str) -> str:
    return f"{stem}-{uuid.uuid4().hex[:6]}.raw"  # run ids stay in the session's Airflow DB: names of this test's own


def _handlers(dags: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Run every queued acquisition handler run; results by raw file id."""
    return {run["conf"]["raw_file_id"]: run for run in run_triggered(dags, "acquisition_handler.")}


def _redrive(dags: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """One acquisition_redrive run, then the handler runs it started and their file movers."""
    states = run_dag(dags[keys.REDRIVE_DAG_ID])
    assert states["__dagrun__"] == "success", states
    handled = _handlers(dags)
    run_triggered(dags, "file_mover.")  # no queued run left behind
    return handled


def _assert_recorded(raw_file_id: str, step: str, transient: bool, reason: str) -> None:
    raw_file = get_raw_file(raw_file_id)
    assert raw_file.status == "error", raw_file.to_mongo()
    assert raw_file.error_step == step and raw_file.error_transient is transient, raw_file.to_mongo()
    assert raw_file.status_details.startswith(f"{step}: ") and reason in raw_file.status_details, (
        raw_file.status_details
    )
    assert utc_now() - timedelta(minutes=5) < raw_file.error_at <= utc_now()


def _assert_backed_up(raw_file_id: str, s3: Any, bucket: str, redrives: int) -> None:
    raw_file = get_raw_file(raw_file_id)
    assert raw_file.backup_status == "upload_done", raw_file.to_mongo()
    assert raw_file.status in ("checksumming_done", "moved") and raw_file.redrive_count == redrives
    head = s3.head_object(Bucket=bucket, Key=f"{raw_file.backup_base_path}/{raw_file_id}")
    assert head["ETag"].strip('"') == raw_file.file_info[raw_file_id][2] == raw_file.s3_etag


def test_share_outage_sensor_timeout_and_vanished_acquisition_recorded_then_re_driven(
    env: PipelineEnv, s3_server: S3Server
) -> None:
    dags = load_dags()
    share = env.instrument_path(INSTRUMENT)
    s3 = local_s3_client(s3_server.endpoint_url)
    bucket = f"{env.settings.backup.s3.bucket_prefix}-fallback"
    outage, timeout, vanished = _name("outage"), _name("timeout"), _name("vanished")
    write_bytes(share / outage, 6 * MIB, seed=1)
    (share / timeout).touch()  # the instrument created the file but never writes to it: size 0 is not finished
    assert run_dag(dags[keys.watcher_dag_id(INSTRUMENT)])["__dagrun__"] == "success"

    # The share unmounted (the instrument folder gone) while both are monitored.
    unmounted = share.with_name("thermo1-unmounted")
    share.rename(unmounted)
    first = _handlers(dags)
    unmounted.rename(share)
    assert {raw_file_id: run["tasks"]["monitor_acquisition"] for raw_file_id, run in first.items()} == {
        outage: "failed",
        timeout: "failed",
    }
    _assert_recorded(outage, "monitor_acquisition", True, "is the instrument share mounted?")
    _assert_recorded(timeout, "monitor_acquisition", True, "FileNotFoundError")

    # An acquisition deleted while it is monitored: permanent.
    write_bytes(share / vanished, 1 * MIB, seed=3)
    assert run_dag(dags[keys.watcher_dag_id(INSTRUMENT)])["__dagrun__"] == "success"
    (share / vanished).unlink()
    assert _handlers(dags)[vanished]["tasks"]["monitor_acquisition"] == "failed"
    _assert_recorded(vanished, "monitor_acquisition", False, "AcquisitionGoneError: raw file")

    # Share back: the outage is re-driven and backed up; the empty acquisition now times out (recorded again).
    second = _redrive(dags)
    assert set(second) == {outage, timeout}, second  # never the vanished one (permanent)
    assert second[outage]["state"] == "success", second[outage]
    _assert_backed_up(outage, s3, bucket, redrives=1)
    assert second[timeout]["tasks"]["monitor_acquisition"] == "failed"
    _assert_recorded(timeout, "monitor_acquisition", True, "did not finish within acquisition.timeout_hours")
    assert "AirflowSensorTimeout" in get_raw_file(timeout).status_details

    # The acquisition finishes (the cause removed): the next re-drive backs it up.
    write_bytes(share / timeout, 2 * MIB, seed=2)
    third = _redrive(dags)
    assert set(third) == {timeout} and third[timeout]["state"] == "success", third
    _assert_backed_up(timeout, s3, bucket, redrives=2)

    # The permanent failure stays as it was, visible, and is never re-driven.
    assert _redrive(dags) == {}
    gone = get_raw_file(vanished)
    assert (gone.status, gone.error_transient, gone.redrive_count) == ("error", False, 0)


def test_a_lost_handler_trigger_is_re_driven_and_backed_up(env: PipelineEnv, s3_server: S3Server) -> None:
    dags = load_dags()
    lost = _name("lost")
    write_bytes(env.instrument_path(INSTRUMENT) / lost, 3 * MIB, seed=4)
    # Registered, but its handler run was never triggered (a watcher killed between the two tasks).
    assert register_new_raw_files(INSTRUMENT, env.settings) == [lost]
    assert _redrive(dags) == {}  # just registered: the watcher may still trigger it
    an_hour_ago = utc_now() - timedelta(hours=1)
    RawFile.objects(id=lost).update_one(set__db_updated_at=an_hour_ago)  # an hour without its handler run
    runs = _redrive(dags)
    assert runs[lost]["state"] == "success", runs
    _assert_backed_up(
        lost, local_s3_client(s3_server.endpoint_url), f"{env.settings.backup.s3.bucket_prefix}-fallback", 1
    )


def _heartbeat_timeout_callback(dags: dict[str, Any], run_id: str, task_id: str) -> None:
    """What the scheduler sends for a task whose worker died, run by the dag-processor's own code.

    The request is built as ``SchedulerJobRunner._purge_task_instances_without_heartbeats`` builds it;
    ``_execute_task_callbacks`` is what the dag-processor runs for it.
    """
    import structlog
    from airflow.api_fastapi.execution_api.datamodels.taskinstance import DagRun as DRDataModel
    from airflow.api_fastapi.execution_api.datamodels.taskinstance import TIRunContext
    from airflow.callbacks.callback_requests import TaskCallbackRequest
    from airflow.dag_processing.processor import _execute_task_callbacks
    from airflow.models.taskinstance import TaskInstance
    from airflow.utils.session import create_session
    from airflow.utils.state import TaskInstanceState
    from sqlalchemy import select

    with create_session() as session:
        query = select(TaskInstance).where(
            TaskInstance.dag_id == HANDLER, TaskInstance.run_id == run_id, TaskInstance.task_id == task_id
        )
        ti = session.scalars(query).one()
        request = TaskCallbackRequest(
            filepath=ti.dag_model.relative_fileloc or "",
            bundle_name=ti.dag_version.bundle_name,
            bundle_version=None,
            ti=ti,
            msg="Task did not emit heartbeat within time limit",
            task_callback_type=TaskInstanceState.FAILED,
            context_from_server=TIRunContext(
                dag_run=DRDataModel.model_validate(ti.dag_run, from_attributes=True),
                max_tries=ti.max_tries,
                variables=[],
                connections=[],
                xcom_keys_to_clear=[],
            ),
        )
    _execute_task_callbacks(SimpleNamespace(dags=dags), request, structlog.get_logger())


def test_a_task_whose_worker_died_is_recorded_by_the_dag_processors_callback(
    env: PipelineEnv, s3_server: S3Server
) -> None:
    dags = load_dags()
    killed = _name("killed")
    write_bytes(env.instrument_path(INSTRUMENT) / killed, 2 * MIB, seed=5)
    assert run_dag(dags[keys.watcher_dag_id(INSTRUMENT)])["__dagrun__"] == "success"
    handled = _handlers(dags)[killed]
    assert handled["state"] == "success", handled
    run_id = _last_run_id(HANDLER)
    # What a worker SIGKILLed mid-checksum leaves behind: the raw file still checksumming (no callback ran there).
    update_raw_file(killed, status="checksumming")
    _heartbeat_timeout_callback(dags, run_id, keys.COMPUTE_CHECKSUM_TASK)
    _assert_recorded(killed, keys.COMPUTE_CHECKSUM_TASK, True, "its worker was killed or lost")
    runs = _redrive(dags)  # transient: re-driven; every step finds its work done and the file is moved
    assert runs[killed]["state"] == "success", runs
    assert get_raw_file(killed).status == "moved" and get_raw_file(killed).redrive_count == 1


def _last_run_id(dag_id: str) -> str:
    from airflow.models.dagrun import DagRun
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as session:
        query = select(DagRun.run_id).where(DagRun.dag_id == dag_id).order_by(DagRun.id.desc()).limit(1)
        return session.scalars(query).one()


def test_the_redrive_dag_runs_on_the_maintenance_queue_one_at_a_time(env: PipelineEnv) -> None:
    dags = load_dags()
    redrive = dags[keys.REDRIVE_DAG_ID]
    assert redrive.max_active_runs == 1 and redrive.schedule == "*/10 * * * *"
    assert {task.queue for task in redrive.tasks} == {"test_rawvault_maintenance"}
    for dag_id in (keys.SWEEPER_DAG_ID, keys.VERIFIER_DAG_ID):
        assert {task.queue for task in dags[dag_id].tasks} == {"test_rawvault_maintenance"}, dag_id
    retry = dags[keys.UPLOAD_RETRY_DAG_ID].get_task(keys.UPLOAD_TO_S3_TASK)
    assert (retry.queue, retry.pool) == ("test_s3_uploader", keys.S3_UPLOAD_POOL)  # it uploads
    handler = dags[HANDLER]
    for task_id in keys.HANDLER_PIPELINE_TASKS:
        assert handler.get_task(task_id).on_failure_callback, task_id
    assert not handler.get_task(keys.UPLOAD_TO_S3_TASK).on_failure_callback  # upload_failed comes from its claim
    for task_id in (keys.COMPUTE_CHECKSUM_TASK, keys.COPY_RAW_FILE_TASK):
        assert handler.get_task(task_id).execution_timeout == timedelta(hours=24), task_id
