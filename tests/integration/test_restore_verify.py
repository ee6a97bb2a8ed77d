"""restore and verify through the moto S3 server over HTTP and the real MongoDB wire server.

Sets are uploaded with the real upload step (``upload_raw_file``), then
restored and audited with the library functions and the command line
(``scripts/rawvault.sh`` run as a real subprocess, exit codes checked).
"""

from __future__ import annotations

import hashlib
import io
from datetime import UTC, date, datetime
from typing import Any

import pytest
from botocore.response import StreamingBody

pytest.register_assert_rewrite("tests.s3_fixtures", "tests.restore_fixtures")  # imported before pytest loads them

from devtools.local_stack import aws_connection_uri  # noqa: E402
from rawvault.audit import AuditSelection, verify_backups  # noqa: E402
from rawvault.restore import restore_raw_file  # noqa: E402
from rawvault.s3.download import (  # noqa: E402
    RestoreConflictError,
    RestoreSourceError,
    RestoreVerificationError,
)
from rawvault.s3.drift import DriftKind  # noqa: E402
from shared.db.interface import create_project, create_raw_file, get_raw_file, update_raw_file  # noqa: E402
from tests.restore_fixtures import (  # noqa: E402
    CREATED,
    THERMO,
    Env,
    assert_identical_tree,
    back_up,
    files_under,
    leftovers,
    run_cli,
    write_env,
)
from tests.s3_fixtures import (  # noqa: E402
    REGION,
    make_bruker_set,
    make_client,
    make_thermo_file,
    unique_prefix,
)

pytest_plugins = ["tests.s3_fixtures", "tests.restore_fixtures"]
pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]


# ---------------------------------------------------------------------------------------------- restore


def test_restore_round_trip_thermo_and_bruker_byte_identical(mongo_uri, env, s3_client, tmp_path) -> None:
    thermo_id, thermo_folder, thermo_paths = back_up(env, s3_client, "thermo1", make_thermo_file)
    bruker_id, bruker_folder, bruker_paths = back_up(env, s3_client, "tims1", make_bruker_set)
    target = tmp_path / "restored"

    thermo = restore_raw_file(thermo_id, target / "thermo", s3_client, progress_interval=0)
    bruker = restore_raw_file(bruker_id, target / "bruker", s3_client, progress_interval=0)

    assert_identical_tree(thermo_folder, thermo_paths, target / "thermo")
    assert_identical_tree(bruker_folder, bruker_paths, target / "bruker")
    assert thermo.restored == thermo_paths and bruker.restored == sorted(bruker_paths)
    assert thermo.source == bruker.source == "database"
    assert thermo.bytes_downloaded == (thermo_folder / THERMO).stat().st_size
    assert set(bruker.verified.values()) == {"size, MD5, ETag"}
    assert leftovers(target) == []

    # Again into the same folder: every file is there and identical, nothing is downloaded.
    gets: list[str] = []
    s3_client.meta.events.register("before-call.s3.GetObject", lambda params, **_: gets.append(params["url_path"]))
    again = restore_raw_file(bruker_id, target / "bruker", s3_client)
    assert again.restored == [] and again.skipped == sorted(bruker_paths)
    assert [g for g in gets if "manifest" not in g] == []  # only the manifest was read
    assert_identical_tree(bruker_folder, bruker_paths, target / "bruker")


def test_restore_cli_shows_progress_and_restores_identically(mongo_uri, env, s3_client, tmp_path) -> None:
    bruker_id, folder, paths = back_up(env, s3_client, "tims1", make_bruker_set)
    target = tmp_path / "cli-restore"

    done = run_cli("restore", bruker_id, str(target), "--progress-interval", "0")

    assert done.returncode == 0, done.stderr
    assert f"restored {bruker_id} from s3://{env.bucket()}/tims1/2026_11/" in done.stdout
    assert f"{len(paths)} file(s) downloaded and verified" in done.stdout
    assert "%" in done.stderr and "MiB/s" in done.stderr  # progress lines: bytes, percent, rate
    assert_identical_tree(folder, paths, target)


