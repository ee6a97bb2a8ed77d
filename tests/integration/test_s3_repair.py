"""A repair that really repairs (issue 11 item 1): real DAG runs, moto's S3 server over HTTP, the MongoDB wire server.

A Bruker set is backed up by the pipeline (watcher -> handler -> file mover), then
one of its objects is deleted from S3. Running ``upload_to_s3`` again (the handler's
task, as "clear upload_to_s3" does, or ``s3_upload_retry``) must check every object,
upload the missing one, rewrite the manifest so that it describes what is in S3, and
end ``upload_done`` saying what it repaired; ``verify`` then finds nothing and
``restore`` gives the files back.
"""

from __future__ import annotations

import filecmp
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from devtools.local_stack import aws_connection_uri
from devtools.servers import S3Server, local_s3_client
from rawvault.audit import verify_backups
from rawvault.restore import restore_raw_file
from shared.db.interface import get_raw_file
from shared.db.models import RawFile
from tests.airflow_harness import init_airflow_db, load_dags, run_dag, run_triggered, ti_states
from tests.data_factory import make_bruker
from tests.pipeline_env import PipelineEnv, activate, write_pipeline_env

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

# Everything of the handler but upload_to_s3 is marked success: the run does what "clear upload_to_s3" does.
ALL_BUT_UPLOAD = r"^(monitor_acquisition|compute_checksum|copy_raw_file|start_file_mover)$"
MANIFEST_SUFFIX = ".rawvault-manifest.json"


def s3_backup(**s3: Any) -> dict[str, Any]:
    return {
        "backup_type": "s3",
        "s3": {
            "region": "us-east-1",
            "bucket_prefix": "rv-repair",
            "part_size_mb": 5,
            "auto_create_buckets": True,
            "upload_retries": 0,
            "max_concurrency": 2,
            **s3,
        },
    }


@pytest.fixture(scope="module")
def s3_server() -> Iterator[S3Server]:
    with S3Server() as server:
        yield server


def clean(client: Any) -> None:
    """Delete every bucket of the server (a module-scoped server, a clean start per test)."""
    for bucket in client.list_buckets()["Buckets"]:
        versions = client.list_object_versions(Bucket=bucket["Name"])
        for version in versions.get("Versions", []) + versions.get("DeleteMarkers", []):
            client.delete_object(Bucket=bucket["Name"], Key=version["Key"], VersionId=version["VersionId"])
        client.delete_bucket(Bucket=bucket["Name"])


def pipeline_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, endpoint_url: str, **s3: Any) -> PipelineEnv:
    init_airflow_db()
    monkeypatch.setenv("AIRFLOW_CONN_AWS_DEFAULT", aws_connection_uri(endpoint_url))
    env = write_pipeline_env(tmp_path, backup=s3_backup(**s3))
    activate(env, monkeypatch)
    return env


def back_up_through_the_pipeline(env: PipelineEnv, name: str) -> tuple[dict[str, Any], RawFile]:
    """Acquire a Bruker set on the share and run watcher, handler and file mover: the set ends upload_done."""
    make_bruker(env.instrument_path("tims1"), name=name)
    dags = load_dags()
    assert run_dag(dags["instrument_watcher.tims1"])["__dagrun__"] == "success"
    (handler,) = run_triggered(dags, "acquisition_handler.")
    assert handler["state"] == "success", handler
    assert all(run["state"] == "success" for run in run_triggered(dags, "file_mover."))
    raw_file = get_raw_file(name)
    assert raw_file.backup_status == "upload_done", raw_file.backup_status_details
    return dags, raw_file


def rerun_upload(dag: Any, raw_file_id: str, mark_success_pattern: str | None = None) -> dict[str, Any]:
    """One real DAG run of ``dag`` for the raw file: its task states and the run state."""
    run = dag.test(run_conf={"raw_file_id": raw_file_id}, mark_success_pattern=mark_success_pattern)
    states = ti_states(dag.dag_id, run.run_id)
    states["__dagrun__"] = getattr(run.state, "value", run.state)
    return states


def location(raw_file: RawFile) -> tuple[str, str]:
    bucket, _, key_prefix = raw_file.s3_backup_key.removeprefix("s3://").partition("/")
    return bucket, key_prefix


def manifest_of(client: Any, raw_file: RawFile) -> tuple[dict[str, Any], str]:
    bucket, key_prefix = location(raw_file)
    response = client.get_object(Bucket=bucket, Key=f"{key_prefix}{raw_file.id}{MANIFEST_SUFFIX}")
    return json.loads(response["Body"].read()), response["ETag"].strip('"')


def assert_set_complete(client: Any, raw_file: RawFile) -> None:
    """Every recorded file is in S3 with its size and ETag; the manifest lists what S3 reports."""
    bucket, key_prefix = location(raw_file)
    manifest, manifest_etag = manifest_of(client, raw_file)
    for path, (size, _md5, etag) in raw_file.file_info.items():
        head = client.head_object(Bucket=bucket, Key=f"{key_prefix}{path}")
        assert (head["ContentLength"], head["ETag"].strip('"')) == (size, etag), path
        assert manifest["files"][path]["s3_etag"] == head["ETag"].strip('"'), path
    assert raw_file.s3_etag == manifest_etag  # a set's s3_etag is its manifest's ETag


def assert_restores(raw_file: RawFile, client: Any, env: PipelineEnv, target: Path) -> None:
    restore_raw_file(raw_file.id, target, client)
    source = env.settings.locations.backup / raw_file.backup_base_path
    for path in raw_file.file_info:
        assert filecmp.cmp(source / path, target / path, shallow=False), path


def test_a_deleted_object_of_a_bruker_set_is_repaired_by_a_rerun_of_upload_to_s3(
    tmp_path: Path, mongo_uri: str, s3_server: S3Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    client = local_s3_client(s3_server.endpoint_url)
    clean(client)
    env = pipeline_env(tmp_path, monkeypatch, s3_server.endpoint_url)
    dags, raw_file = back_up_through_the_pipeline(env, "20261122_tims1_repair.d")
    bucket, key_prefix = location(raw_file)
    lost = f"{raw_file.id}/analysis.tdf"
    client.delete_object(Bucket=bucket, Key=f"{key_prefix}{lost}")
    assert not verify_backups(client).ok  # the audit sees it ...

    states = rerun_upload(dags["acquisition_handler.tims1"], raw_file.id, ALL_BUT_UPLOAD)

    assert states["upload_to_s3"] == "success" and states["__dagrun__"] == "success", states
    repaired = get_raw_file(raw_file.id)
    assert repaired.backup_status == "upload_done", repaired.backup_status_details
    assert_set_complete(client, repaired)  # ... and the re-run put it back
    details = repaired.backup_status_details
    assert "repaired" in details and lost in details, details
    assert repaired.upload_claim_owner is None and repaired.s3_upload_attempts == 2  # it held the claim
    assert verify_backups(client).ok
    assert_restores(repaired, client, env, tmp_path / "restored")
