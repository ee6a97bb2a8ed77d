"""upload_to_s3 in real DAG runs: moto S3 server over HTTP, the real MongoDB wire server, Airflow's dag.test."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import pytest

from shared.db.interface import create_project
from shared.db.models import RawFile
from shared.settings import get_settings
from tests.airflow_harness import init_airflow_db, load_dags, run_dag, run_triggered
from tests.data_factory import make_bruker, make_thermo
from tests.pipeline_env import PipelineEnv, activate, s3, s3_backup, s3_server, write_pipeline_env

__all__ = ["s3", "s3_server"]  # the fixtures
pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]


def _env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, auto_create: bool, **overrides: Any) -> PipelineEnv:
    init_airflow_db()
    env = write_pipeline_env(tmp_path, backup=s3_backup("rv-test", auto_create_buckets=auto_create), **overrides)
    activate(env, monkeypatch)
    return env


def _run_pipeline(env: PipelineEnv, instrument_ids: list[str]) -> tuple[dict[str, Any], list[dict], list[dict]]:
    dags = load_dags()
    for instrument_id in instrument_ids:
        assert run_dag(dags[f"instrument_watcher.{instrument_id}"])["__dagrun__"] == "success"
    handlers = run_triggered(dags, "acquisition_handler.")
    movers = run_triggered(dags, "file_mover.")
    return dags, handlers, movers


def test_thermo_and_bruker_uploaded_verified_and_recorded(
    tmp_path: Path, mongo_uri: str, s3: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    env = _env(tmp_path, monkeypatch, auto_create=True)
    create_project("PRJ1")
    make_thermo(env.instrument_path("thermo1"))  # project PRJ1 (token in the name)
    make_bruker(env.instrument_path("tims1"))  # fallback project

    _dags, handlers, movers = _run_pipeline(env, ["thermo1", "tims1"])

    assert len(handlers) == 2
    for run in handlers:
        assert run["state"] == "success", run
        assert run["tasks"]["upload_to_s3"] == "success"
        assert run["tasks"]["start_file_mover"] == "success"
    # The Airflow metadata database is shared by the session: a run another test triggered and left queued
    # is run here too (it failed: its raw file is in that test's MongoDB database), so only ours count.
    ours = {raw_file.id for raw_file in RawFile.objects}
    movers = [run for run in movers if run["conf"]["raw_file_id"] in ours]
    assert len(movers) == 2 and all(run["state"] == "success" for run in movers), movers

    for raw_file in RawFile.objects:
        assert raw_file.backup_status == "upload_done", raw_file.backup_status_details
        assert raw_file.status == "moved"
        bucket = "rv-test-prj1" if raw_file.instrument_id == "thermo1" else "rv-test-fallback"
        key_prefix = f"{raw_file.backup_base_path}/"
        assert raw_file.s3_backup_key == f"s3://{bucket}/{key_prefix}"
        for relative_path, (size, md5, etag) in raw_file.file_info.items():
            head = s3.head_object(Bucket=bucket, Key=f"{key_prefix}{relative_path}")
            assert head["ETag"].strip('"') == etag
            assert head["ContentLength"] == size
            body = s3.get_object(Bucket=bucket, Key=f"{key_prefix}{relative_path}")["Body"].read()
            assert hashlib.md5(body, usedforsecurity=False).hexdigest() == md5
        if len(raw_file.file_info) == 1:
            (only_etag,) = [entry[2] for entry in raw_file.file_info.values()]
            assert raw_file.s3_etag == only_etag
        else:
            manifest_key = f"{key_prefix}{raw_file.id}.rawvault-manifest.json"
            assert raw_file.s3_etag == s3.head_object(Bucket=bucket, Key=manifest_key)["ETag"].strip('"')


def test_failed_upload_does_not_block_the_file_mover(
    tmp_path: Path, mongo_uri: str, s3: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    env = _env(tmp_path, monkeypatch, auto_create=False)  # the bucket does not exist
    make_thermo(env.instrument_path("thermo1"), name="nobucket.raw", size=1024 * 1024)

    _dags, handlers, movers = _run_pipeline(env, ["thermo1"])

    (handler,) = handlers
    assert handler["tasks"]["upload_to_s3"] == "failed"
    assert handler["tasks"]["copy_raw_file"] == "success"
    assert handler["tasks"]["start_file_mover"] == "success"
    assert [run["state"] for run in movers] == ["success"]
    raw_file = RawFile.objects.get(id="nobucket.raw")
    assert raw_file.backup_status == "upload_failed"
    assert "rv-test-fallback" in raw_file.backup_status_details
    assert "does not exist" in raw_file.backup_status_details
    assert "auto_create_buckets" in raw_file.backup_status_details
    assert raw_file.s3_backup_key is None and raw_file.s3_etag is None
    assert raw_file.status == "moved"  # the local backup is verified, so the share was tidied


def _handler_shape(dag: Any) -> dict[str, tuple[list[str], list[str]]]:
    return {task.task_id: (sorted(task.upstream_task_ids), sorted(task.downstream_task_ids)) for task in dag.tasks}


def test_upload_is_a_leaf_on_its_queue_and_local_backup_leaves_the_dag_as_before(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    s3_env = _env(tmp_path / "s3", monkeypatch, auto_create=True)
    s3_dag = load_dags()["acquisition_handler.thermo1"]
    upload = s3_dag.get_task("upload_to_s3")
    assert upload.queue == "test_s3_uploader"
    assert upload.pool == "s3_upload_pool"
    assert upload.retries == 0 and upload.execution_timeout.total_seconds() == 24 * 3600
    assert upload.downstream_task_ids == set()
    assert s3_dag.get_task("start_file_mover").upstream_task_ids == {"copy_raw_file"}
    assert s3_dag.get_task("compute_checksum").queue == "test_thermo1"
    assert s3_env.settings.s3_enabled

    local_env = write_pipeline_env(tmp_path / "local")  # backup_type: local
    activate(local_env, monkeypatch)
    local_dag = load_dags()["acquisition_handler.thermo1"]
    s3_shape = _handler_shape(s3_dag)
    del s3_shape["upload_to_s3"]
    s3_shape["copy_raw_file"] = (s3_shape["copy_raw_file"][0], ["start_file_mover"])
    assert _handler_shape(local_dag) == s3_shape
    get_settings.cache_clear()