def test_restore_from_the_manifest_without_the_database(mongo_uri, env, s3_client, tmp_path) -> None:
    thermo_id, thermo_folder, thermo_paths = back_up(env, s3_client, "thermo1", make_thermo_file)
    bruker_id, bruker_folder, bruker_paths = back_up(env, s3_client, "tims1", make_bruker_set)
    manifest_url = f"s3://{env.bucket()}/tims1/2026_11/{bruker_id}.rawvault-manifest.json"
    no_database = {"RAWVAULT_MONGO_URI": None}

    done = run_cli(
        "restore", bruker_id, str(tmp_path / "bruker"), "--from-manifest", manifest_url, env_overrides=no_database
    )
    assert done.returncode == 0, done.stderr
    assert_identical_tree(bruker_folder, bruker_paths, tmp_path / "bruker")

    # Without the database and without a manifest the command says how to proceed.
    refused = run_cli("restore", bruker_id, str(tmp_path / "other"), env_overrides=no_database)
    assert refused.returncode == 2
    assert "RAWVAULT_MONGO_URI is not set" in refused.stderr and "--from-manifest" in refused.stderr
    assert not (tmp_path / "other").exists()

    # The library: the manifest named by its key prefix plus the raw file id; the database is not touched.
    result = restore_raw_file(
        thermo_id,
        tmp_path / "thermo",
        s3_client,
        manifest=f"s3://{env.bucket()}/thermo1/2026_11/",
        use_database=False,
    )
    assert result.source == "manifest" and result.restored == thermo_paths
    assert_identical_tree(thermo_folder, thermo_paths, tmp_path / "thermo")

    with pytest.raises(RestoreSourceError, match="is the one of raw file"):
        restore_raw_file("other.raw", tmp_path / "x", s3_client, manifest=manifest_url)
    with pytest.raises(RestoreSourceError, match="there is no manifest at s3://"):
        restore_raw_file(None, tmp_path / "x", s3_client, manifest=f"s3://{env.bucket()}/nope.rawvault-manifest.json")
    with pytest.raises(RestoreSourceError, match="needs the set's manifest"):
        restore_raw_file(bruker_id, tmp_path / "x", s3_client, use_database=False)


def test_corrupted_object_in_s3_is_detected_and_nothing_gets_its_name(mongo_uri, env, s3_client, tmp_path) -> None:
    bruker_id, _folder, _paths = back_up(env, s3_client, "tims1", make_bruker_set)
    key = f"tims1/2026_11/{bruker_id}/analysis.tdf"
    plain = make_client(s3_client.meta.endpoint_url)  # no If-None-Match hook: a new version replaces the object
    original = plain.get_object(Bucket=env.bucket(), Key=key)["Body"].read()
    plain.put_object(Bucket=env.bucket(), Key=key, Body=bytes(b ^ 0xFF for b in original[:10]) + original[10:])
    target = tmp_path / "restored"

    done = run_cli("restore", bruker_id, str(target))

    assert done.returncode == 1, (done.stdout, done.stderr)
    assert f"s3://{env.bucket()}/{key}: ETag differs" in done.stderr
    assert "nothing was downloaded" in done.stderr
    assert not (target / bruker_id / "analysis.tdf").exists()
    assert leftovers(target) == []
    with pytest.raises(RestoreVerificationError, match=f"s3://{env.bucket()}/{key}"):
        restore_raw_file(bruker_id, target, s3_client)


def test_corrupted_download_is_detected_after_download_and_removed(mongo_uri, env, s3_client, tmp_path) -> None:
    """S3's metadata looks right, but the bytes that arrive are not the backup's: caught before the rename."""
    bruker_id, folder, paths = back_up(env, s3_client, "tims1", make_bruker_set)
    corrupted = f"{bruker_id}/analysis.tdf_bin"  # the multipart file: ranged GETs, one per part

    def mark(params: dict[str, Any], context: dict[str, Any], **_: Any) -> None:
        if params.get("Key", "").endswith(corrupted):
            context["rawvault_corrupt"] = True

    def flip_first_byte(parsed: dict[str, Any], context: dict[str, Any], **_: Any) -> None:
        if context.get("rawvault_corrupt") and parsed.get("ContentRange", "").startswith("bytes 0-"):
            data = bytearray(parsed["Body"].read())
            data[0] ^= 0xFF
            parsed["Body"] = StreamingBody(io.BytesIO(bytes(data)), len(data))

    client = make_client(s3_client.meta.endpoint_url)
    client.meta.events.register("before-parameter-build.s3.GetObject", mark)
    client.meta.events.register("after-call.s3.GetObject", flip_first_byte)
    target = tmp_path / "restored"

    with pytest.raises(RestoreVerificationError) as raised:
        restore_raw_file(bruker_id, target, client)

    message = str(raised.value)
    assert f"s3://{env.bucket()}/tims1/2026_11/{corrupted} does not hold {corrupted}" in message
    assert "MD5" in message and "ETag" in message and "nothing was written under its name" in message
    assert not (target / corrupted).exists()
    assert leftovers(target) == []
    # The files before it in the set were restored and verified; a clean run completes the set.
    restored_before = [path for path in sorted(paths) if path < corrupted]
    assert files_under(target) == restored_before
    result = restore_raw_file(bruker_id, target, s3_client)
    assert result.skipped == restored_before
    assert_identical_tree(folder, paths, target)


