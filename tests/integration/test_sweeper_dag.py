"""backup_sweeper and s3_upload_retry in real DAG runs (dag.test): the sweep marks and triggers, the retries upload."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from devtools.local_stack import aws_connection_uri
from devtools.servers import S3Server, local_s3_client
from rawvault.impl.sweeper_tasks import retry_upload_to_s3
from rawvault.keys import ATTEMPTS_KEY as ATTEMPTS
from rawvault.keys import retry_run_id, run_id_for
from rawvault.sweeper import UploadRetry
from shared.db.interface import create_raw_file, get_raw_file, update_raw_file, utc_now
from shared.settings import get_settings
from tests.airflow_harness import init_airflow_db, load_dags, run_dag, run_triggered
from tests.data_factory import MIB, write_bytes
from tests.pipeline_env import activate, write_pipeline_env

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

CREATED = datetime(2026, 11, 22, 10, 0, tzinfo=UTC)
BASE = "thermo1/2026_11"


@pytest.fixture(scope="module")
def s3_server() -> Iterator[S3Server]:
    with S3Server() as server:
        yield server


def _backup(**s3: Any) -> dict[str, Any]:
    return {
        "backup_type": "s3",
        "s3": {
            "region": "us-east-1",
            "bucket_prefix": "rv-sweep",
            "part_size_mb": 5,
            "auto_create_buckets": True,
            "upload_retry_delay_minutes": 10,
            "max_upload_attempts": 3,
            "stale_upload_minutes": 5,
            **s3,
        },
    }


def _raw_file(backup_root: Path, name: str, size: int, **fields: Any) -> None:
    """A raw file with its local backup copy and recorded checksums, in the given upload state."""
    from tests.s3_fixtures import file_info_of

    write_bytes(backup_root / BASE / name, size, seed=size)
    create_raw_file(
        name,
        instrument_id="thermo1",
        created_at=CREATED,
        file_info=file_info_of(backup_root / BASE, [name]),
        etag_part_size=5 * MIB,
        **fields,
    )


def _retry_runs(state: str | None = "queued") -> dict[str, dict[str, Any]]:
    """s3_upload_retry runs (in ``state``) by raw file id: run id and conf."""
    from airflow.models.dagrun import DagRun
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as session:
        query = select(DagRun).where(DagRun.dag_id == "s3_upload_retry", DagRun.run_id.startswith("rawvault__"))
        runs = [run for run in session.scalars(query) if state is None or str(run.state) == state]
        return {run.conf["raw_file_id"]: {"run_id": run.run_id, **run.conf} for run in runs}


def _map_states(dag_id: str, run_id: str, task_id: str) -> list[str | None]:
    """The state of every map index of a mapped task in one DAG run."""
    from airflow.models.taskinstance import TaskInstance
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as session:
        rows = session.scalars(
            select(TaskInstance).where(
                TaskInstance.dag_id == dag_id, TaskInstance.run_id == run_id, TaskInstance.task_id == task_id
            )
        )
        return [getattr(ti.state, "value", ti.state) for ti in rows]


def test_sweeper_triggers_one_retry_run_per_raw_file_and_never_uploads_itself(
    tmp_path: Path, mongo_uri: str, s3_server: S3Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    init_airflow_db()
    env = write_pipeline_env(tmp_path, backup=_backup())
    activate(env, monkeypatch)
    monkeypatch.setenv("AIRFLOW_CONN_AWS_DEFAULT", aws_connection_uri(s3_server.endpoint_url))
    tag = uuid.uuid4().hex[:6]  # run ids stay in the session's Airflow DB: names of this test's own

    def name(stem: str) -> str:
        return f"{stem}-{tag}.raw"

    now = utc_now()
    long_ago = now - timedelta(hours=1)
    _raw_file(env.backup_root, name("failed"), 7 * MIB, backup_status="upload_failed", s3_upload_attempts=1,
              s3_upload_attempted_at=long_ago, s3_upload_failed_at=long_ago,
              backup_status_details="upload to S3 failed: S3 was down")  # fmt: skip
    _raw_file(env.backup_root, name("stale"), 300 * 1024, backup_status="upload_in_progress", s3_upload_attempts=1,
              s3_upload_attempted_at=long_ago, upload_claim_owner="worker-2:4711:dead",
              upload_claim_expires_at=long_ago + timedelta(minutes=5))  # fmt: skip
    # Written before s3_upload_failed_at existed: the backoff counts from the attempt's start.
    _raw_file(env.backup_root, name("legacy"), 7 * MIB, backup_status="upload_failed", s3_upload_attempts=1,
              s3_upload_attempted_at=long_ago)  # fmt: skip
    _raw_file(env.backup_root, name("capped"), 1024, backup_status="upload_failed", s3_upload_attempts=3,
              s3_upload_attempted_at=long_ago, backup_status_details="upload to S3 failed: denied")  # fmt: skip
    # Ran for 3 h and failed just now: Airflow's own retry comes first, the sweeper waits its backoff.
    _raw_file(env.backup_root, name("just-failed"), 1024, backup_status="upload_failed", s3_upload_attempts=1,
              s3_upload_attempted_at=now - timedelta(hours=3), s3_upload_failed_at=now)  # fmt: skip
    # Verified local copy for 7 h, upload_to_s3 never ran (pending_upload_after_hours: 6 by default).
    _raw_file(env.backup_root, name("forgotten"), 2048, backup_status="copying_done",
              db_updated_at=now - timedelta(hours=7))  # fmt: skip
    _raw_file(env.backup_root, name("copied"), 1024, backup_status="copying_done")  # its upload_to_s3 may come

    dags = load_dags()
    sweeper = dags["backup_sweeper"]
    assert sweeper.schedule == "*/15 * * * *" and sweeper.max_active_runs == 1  # backup.s3.sweep_schedule default
    assert set(sweeper.task_ids) == {"find_backups_to_retry", "trigger_upload_retry"}  # no upload in the sweep
    assert sweeper.get_task("trigger_upload_retry").partial_kwargs["trigger_dag_id"] == "s3_upload_retry"
    upload = dags["s3_upload_retry"].get_task("upload_to_s3")
    assert (upload.queue, upload.pool, upload.retries) == ("test_s3_uploader", "s3_upload_pool", 0)

    states = run_dag(sweeper)
    assert states["__dagrun__"] == "success", states
    assert states["find_backups_to_retry"] == "success"
    # The sweep itself only marks and triggers: nothing is uploaded yet.
    assert get_raw_file(name("failed")).backup_status == "upload_failed"
    stale = get_raw_file(name("stale"))
    assert stale.backup_status == "upload_failed" and stale.upload_claim_owner is None
    assert stale.s3_upload_failed_at == long_ago + timedelta(minutes=5)  # when its lease ran out
    queued = _retry_runs()
    assert {raw_file_id: run[ATTEMPTS] for raw_file_id, run in queued.items()} == {
        name("failed"): 1,
        name("stale"): 1,
        name("legacy"): 1,
        name("forgotten"): 0,
    }
    assert queued[name("failed")]["run_id"].endswith("__attempt2")
    assert queued[name("forgotten")]["run_id"].endswith("__attempt1")

    # A second sweep while those runs wait (for a pool slot, say) triggers none of them again.
    again = sweeper.test(run_conf={})
    assert getattr(again.state, "value", again.state) == "success"
    assert set(_map_states("backup_sweeper", again.run_id, "trigger_upload_retry")) == {"skipped"}
    assert len(_retry_runs(None)) == 4

    # Meanwhile upload_to_s3's own Airflow retry attempted failed.raw again: its scheduled retry stands down.
    update_raw_file(name("failed"), s3_upload_attempts=2, s3_upload_failed_at=utc_now())
    results = {result["conf"]["raw_file_id"]: result for result in run_triggered(dags, "s3_upload_retry")}
    assert set(results) == set(queued)
    assert results[name("failed")]["tasks"]["upload_to_s3"] == "skipped"
    superseded = get_raw_file(name("failed"))
    assert superseded.backup_status == "upload_failed" and superseded.s3_upload_attempts == 2

    s3 = local_s3_client(s3_server.endpoint_url)
    for stem, attempts in (("stale", 2), ("legacy", 2), ("forgotten", 1)):
        assert results[name(stem)]["state"] == "success", results[name(stem)]
        raw_file = get_raw_file(name(stem))
        assert raw_file.backup_status == "upload_done", raw_file.backup_status_details
        assert raw_file.s3_upload_attempts == attempts and raw_file.upload_claim_owner is None
        head = s3.head_object(Bucket="rv-sweep-fallback", Key=f"{BASE}/{name(stem)}")
        assert head["ETag"].strip('"') == raw_file.file_info[name(stem)][2] == raw_file.s3_etag
    # Each verified retry updated its instrument's asset through the retry DAG's alias (README "Airflow assets").
    from airflow.models.asset import AssetEvent, AssetModel
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as session:
        retried = session.execute(
            select(AssetModel.uri, AssetEvent.extra)
            .join(AssetModel, AssetModel.id == AssetEvent.asset_id)
            .where(AssetEvent.source_dag_id == "s3_upload_retry")
        ).all()
    by_id = {extra["raw_file_id"]: (uri, extra) for uri, extra in retried}
    for stem in ("stale", "legacy", "forgotten"):
        uri, extra = by_id[name(stem)]
        raw_file = get_raw_file(name(stem))
        assert uri == f"x-rawvault://{raw_file.instrument_id}" and extra["etag"] == raw_file.s3_etag
    capped = get_raw_file(name("capped"))
    assert capped.backup_status == "upload_failed" and capped.s3_upload_attempts == 3
    assert capped.backup_status_details.startswith("gave up after 3 attempts; clear upload_to_s3 to retry by hand")
    just_failed = get_raw_file(name("just-failed"))
    assert just_failed.backup_status == "upload_failed" and just_failed.s3_upload_attempts == 1  # in its backoff
    assert get_raw_file(name("copied")).backup_status == "copying_done"
    get_settings.cache_clear()


def test_retry_run_ids_name_the_raw_file_and_the_attempt() -> None:
    assert retry_run_id("20261122 a.raw", 0) == f"{run_id_for('20261122 a.raw')}__attempt1"
    assert retry_run_id("x.raw", 2, 1).endswith("__attempt3__1")
    due = datetime(2026, 11, 22, 10, 0, tzinfo=UTC)
    retry = UploadRetry("x.raw", 2, due)
    # Triggered again only after it has been due, untouched, for a whole MAX_BACKOFF (a lost run).
    assert [retry.retry_round(due + timedelta(hours=h)) for h in (0, 5.9, 6, 13)] == [0, 0, 1, 2]


def test_a_retry_run_with_a_bad_attempt_count_names_the_key() -> None:
    from airflow.sdk.exceptions import AirflowFailException

    run = SimpleNamespace(conf={"raw_file_id": "x.raw", ATTEMPTS: "two"})
    with pytest.raises(AirflowFailException, match=r"the conf key 'attempts' of this run must be .* not 'two'"):
        retry_upload_to_s3(dag_run=run, params={})


def test_no_sweeper_without_s3(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    activate(write_pipeline_env(tmp_path), monkeypatch)  # backup_type: local
    dags = load_dags()
    assert "backup_sweeper" not in dags and "s3_upload_retry" not in dags
    get_settings.cache_clear()
