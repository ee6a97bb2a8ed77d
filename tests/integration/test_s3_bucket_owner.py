"""backup.s3.expected_bucket_owner (issue 13 item 3): moto's S3 server over HTTP, the MongoDB wire server.

moto's server ignores ``ExpectedBucketOwner`` (the first test keeps that true), so what AWS does is shown in two
halves: every request that goes over HTTP during a backup, a repair, a restore and a verify carries the header
(recorded where botocore sends it), and with S3's refusal simulated (a 403, as AWS answers an owner mismatch) a
bucket of another account fails the upload before anything is written.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

pytest.register_assert_rewrite("tests.s3_fixtures")  # it is imported here before pytest loads it as a plugin

from botocore.awsrequest import AWSResponse  # noqa: E402

from devtools.local_stack import aws_connection_uri  # noqa: E402
from rawvault.audit import verify_backups  # noqa: E402
from rawvault.backup import upload_raw_file  # noqa: E402
from rawvault.restore import restore_raw_file  # noqa: E402
from rawvault.s3.client import s3_client_for  # noqa: E402
from rawvault.s3.errors import BucketOwnerMismatchError  # noqa: E402
from shared.db.interface import create_raw_file, get_raw_file  # noqa: E402
from shared.settings import Settings  # noqa: E402
from tests.s3_fixtures import (  # noqa: E402
    PART,
    REGION,
    CallCounter,
    file_info_of,
    make_bruker_set,
    make_client,
    make_settings,
    object_keys,
    unique_prefix,
)

pytest_plugins = ["tests.s3_fixtures"]

MOTO_ACCOUNT = "123456789012"  # the account that owns every bucket of moto's server
OTHER_ACCOUNT = "111122223333"
CREATED = datetime(2026, 11, 22, 10, 0, tzinfo=UTC)
HEADER = "x-amz-expected-bucket-owner"


def register(settings: Settings) -> str:
    folder = settings.locations.backup / "tims1" / f"{CREATED:%Y_%m}"
    paths = make_bruker_set(folder)
    raw_file = create_raw_file(
        paths[0].split("/")[0], instrument_id="tims1", created_at=CREATED, file_info=file_info_of(folder, paths),
        etag_part_size=PART, backup_status="copying_done",
    )  # fmt: skip
    return raw_file.id


def record_owner_headers(client: Any) -> list[tuple[str, str | None]]:
    """(operation, x-amz-expected-bucket-owner) of every request ``client`` sends over HTTP, retries included."""
    sent: list[tuple[str, str | None]] = []

    def record(request: Any, **kwargs: Any) -> None:
        value = request.headers.get(HEADER)  # bytes once the request is signed
        sent.append((kwargs["event_name"].rsplit(".", 1)[-1], value.decode() if isinstance(value, bytes) else value))

    client.meta.events.register("before-send.s3", record)
    return sent


def refuse_other_owners(client: Any, owner: str) -> None:
    """Answer like AWS when a request's ExpectedBucketOwner is not ``owner``: 403 AccessDenied, nothing done."""

    def refuse(params: dict[str, Any], **_kwargs: Any) -> tuple[AWSResponse, dict[str, Any]] | None:
        expected = params["headers"].get(HEADER)
        if expected is None or expected == owner:
            return None
        response = AWSResponse(params["url"], 403, {}, None)
        return response, {
            "Error": {"Code": "AccessDenied", "Message": "Access Denied"},
            "ResponseMetadata": {"HTTPStatusCode": 403},
        }

    client.meta.events.register_first("before-call.s3", refuse)


def test_moto_does_not_enforce_the_expected_bucket_owner(s3_client: Any) -> None:
    bucket = f"rv-owner-{unique_prefix()}"
    s3_client.create_bucket(Bucket=bucket)
    s3_client.head_bucket(Bucket=bucket, ExpectedBucketOwner=OTHER_ACCOUNT)  # AWS: 403
    s3_client.put_object(Bucket=bucket, Key="k", Body=b"x", ExpectedBucketOwner=OTHER_ACCOUNT)  # AWS: 403