def test_restore_never_overwrites_a_different_file_and_keeps_identical_ones(mongo_uri, env, s3_client, tmp_path):
    bruker_id, folder, paths = back_up(env, s3_client, "tims1", make_bruker_set)
    target = tmp_path / "restored"
    different = target / bruker_id / "analysis.tdf"
    different.parent.mkdir(parents=True)
    different.write_bytes(b"someone else's file")

    with pytest.raises(RestoreConflictError) as raised:
        restore_raw_file(bruker_id, target, s3_client)
    assert str(different) in str(raised.value) and "nothing was restored" in str(raised.value)
    assert different.read_bytes() == b"someone else's file"
    assert files_under(target) == [f"{bruker_id}/analysis.tdf"]

    done = run_cli("restore", bruker_id, str(target))
    assert done.returncode == 1 and "never overwrites" in done.stderr
    assert different.read_bytes() == b"someone else's file"

    # An identical file already in place is kept, the rest is restored.
    different.unlink()
    identical = target / bruker_id / "chromatography-data.sqlite"
    identical.write_bytes((folder / bruker_id / "chromatography-data.sqlite").read_bytes())
    result = restore_raw_file(bruker_id, target, s3_client)
    assert result.skipped == [f"{bruker_id}/chromatography-data.sqlite"]
    assert len(result.restored) == len(paths) - 1
    assert_identical_tree(folder, paths, target)


def test_restore_of_a_raw_file_without_s3_backup_or_unknown(mongo_uri, env, s3_client, tmp_path) -> None:
    create_raw_file("local_only.raw", instrument_id="thermo1", created_at=CREATED, backup_status="copying_done")
    with pytest.raises(RestoreSourceError, match="has no S3 backup"):
        restore_raw_file("local_only.raw", tmp_path / "t", s3_client)
    done = run_cli("restore", "no_such_file.raw", str(tmp_path / "t"))
    # A message for a command line (issue 17 item 1): what an id looks like and the way without the database.
    assert done.returncode == 2 and "no raw file 'no_such_file.raw' in the database" in done.stderr
    assert "--from-manifest" in done.stderr and "DAG run conf" not in done.stderr


# ----------------------------------------------------------------------------------------------- verify


