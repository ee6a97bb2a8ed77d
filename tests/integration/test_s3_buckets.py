"""ensure_bucket and access errors against moto S3 servers over HTTP (one of them checking credentials and IAM)."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError

pytest.register_assert_rewrite("tests.s3_fixtures")  # it is imported here before pytest loads it as a plugin

from rawvault.s3.buckets import ensure_bucket  # noqa: E402
from rawvault.s3.errors import BucketMissingError, S3AccessDeniedError, S3PermanentError  # noqa: E402
from rawvault.s3.upload import upload_file_set  # noqa: E402
from tests.s3_fixtures import PART, AuthS3, file_info_of, make_client, write_file  # noqa: E402

pytest_plugins = ["tests.s3_fixtures"]


def new_name() -> str:
    return f"rv-new-{uuid.uuid4().hex[:12]}"


def test_missing_bucket_fails_clearly_without_auto_create(s3_client) -> None:
    name = new_name()
    with pytest.raises(BucketMissingError) as info:
        ensure_bucket(s3_client, name, "us-east-1", auto_create=False)
    assert str(info.value).startswith(f"bucket {name!r} does not exist: create it")
    assert "backup.s3.auto_create_buckets: true" in str(info.value)
    with pytest.raises(ClientError):
        s3_client.head_bucket(Bucket=name)


@pytest.mark.parametrize(
    ("region", "sse", "kms_key", "expected_rule"),
    [
        ("eu-central-1", "AES256", None, {"SSEAlgorithm": "AES256"}),
        ("us-east-1", "aws:kms", "alias/rv", {"SSEAlgorithm": "aws:kms", "KMSMasterKeyID": "alias/rv"}),
    ],
)
def test_auto_create_makes_a_private_versioned_encrypted_tagged_bucket(
    s3_server, region: str, sse: str, kms_key: str | None, expected_rule: dict
) -> None:
    client = make_client(s3_server.endpoint_url)
    name = new_name()
    assert ensure_bucket(client, name, region, auto_create=True, server_side_encryption=sse, kms_key_id=kms_key)
    assert client.get_bucket_versioning(Bucket=name)["Status"] == "Enabled"
    (rule,) = client.get_bucket_encryption(Bucket=name)["ServerSideEncryptionConfiguration"]["Rules"]
    assert rule["ApplyServerSideEncryptionByDefault"] == expected_rule
    assert client.get_public_access_block(Bucket=name)["PublicAccessBlockConfiguration"] == {
        "BlockPublicAcls": True,
        "IgnorePublicAcls": True,
        "BlockPublicPolicy": True,
        "RestrictPublicBuckets": True,
    }
    assert client.get_bucket_tagging(Bucket=name)["TagSet"] == [{"Key": "managed-by", "Value": "rawvault"}]
    location = client.get_bucket_location(Bucket=name)["LocationConstraint"]
    assert (location or "us-east-1") == region
    assert client.get_bucket_ownership_controls(Bucket=name)["OwnershipControls"]["Rules"] == [
        {"ObjectOwnership": "BucketOwnerEnforced"}
    ]
    # An existing bucket is used as it is (no configuration calls).
    assert not ensure_bucket(client, name, region, auto_create=True)


def test_half_configured_new_bucket_is_deleted_again(s3_client) -> None:
    name = new_name()

    def refuse(**_kwargs: Any) -> None:
        raise ClientError({"Error": {"Code": "InvalidRequest", "Message": "no"}}, "PutBucketEncryption")

    s3_client.meta.events.register("before-call.s3.PutBucketEncryption", refuse)
    with pytest.raises(S3PermanentError, match=r"configuring new bucket .*deleted again, a retry starts clean"):
        ensure_bucket(s3_client, name, "us-east-1", auto_create=True)
    with pytest.raises(ClientError):
        s3_client.head_bucket(Bucket=name)


def test_head_bucket_access_denied_names_bucket_and_permission(auth_s3: AuthS3) -> None:
    client = make_client(auth_s3.endpoint_url, **auth_s3.no_rights)
    with pytest.raises(S3AccessDeniedError) as info:
        ensure_bucket(client, auth_s3.bucket, "us-east-1", auto_create=True)
    message = str(info.value)
    assert f"access denied to bucket {auth_s3.bucket!r}" in message
    assert f"s3:ListBucket on arn:aws:s3:::{auth_s3.bucket}" in message


def test_unknown_access_key_is_access_denied(auth_s3: AuthS3) -> None:
    client = make_client(auth_s3.endpoint_url, aws_access_key_id="AKIAUNKNOWN", aws_secret_access_key="nope")
    with pytest.raises(S3AccessDeniedError, match="access denied to bucket"):
        ensure_bucket(client, auth_s3.bucket, "us-east-1", auto_create=False)


@pytest.mark.parametrize("size", [1000, PART + 1], ids=["single-put", "multipart"])
def test_upload_permission_denied_fails_fast_without_retries(auth_s3: AuthS3, tmp_path: Path, size: int) -> None:
    client = make_client(auth_s3.endpoint_url, max_attempts=5, **auth_s3.no_put)
    sent: list[str] = []
    client.meta.events.register("before-send.s3", lambda request, **_kw: sent.append(request.method))
    write_file(tmp_path / "a.raw", size, 1)
    with pytest.raises(S3AccessDeniedError, match=r"access denied by S3 \(AccessDenied"):
        upload_file_set(
            client,
            bucket=auth_s3.bucket,
            key_prefix=f"{uuid.uuid4().hex}/",
            source_folder=tmp_path,
            file_info=file_info_of(tmp_path, ["a.raw"]),
            part_size=PART,
            raw_file_id="a.raw",
        )
    # HEAD manifest (GET), HEAD object, list multipart uploads, then exactly one refused write: no retry storm.
    assert sent.count("PUT") + sent.count("POST") == 1