def test_every_request_of_a_backup_repair_restore_and_verify_carries_the_owner(
    mongo_uri: str, tmp_path: Path, s3_server: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AIRFLOW_CONN_AWS_DEFAULT", aws_connection_uri(s3_server.endpoint_url, REGION))
    settings = make_settings(
        tmp_path, unique_prefix(), auto_create_buckets=True, max_concurrency=2, expected_bucket_owner=MOTO_ACCOUNT
    )
    client = s3_client_for(settings.backup.s3, 8, max_attempts=2)  # as the tasks and the CLI make it
    sent = record_owner_headers(client)
    raw_file_id = register(settings)

    upload_raw_file(raw_file_id, settings, client=client)
    raw_file = get_raw_file(raw_file_id)
    bucket = raw_file.s3_backup_key.split("/")[2]
    lost = f"{raw_file.backup_base_path}/{raw_file_id}/analysis.tdf_bin"  # multipart: CreateMultipartUpload ...
    make_client(s3_server.endpoint_url).delete_object(Bucket=bucket, Key=lost)
    assert upload_raw_file(raw_file_id, settings, client=client).uploaded  # the repair
    restore_raw_file(raw_file_id, tmp_path / "restored", client, max_concurrency=2)  # s3transfer's GETs
    assert verify_backups(client).ok

    operations = {operation for operation, _owner in sent}
    assert {"CreateBucket", "HeadBucket", "PutObject", "CreateMultipartUpload", "UploadPart",
            "CompleteMultipartUpload", "HeadObject", "GetObject", "PutBucketVersioning"} <= operations  # fmt: skip
    without = sorted({operation for operation, owner in sent if owner != MOTO_ACCOUNT})
    assert without == ["CreateBucket"]  # the one operation here that takes no ExpectedBucketOwner


def test_a_bucket_of_another_account_fails_before_anything_is_uploaded(
    mongo_uri: str, tmp_path: Path, s3_client: Any
) -> None:
    settings = make_settings(tmp_path, unique_prefix(), auto_create_buckets=False, expected_bucket_owner=OTHER_ACCOUNT)
    bucket = f"{settings.backup.s3.bucket_prefix}-fallback"
    s3_client.create_bucket(Bucket=bucket)  # created first by "someone else": moto's account, not OTHER_ACCOUNT
    raw_file_id = register(settings)
    client = make_client(s3_client.meta.endpoint_url)
    refuse_other_owners(client, MOTO_ACCOUNT)
    counter = CallCounter(client)

    with pytest.raises(BucketOwnerMismatchError) as raised:
        upload_raw_file(raw_file_id, settings, client=client)

    message = str(raised.value)
    assert f"checking bucket {bucket!r}" in message and f"ExpectedBucketOwner={OTHER_ACCOUNT}" in message
    assert f"belongs to another AWS account than {OTHER_ACCOUNT}" in message
    assert counter.writes == 0 and object_keys(s3_client, bucket) == []
    failed = get_raw_file(raw_file_id)
    assert failed.backup_status == "upload_failed" and "belongs to another AWS account" in failed.backup_status_details


def test_an_upload_done_set_in_a_bucket_of_another_account_is_recorded_failed(
    mongo_uri: str, tmp_path: Path, s3_client: Any
) -> None:
    """A set backed up before the owner was configured: the next run finds it is not in the account's bucket."""
    plain = make_settings(tmp_path, unique_prefix(), auto_create_buckets=True)
    raw_file_id = register(plain)
    upload_raw_file(raw_file_id, plain, client=make_client(s3_client.meta.endpoint_url))
    owned = make_settings(tmp_path, plain.backup.s3.bucket_prefix, expected_bucket_owner=OTHER_ACCOUNT)
    client = make_client(s3_client.meta.endpoint_url)
    refuse_other_owners(client, MOTO_ACCOUNT)

    with pytest.raises(BucketOwnerMismatchError):
        upload_raw_file(raw_file_id, owned, client=client)

    failed = get_raw_file(raw_file_id)
    assert failed.backup_status == "upload_failed", failed.backup_status_details
    assert f"ExpectedBucketOwner={OTHER_ACCOUNT}" in failed.backup_status_details