def test_verify_all_good_then_deleted_then_replaced(mongo_uri, env, s3_client) -> None:
    thermo_id, _, _ = back_up(env, s3_client, "thermo1", make_thermo_file)
    bruker_id, _, _ = back_up(env, s3_client, "tims1", make_bruker_set)
    bucket = env.bucket()

    good = run_cli("verify")
    assert good.returncode == 0, good.stderr
    assert "checked 2 raw file(s), 9 object(s): all present with the recorded size and ETag" in good.stdout

    plain = make_client(s3_client.meta.endpoint_url)
    deleted_key = f"tims1/2026_11/{bruker_id}/1234.m/method file.method"
    plain.delete_object(Bucket=bucket, Key=deleted_key)  # a delete marker in the versioned bucket
    report = verify_backups(s3_client)
    assert [(item.raw_file_id, item.kind, item.url) for item in report.drift] == [
        (bruker_id, DriftKind.MISSING, f"s3://{bucket}/{deleted_key}")
    ]

    replaced_key = f"thermo1/2026_11/{thermo_id}"
    plain.put_object(Bucket=bucket, Key=replaced_key, Body=b"not the raw file")
    drifted = run_cli("verify")
    assert drifted.returncode == 1
    assert "2 problem(s) in 2 raw file(s)" in drifted.stdout
    rows = {line.split()[0]: line for line in drifted.stdout.splitlines()[3:]}
    assert "missing" in rows[bruker_id] and f"s3://{bucket}/{deleted_key}" in rows[bruker_id]
    assert "size differs" in rows[thermo_id]  # a different body of another length

    # Same length, different bytes: the ETag tells.
    body = plain.get_object(Bucket=bucket, Key=f"tims1/2026_11/{bruker_id}/analysis.tdf")["Body"].read()
    plain.put_object(Bucket=bucket, Key=f"tims1/2026_11/{bruker_id}/analysis.tdf", Body=body[::-1])
    report = verify_backups(s3_client, AuditSelection(raw_file_id=bruker_id))
    kinds = {item.path: item.kind for item in report.drift}
    assert kinds == {
        f"{bruker_id}/1234.m/method file.method": DriftKind.MISSING,
        f"{bruker_id}/analysis.tdf": DriftKind.ETAG_DIFFERS,
    }
    replaced = next(item for item in report.drift if item.kind == DriftKind.ETAG_DIFFERS)
    assert replaced.expected == get_raw_file(bruker_id).file_info[f"{bruker_id}/analysis.tdf"][2]
    assert replaced.actual == hashlib.md5(body[::-1]).hexdigest()

    as_json = run_cli("verify", "--raw-file-id", bruker_id, "--json")
    assert as_json.returncode == 1 and '"kind": "ETag differs"' in as_json.stdout


def test_verify_reports_a_missing_or_replaced_manifest(mongo_uri, env, s3_client) -> None:
    bruker_id, _, _ = back_up(env, s3_client, "tims1", make_bruker_set)
    plain = make_client(s3_client.meta.endpoint_url)
    manifest_key = f"tims1/2026_11/{bruker_id}.rawvault-manifest.json"
    manifest = plain.get_object(Bucket=env.bucket(), Key=manifest_key)["Body"].read()
    plain.put_object(Bucket=env.bucket(), Key=manifest_key, Body=manifest + b" ")
    assert [item.kind for item in verify_backups(s3_client).drift] == [DriftKind.ETAG_DIFFERS]
    plain.delete_object(Bucket=env.bucket(), Key=manifest_key)
    assert [item.kind for item in verify_backups(s3_client).drift] == [DriftKind.MANIFEST_MISSING]


def test_verify_filters_and_sample(mongo_uri, env, s3_client) -> None:
    create_project("PRJ1")
    thermo_id, _, _ = back_up(env, s3_client, "thermo1", make_thermo_file, project_id="PRJ1")
    bruker_id, _, _ = back_up(env, s3_client, "tims1", make_bruker_set, created=datetime(2026, 10, 2, tzinfo=UTC))
    create_raw_file("not_uploaded.raw", instrument_id="thermo1", created_at=CREATED, backup_status="upload_failed")

    def checked(**selection: Any) -> list[str]:
        return verify_backups(s3_client, AuditSelection(**selection)).raw_file_ids

    assert checked() == [bruker_id, thermo_id]  # upload_done only, oldest first
    assert checked(instrument="tims1") == [bruker_id]
    assert checked(project="PRJ1") == [thermo_id]
    assert checked(project="_FALLBACK") == [bruker_id]  # no project: fallback
    assert checked(since=date(2026, 11, 1)) == [thermo_id]
    sampled = verify_backups(s3_client, AuditSelection(sample=1, seed=7))
    assert len(sampled.raw_file_ids) == 1 and sampled.matched == 2 and sampled.ok
    assert "a random sample of the 2 matching" in sampled.summary()

    done = run_cli("verify", "--instrument", "thermo1", "--since", "2026-11-01", "--sample", "5")
    assert done.returncode == 0 and "checked 1 raw file(s), 2 object(s)" in done.stdout
    unknown = run_cli("verify", "--raw-file-id", "not_uploaded.raw")
    assert unknown.returncode == 2 and "upload_done" in unknown.stderr
    bad = run_cli("verify", "--since", "22.11.2026")
    assert bad.returncode == 2 and "YYYY-MM-DD" in bad.stderr


