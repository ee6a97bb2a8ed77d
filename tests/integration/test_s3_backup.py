"""upload_raw_file: moto S3 server over HTTP + the real MongoDB wire server; status, key and ETag on RawFile."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import EndpointConnectionError

pytest.register_assert_rewrite("tests.s3_fixtures")  # it is imported here before pytest loads it as a plugin

from devtools.servers import S3Server  # noqa: E402
from rawvault.backup import XcomFileInfo, upload_raw_file  # noqa: E402
from rawvault.claim import UploadNotReadyError  # noqa: E402
from rawvault.s3.errors import (  # noqa: E402
    BucketMissingError,
    BucketNameCollisionError,
    ExistingObjectMismatchError,
    FileInfoError,
    LocalFileChangedError,
    PartSizeMismatchError,
    S3AccessDeniedError,
    S3TransientError,
    UnsafePathError,
)
from shared.db.interface import create_project, create_raw_file, get_raw_file, utc_now  # noqa: E402
from shared.db.models import RawFile  # noqa: E402
from shared.settings import Settings  # noqa: E402
from tests.s3_fixtures import (  # noqa: E402
    MIB,
    PART,
    AuthS3,
    CallCounter,
    after_upload_part,
    file_info_of,
    make_bruker_set,
    make_client,
    make_settings,
    make_thermo_file,
    multipart_uploads,
    object_keys,
    unique_prefix,
    write_file,
)

pytestmark = pytest.mark.slow  # quick mode (scripts/test.sh --quick) leaves it out: over 15 s

pytest_plugins = ["tests.s3_fixtures"]

CREATED = datetime(2026, 11, 22, 10, 0, tzinfo=UTC)


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return make_settings(tmp_path, unique_prefix(), auto_create_buckets=True, max_concurrency=4)


def register(
    settings: Settings,
    instrument_id: str,
    make: Any,
    *,
    project_id: str | None = None,
    backup_status: str = "copying_done",
    **fields: Any,
) -> tuple[str, dict[str, list], Path]:
    """A raw file with verified local backup copies, as compute_checksum and copy_raw_file leave it."""
    base = f"{instrument_id}/{CREATED:%Y_%m}"
    folder = settings.locations.backup / base
    created = make(folder)
    paths = [created] if isinstance(created, str) else created
    name = paths[0].split("/")[0]
    info = file_info_of(folder, paths)
    if "etag_part_size" in RawFile._fields:
        fields.setdefault("etag_part_size", PART)
    raw_file = create_raw_file(
        name,
        instrument_id=instrument_id,
        created_at=CREATED,
        project_id=project_id,
        file_info=info,
        backup_status=backup_status,
        **fields,
    )
    return raw_file.id, info, folder


def run(settings: Settings, raw_file_id: str, client: Any, **kwargs: Any) -> Any:
    raw_file = get_raw_file(raw_file_id)
    xcom = XcomFileInfo(
        file_info=kwargs.get("file_info", dict(raw_file.file_info)),
        part_size=kwargs.get("part_size", PART),
        backup_folder=settings.locations.backup / raw_file.backup_base_path,
    )
    return upload_raw_file(raw_file_id, settings, xcom=xcom, client=client, progress_interval=5)


def bucket_of(settings: Settings, project: str = "fallback") -> str:
    return f"{settings.backup.s3.bucket_prefix}-{project}"


def assert_failed(raw_file_id: str, *fragments: str) -> RawFile:
    raw_file = get_raw_file(raw_file_id)
    assert raw_file.backup_status == "upload_failed"
    assert raw_file.backup_status_details.startswith("upload to S3 failed: ")
    for fragment in fragments:
        assert fragment in raw_file.backup_status_details
    assert raw_file.s3_etag is None and raw_file.s3_backup_key is None  # nothing claims success
    # When it failed (backup_sweeper's backoff counts from it), never before the attempt started.
    assert raw_file.s3_upload_failed_at is not None
    assert raw_file.s3_upload_attempted_at <= raw_file.s3_upload_failed_at <= utc_now()
    return raw_file


def test_thermo_file_upload_done_with_key_and_etag(mongo_uri, settings, s3_client) -> None:
    raw_file_id, info, _ = register(settings, "thermo1", make_thermo_file)
    result = run(settings, raw_file_id, s3_client)

    raw_file = get_raw_file(raw_file_id)
    bucket = bucket_of(settings)  # the fallback project's bucket
    assert raw_file.backup_status == "upload_done"
    assert raw_file.s3_backup_key == f"s3://{bucket}/thermo1/2026_11/"
    etag = info[raw_file_id][2]
    assert raw_file.s3_etag == etag == result.s3_etag
    head = s3_client.head_object(Bucket=bucket, Key=f"thermo1/2026_11/{raw_file_id}")
    assert head["ETag"].strip('"') == etag
    assert head["Metadata"]["raw-file-id"] == raw_file_id and head["Metadata"]["instrument-id"] == "thermo1"
    assert raw_file.s3_upload_attempts == 1
    assert "1 file(s) uploaded" in raw_file.backup_status_details


def test_bruker_set_of_a_project_upload_done(mongo_uri, settings, s3_client) -> None:
    create_project("PRJ_1")
    raw_file_id, info, _ = register(settings, "tims1", make_bruker_set, project_id="PRJ_1")
    run(settings, raw_file_id, s3_client)

    raw_file = get_raw_file(raw_file_id)
    bucket = bucket_of(settings, "prj-1")
    assert raw_file.backup_status == "upload_done"
    assert raw_file.s3_backup_key == f"s3://{bucket}/tims1/2026_11/"
    for path, (size, _md5, etag) in info.items():
        head = s3_client.head_object(Bucket=bucket, Key=f"tims1/2026_11/{path}")
        assert (head["ContentLength"], head["ETag"].strip('"')) == (size, etag)
    manifest_key = f"tims1/2026_11/{raw_file_id}.rawvault-manifest.json"
    manifest_head = s3_client.head_object(Bucket=bucket, Key=manifest_key)
    assert raw_file.s3_etag == manifest_head["ETag"].strip('"')  # a set's s3_etag is its manifest's ETag
    manifest = json.loads(s3_client.get_object(Bucket=bucket, Key=manifest_key)["Body"].read())
    assert manifest["raw_file_id"] == raw_file_id and set(manifest["files"]) == set(info)
    assert manifest["metadata"] == {"raw-file-id": raw_file_id, "instrument-id": "tims1", "project-id": "PRJ_1"}


def test_rerun_after_success_uploads_nothing(mongo_uri, settings, s3_client) -> None:
    raw_file_id, info, _ = register(settings, "tims1", make_bruker_set)
    run(settings, raw_file_id, s3_client)
    etag = get_raw_file(raw_file_id).s3_etag
    counter = CallCounter(s3_client)
    updated_before = get_raw_file(raw_file_id).db_updated_at
    result = run(settings, raw_file_id, s3_client)
    assert counter.writes == 0 and result.already_complete
    # Every object is checked (issue 11: the manifest alone does not show that an object is still there).
    assert sorted(counter.keys_of("HeadObject")) == sorted(f"tims1/2026_11/{path}" for path in info)
    raw_file = get_raw_file(raw_file_id)
    assert raw_file.backup_status == "upload_done" and raw_file.s3_etag == etag
    # Confirmed from S3 without claiming: the document was not touched (never upload_in_progress again).
    assert raw_file.s3_upload_attempts == 1 and raw_file.db_updated_at == updated_before
    assert raw_file.upload_claim_owner is None


def test_failure_in_the_middle_of_a_set_then_retry_uploads_only_whats_missing(mongo_uri, settings, s3_client) -> None:
    raw_file_id, info, _ = register(settings, "tims1", make_bruker_set)
    paths = sorted(info)
    failing = f"tims1/2026_11/{paths[3]}"

    def fail(params: dict[str, Any], **_kwargs: Any) -> None:
        if params["Key"] == failing:
            raise EndpointConnectionError(endpoint_url="http://simulated-network-failure")

    s3_client.meta.events.register("before-parameter-build.s3.UploadPart", fail)
    with pytest.raises(S3TransientError):
        run(settings, raw_file_id, s3_client)
    failed = assert_failed(raw_file_id, "analysis.tdf_bin", "cannot reach S3", "the next run resumes it")
    bucket = bucket_of(settings)
    (kept,) = multipart_uploads(s3_client, bucket)  # kept for the retry, and recorded on the raw file
    assert failed.s3_multipart_uploads == {failing: kept["UploadId"]}
    assert failed.upload_claim_owner is None and failed.upload_claim_expires_at is None  # released

    # The files go side by side: the small ones done or in flight when the part failed are in the bucket.
    before = object_keys(s3_client, bucket)
    missing = [path for path in paths if f"tims1/2026_11/{path}" not in before]
    assert paths[3] in missing

    retry_client = make_client(s3_client.meta.endpoint_url)
    counter = CallCounter(retry_client)
    result = run(settings, raw_file_id, retry_client)
    assert result.skipped == [path for path in paths if path not in missing] and result.uploaded == missing
    assert counter.keys_of("CreateMultipartUpload") == []  # the kept upload was resumed
    assert counter.keys_of("UploadPart") == [failing] * 3  # none of its parts had been stored
    assert len(counter.keys_of("PutObject")) == len(missing) - 1 + 1  # the small files not there yet, the manifest
    raw_file = get_raw_file(raw_file_id)
    assert raw_file.backup_status == "upload_done" and raw_file.s3_etag == result.s3_etag
    assert raw_file.s3_upload_attempts == 2 and raw_file.s3_multipart_uploads == {}
    assert multipart_uploads(s3_client, bucket) == []


def test_missing_bucket_without_auto_create(mongo_uri, tmp_path, s3_client) -> None:
    settings = make_settings(tmp_path, unique_prefix(), auto_create_buckets=False)
    raw_file_id, _, _ = register(settings, "thermo1", make_thermo_file)
    with pytest.raises(BucketMissingError):
        run(settings, raw_file_id, s3_client)
    assert_failed(raw_file_id, f"bucket '{bucket_of(settings)}' does not exist", "auto_create_buckets: true")


def test_missing_bucket_with_auto_create(mongo_uri, settings, s3_client) -> None:
    raw_file_id, _, _ = register(settings, "thermo1", make_thermo_file)
    run(settings, raw_file_id, s3_client)
    bucket = bucket_of(settings)
    assert s3_client.get_bucket_versioning(Bucket=bucket)["Status"] == "Enabled"
    assert s3_client.get_bucket_tagging(Bucket=bucket)["TagSet"] == [{"Key": "managed-by", "Value": "rawvault"}]
    assert get_raw_file(raw_file_id).backup_status == "upload_done"


def test_access_denied(mongo_uri, tmp_path, auth_s3: AuthS3) -> None:
    settings = make_settings(tmp_path, "rv-auth", auto_create_buckets=False)  # bucket rv-auth-bucket exists
    raw_file_id, _, _ = register(settings, "thermo1", make_thermo_file, project_id="bucket")
    client = make_client(auth_s3.endpoint_url, **auth_s3.no_put)
    with pytest.raises(S3AccessDeniedError):
        run(settings, raw_file_id, client)
    assert_failed(raw_file_id, "access denied by S3 (AccessDenied")


def test_file_changed_after_checksumming(mongo_uri, settings, s3_client) -> None:
    raw_file_id, _, folder = register(settings, "thermo1", lambda f: make_thermo_file(f, size=7 * MIB))
    with (folder / raw_file_id).open("r+b") as handle:
        handle.write(b"rewritten")
    with pytest.raises(LocalFileChangedError):
        run(settings, raw_file_id, s3_client)
    assert_failed(raw_file_id, "changed after it was checksummed")
    assert object_keys(s3_client, bucket_of(settings)) == []


def test_different_object_already_at_the_key(mongo_uri, settings, s3_client) -> None:
    raw_file_id, _, _ = register(settings, "thermo1", make_thermo_file)
    bucket = bucket_of(settings)
    s3_client.create_bucket(Bucket=bucket)
    s3_client.put_object(Bucket=bucket, Key=f"thermo1/2026_11/{raw_file_id}", Body=b"older data")
    with pytest.raises(ExistingObjectMismatchError):
        run(settings, raw_file_id, s3_client)
    assert_failed(raw_file_id, "already holds a different object", "never overwrites")
    body = s3_client.get_object(Bucket=bucket, Key=f"thermo1/2026_11/{raw_file_id}")["Body"].read()
    assert body == b"older data"


def test_path_escaping_the_prefix(mongo_uri, settings, s3_client) -> None:
    raw_file_id, info, _ = register(settings, "thermo1", lambda f: write_file(f / "a.raw", 10, 1).name)
    bad = {**info, "../../etc/escape.raw": info["a.raw"]}
    with pytest.raises(FileInfoError):
        run(settings, raw_file_id, s3_client, file_info=bad)
    # The XCom file info differs from the recorded one: refused before the paths are even looked at.
    assert_failed(raw_file_id, "differs from the file_info recorded")
    RawFile.objects(id=raw_file_id).update_one(set__file_info=bad)
    with pytest.raises(UnsafePathError):
        run(settings, raw_file_id, s3_client, file_info=bad)
    assert_failed(raw_file_id, "'../../etc/escape.raw'", "escape the raw file's key prefix")


def test_bucket_name_collision(mongo_uri, settings, s3_client) -> None:
    create_project("P_1")
    create_project("p-1")
    raw_file_id, _, _ = register(settings, "thermo1", make_thermo_file, project_id="P_1")
    with pytest.raises(BucketNameCollisionError):
        run(settings, raw_file_id, s3_client)
    assert_failed(raw_file_id, "'P_1'", "'p-1'", "share one bucket")


def test_not_ready_leaves_the_status_alone(mongo_uri, settings, s3_client) -> None:
    raw_file_id, _, _ = register(settings, "thermo1", make_thermo_file, backup_status="copying_in_progress")
    with pytest.raises(UploadNotReadyError, match=r"copying_in_progress.*run copy_raw_file first"):
        run(settings, raw_file_id, s3_client)
    assert get_raw_file(raw_file_id).backup_status == "copying_in_progress"


def test_xcom_file_info_must_match_the_recorded_one(mongo_uri, settings, s3_client) -> None:
    raw_file_id, info, _ = register(settings, "thermo1", make_thermo_file)
    changed = {raw_file_id: [info[raw_file_id][0], "0" * 32, info[raw_file_id][2]]}
    with pytest.raises(FileInfoError):
        run(settings, raw_file_id, s3_client, file_info=changed)
    assert_failed(raw_file_id, "differs from the file_info recorded")


@pytest.mark.skipif("etag_part_size" not in RawFile._fields, reason="RawFile has no etag_part_size")
def test_part_size_other_than_the_checksummed_one(mongo_uri, settings, s3_client) -> None:
    raw_file_id, _, _ = register(settings, "thermo1", make_thermo_file)
    with pytest.raises(PartSizeMismatchError):
        run(settings, raw_file_id, s3_client, part_size=8 * MIB)
    assert_failed(raw_file_id, "checksummed with 5242880 byte parts")


def test_s3_server_stopping_mid_upload_then_retry(mongo_uri, settings) -> None:
    raw_file_id, info, _ = register(settings, "thermo1", make_thermo_file)
    with S3Server() as server:
        client = make_client(server.endpoint_url, max_attempts=2)
        parts = [0]

        def stop_server(**_kwargs: Any) -> None:
            parts[0] += 1
            if parts[0] == 1:
                server.stop(kill=True)

        after_upload_part(client, stop_server)
        with pytest.raises(S3TransientError):
            run(settings, raw_file_id, client)
        assert_failed(raw_file_id, "cannot reach S3", "is kept", "the next run resumes it")

        server.start()  # empty again (moto keeps state in memory); auto_create_buckets makes the bucket anew
        client = make_client(server.endpoint_url)
        run(settings, raw_file_id, client)
        raw_file = get_raw_file(raw_file_id)
        assert raw_file.backup_status == "upload_done" and raw_file.s3_etag == info[raw_file_id][2]
        assert multipart_uploads(client, bucket_of(settings)) == []


def test_client_from_the_airflow_connection(mongo_uri, tmp_path, s3_server, monkeypatch) -> None:
    conn = {
        "conn_type": "aws",
        "login": "testing",
        "password": "testing",
        "extra": {"endpoint_url": s3_server.endpoint_url},
    }
    monkeypatch.setenv("AIRFLOW_CONN_AWS_TEST", json.dumps(conn))
    settings = make_settings(tmp_path, unique_prefix(), auto_create_buckets=True, aws_conn_id="aws_test")
    raw_file_id, _, _ = register(settings, "thermo1", make_thermo_file)
    upload_raw_file(raw_file_id, settings)  # file info, folder and part size from the DB/settings
    assert get_raw_file(raw_file_id).backup_status == "upload_done"
