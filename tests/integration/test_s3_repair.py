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
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest

pytest.register_assert_rewrite("tests.s3_fixtures")  # it is imported here before pytest loads it as a plugin

from devtools.local_stack import aws_connection_uri  # noqa: E402
from devtools.servers import S3Server, local_s3_client  # noqa: E402
from rawvault.audit import verify_backups  # noqa: E402
from rawvault.restore import restore_raw_file  # noqa: E402
from rawvault.s3 import listed_check  # noqa: E402
from shared.db.interface import get_raw_file  # noqa: E402
from shared.db.models import RawFile  # noqa: E402
from tests.airflow_harness import init_airflow_db, load_dags, run_dag, run_triggered, ti_states  # noqa: E402
from tests.data_factory import make_bruker  # noqa: E402
from tests.pipeline_env import (  # noqa: E402
    PipelineEnv,
    activate,
    delete_every_bucket,
    s3_backup,
    s3_server,
    write_pipeline_env,
)
from tests.s3_fixtures import KmsS3Server  # noqa: E402

__all__ = ["s3_server"]  # the fixture: a server of this module's own
pytest_plugins = ["tests.s3_fixtures"]
pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

CLI = Path(__file__).resolve().parents[2] / "scripts" / "rawvault.sh"

# Everything of the handler but upload_to_s3 is marked success: the run does what "clear upload_to_s3" does.
ALL_BUT_UPLOAD = r"^(monitor_acquisition|compute_checksum|copy_raw_file|start_file_mover)$"
MANIFEST_SUFFIX = ".rawvault-manifest.json"


def pipeline_env(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, endpoint_url: str, **s3: Any
) -> tuple[Any, PipelineEnv]:
    """A client of the S3 server (emptied of buckets) and a pipeline environment backing up to it."""
    client = local_s3_client(endpoint_url)
    delete_every_bucket(client)
    init_airflow_db()
    monkeypatch.setenv("AIRFLOW_CONN_AWS_DEFAULT", aws_connection_uri(endpoint_url))
    env = write_pipeline_env(tmp_path, backup=s3_backup("rv-repair", **s3))
    activate(env, monkeypatch)
    return client, env


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


def assert_set_complete(client: Any, raw_file: RawFile, *, kms: bool = False) -> dict[str, str]:
    """Every recorded file is in S3 with its size (and ETag, unless SSE-KMS); the manifest lists what S3 reports.

    Returns the S3 ETag of every file.
    """
    bucket, key_prefix = location(raw_file)
    manifest, manifest_etag = manifest_of(client, raw_file)
    etags = {}
    for path, (size, _md5, etag) in raw_file.file_info.items():
        head = client.head_object(Bucket=bucket, Key=f"{key_prefix}{path}")
        etags[path] = head["ETag"].strip('"')
        assert head["ContentLength"] == size, path
        assert (etags[path] != etag) if kms else (etags[path] == etag), path  # an SSE-KMS ETag is no MD5
        assert manifest["files"][path]["s3_etag"] == etags[path], path
    assert raw_file.s3_etag == manifest_etag  # a set's s3_etag is its manifest's ETag
    return etags


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    """``scripts/rawvault.sh ARGS`` as a user runs it (this test's RAWVAULT_CONFIG, MongoDB and AWS connection)."""
    return subprocess.run(
        ["bash", str(CLI), *args], env=dict(os.environ), capture_output=True, text=True, timeout=300, check=False
    )


def delete_for_good(client: Any, raw_file: RawFile, path: str) -> None:
    """Every version of the object of ``path``: as if it had never been uploaded."""
    bucket, key_prefix = location(raw_file)
    key = f"{key_prefix}{path}"
    for version in client.list_object_versions(Bucket=bucket, Prefix=key).get("Versions", []):
        if version["Key"] == key:
            client.delete_object(Bucket=bucket, Key=key, VersionId=version["VersionId"])


def assert_restores(raw_file: RawFile, client: Any, env: PipelineEnv, target: Path) -> None:
    restore_raw_file(raw_file.id, target, client)
    source = env.settings.locations.backup / raw_file.backup_base_path
    for path in raw_file.file_info:
        assert filecmp.cmp(source / path, target / path, shallow=False), path