def test_verify_a_raw_file_recorded_without_s3_key(mongo_uri, env, s3_client) -> None:
    bruker_id, _, _ = back_up(env, s3_client, "tims1", make_bruker_set)
    update_raw_file(bruker_id, s3_backup_key="")
    (item,) = verify_backups(s3_client).drift
    assert item.kind == DriftKind.NOT_RECORDED and "s3_backup_key" in item.detail


# ------------------------------------------------------- SSE-KMS (tests.kms_moto_server: AWS's KMS ETags)


def test_kms_objects_restore_verified_by_sha256_and_verify_against_the_manifest(
    mongo_uri, tmp_path, kms_s3_server, monkeypatch
) -> None:
    kms_env = write_env(tmp_path, "kms.yaml", server_side_encryption="aws:kms")
    client = make_client(kms_s3_server.endpoint_url)  # AWS's SSE-KMS ETags: no MD5, new with every upload
    bruker_id, folder, paths = back_up(kms_env, client, "tims1", make_bruker_set)
    head = client.head_object(Bucket=kms_env.bucket(), Key=f"tims1/2026_11/{bruker_id}/analysis.tdf")
    recorded = get_raw_file(bruker_id).file_info[f"{bruker_id}/analysis.tdf"][2]
    assert head["ServerSideEncryption"] == "aws:kms" and head["ETag"].strip('"') != recorded  # as on AWS

    result = restore_raw_file(bruker_id, tmp_path / "restored", client)
    assert_identical_tree(folder, paths, tmp_path / "restored")
    assert set(result.verified.values()) == {"size, MD5, ETag, SHA-256"}
    assert verify_backups(client).ok

    plain = make_client(kms_s3_server.endpoint_url)
    key = f"tims1/2026_11/{bruker_id}/analysis.tdf"
    body = plain.get_object(Bucket=kms_env.bucket(), Key=key)["Body"].read()
    plain.put_object(Bucket=kms_env.bucket(), Key=key, Body=body[::-1], ServerSideEncryption="aws:kms")
    (item,) = verify_backups(client).drift
    assert item.kind == DriftKind.ETAG_DIFFERS and "manifest" in item.detail
    with pytest.raises(RestoreVerificationError, match="recorded in the manifest"):
        restore_raw_file(bruker_id, tmp_path / "again", client)


# ------------------------------------------------------------------------------------ backup_verifier DAG


def test_backup_verifier_dag_green_then_red_on_drift(mongo_uri, tmp_path, s3_server, s3_client, monkeypatch) -> None:
    from tests.airflow_harness import init_airflow_db, load_dags, run_dag
    from tests.pipeline_env import activate, write_pipeline_env

    init_airflow_db()
    local = write_pipeline_env(tmp_path / "local")
    activate(local, monkeypatch)
    assert "backup_verifier" not in load_dags()  # S3 backups only

    backup = {"backup_type": "s3", "s3": {"region": REGION, "bucket_prefix": unique_prefix(), "part_size_mb": 5}}
    pipeline = write_pipeline_env(tmp_path / "s3", backup=backup)
    activate(pipeline, monkeypatch)
    monkeypatch.setenv("AIRFLOW_CONN_AWS_DEFAULT", aws_connection_uri(s3_server.endpoint_url, REGION))
    s3_env = Env(pipeline.settings, pipeline.config_path, pipeline.root)
    s3_client.create_bucket(Bucket=s3_env.bucket())
    bruker_id, _, _ = back_up(s3_env, s3_client, "tims1", make_bruker_set)
    dags = load_dags()
    dag = dags["backup_verifier"]
    task = dag.get_task("verify_backups")
    assert task.queue == "test_rawvault_maintenance" and dag.schedule == "@weekly"  # never behind uploads

    assert run_dag(dag, {"sample": 0}) == {"verify_backups": "success", "__dagrun__": "success"}

    deleted = f"tims1/2026_11/{bruker_id}/empty.txt"
    make_client(s3_server.endpoint_url).delete_object(Bucket=s3_env.bucket(), Key=deleted)
    assert run_dag(dag, {"sample": 0}) == {"verify_backups": "failed", "__dagrun__": "failed"}