def test_a_deleted_object_of_a_bruker_set_is_repaired_by_a_rerun_of_upload_to_s3(
    tmp_path: Path, mongo_uri: str, s3_server: S3Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    client, env = pipeline_env(tmp_path, monkeypatch, s3_server.endpoint_url)
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


def test_on_an_aws_store_a_bruker_sets_small_files_are_verified_by_the_listing_through_the_pipeline(
    tmp_path: Path, mongo_uri: str, s3_server: S3Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 16 through real DAG runs: ``compatibility: aws`` (moto answers a PUT as AWS, and is not probed)."""
    client, env = pipeline_env(tmp_path, monkeypatch, s3_server.endpoint_url, compatibility="aws")
    by_listing: list[str] = []  # the objects the listing after the PUTs verified (the tasks run in this process)
    verify = listed_check._by_listing

    def counted(item: Any, *args: Any) -> Any:
        verified = verify(item, *args)
        if verified is not None:
            by_listing.append(verified.path)
        return verified

    monkeypatch.setattr(listed_check, "_by_listing", counted)
    _dags, raw_file = back_up_through_the_pipeline(env, "20261122_tims1_listed.d")

    single_puts = [path for path, (size, _md5, _etag) in raw_file.file_info.items() if size <= 5 * 1024 * 1024]
    assert len(single_puts) >= 2 and sorted(by_listing) == sorted(single_puts)
    assert_set_complete(client, raw_file)
    assert verify_backups(client).ok
    assert_restores(raw_file, client, env, tmp_path / "restored")


def test_under_sse_kms_a_repaired_object_gets_a_new_etag_and_the_manifest_says_so(
    tmp_path: Path, mongo_uri: str, kms_s3_server: KmsS3Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 11 finding 2, on a server that gives a new random ETag per SSE-KMS upload (as AWS does)."""
    client, env = pipeline_env(tmp_path, monkeypatch, kms_s3_server.endpoint_url, server_side_encryption="aws:kms")
    dags, raw_file = back_up_through_the_pipeline(env, "20261122_tims1_kmsrepair.d")
    before = assert_set_complete(client, raw_file, kms=True)
    lost = f"{raw_file.id}/analysis.tdf"
    delete_for_good(client, raw_file, lost)

    states = rerun_upload(dags["acquisition_handler.tims1"], raw_file.id, ALL_BUT_UPLOAD)

    assert states["upload_to_s3"] == "success", states
    repaired = get_raw_file(raw_file.id)
    assert repaired.backup_status == "upload_done", repaired.backup_status_details
    after = assert_set_complete(client, repaired, kms=True)  # the manifest records the new ETag ...
    assert after[lost] != before[lost] and {p: e for p, e in after.items() if p != lost} == {
        p: e for p, e in before.items() if p != lost
    }
    assert repaired.s3_etag != raw_file.s3_etag  # ... so it is a new manifest, and s3_etag follows it
    assert "manifest rewritten" in repaired.backup_status_details, repaired.backup_status_details
    verify = run_cli("verify", "--raw-file-id", raw_file.id)
    assert verify.returncode == 0, verify.stdout + verify.stderr
    restore = run_cli("restore", raw_file.id, str(tmp_path / "restored"))
    assert restore.returncode == 0, restore.stdout + restore.stderr
    source = env.settings.locations.backup / raw_file.backup_base_path
    for path in raw_file.file_info:
        assert filecmp.cmp(source / path, tmp_path / "restored" / path, shallow=False), path

    # s3_upload_retry (triggered by hand: no attempt count) repairs as well.
    second = f"{raw_file.id}/chromatography-data.sqlite"
    delete_for_good(client, repaired, second)
    retry = rerun_upload(dags["s3_upload_retry"], raw_file.id)
    assert retry["upload_to_s3"] == "success", retry
    again = get_raw_file(raw_file.id)
    assert again.backup_status == "upload_done" and second in again.backup_status_details
    assert assert_set_complete(client, again, kms=True)[second] != after[second]
    assert again.s3_upload_attempts == 3
