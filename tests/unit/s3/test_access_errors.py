"""Access errors name what is missing: the IAM action of the refused operation, the credentials, the KMS key, or
the bucket's owner (ExpectedBucketOwner, sent on every request by rawvault.s3.client.expect_bucket_owner)."""

from __future__ import annotations

from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError
from botocore.stub import Stubber

from rawvault.s3.client import OWNER_PARAMETER, expect_bucket_owner
from rawvault.s3.errors import (
    EXPECTED_OWNER_FIELD,
    BucketOwnerMismatchError,
    S3AccessDeniedError,
    S3PermanentError,
    classify,
)
from rawvault.s3.objects import delete_version
from rawvault.s3.permissions import ACTIONS_OF, missing_permission

OWNER = "111122223333"


def denied(operation: str, code: str = "AccessDenied", **error: str) -> ClientError:
    return ClientError(
        {"Error": {"Code": code, "Message": "Access Denied", **error}, "ResponseMetadata": {"HTTPStatusCode": 403}},
        operation,
    )


@pytest.mark.parametrize(
    ("operation", "bucket", "key", "expected"),
    [
        ("CreateBucket", "fac-p1", None,
         "one of s3:CreateBucket, s3:PutBucketOwnershipControls on arn:aws:s3:::fac-p1"),
        ("HeadBucket", "fac-p1", "ignored", "s3:ListBucket on arn:aws:s3:::fac-p1"),
        ("PutObject", "fac-p1", "t/a.raw",
         "s3:PutObject on arn:aws:s3:::fac-p1/t/a.raw (with SSE-KMS also kms:GenerateDataKey on the KMS key)"),
        ("HeadObject", "fac-p1", "t/a.raw", "one of s3:GetObject, s3:GetObjectVersion on arn:aws:s3:::fac-p1/t/a.raw"),
        ("ListMultipartUploads", None, None, "s3:ListBucketMultipartUploads on the bucket"),
        ("ListParts", None, None, "s3:ListMultipartUploadParts on the objects of the bucket"),
        ("put_bucket_versioning", "b", None, "s3:PutBucketVersioning on arn:aws:s3:::b"),
        ("ListBuckets", "b", None, None),  # not an operation rawvault uses
    ],
)  # fmt: skip
def test_missing_permission_of_an_operation(operation: str, bucket: str | None, key: str | None, expected: str) -> None:
    assert missing_permission(operation, bucket, key) == expected


def test_every_operation_of_the_table_names_its_actions() -> None:
    for operation, actions in ACTIONS_OF.items():
        text = missing_permission(operation, "b", "k")
        assert text is not None and all(action in text for action in actions), operation


def test_a_refused_operation_names_the_iam_action_and_the_policy() -> None:
    error = classify(denied("CreateBucket"), "creating bucket 'fac-p1'", bucket="fac-p1")
    assert type(error) is S3AccessDeniedError
    assert str(error) == (
        "creating bucket 'fac-p1': access denied by S3 (AccessDenied: Access Denied) to CreateBucket; the IAM "
        "identity lacks one of s3:CreateBucket, s3:PutBucketOwnershipControls on arn:aws:s3:::fac-p1 "
        "(see docs/iam-policy.json)"
    )


@pytest.mark.parametrize("code", ["InvalidAccessKeyId", "SignatureDoesNotMatch", "ExpiredToken"])
def test_bad_credentials_say_so_not_a_permission(code: str) -> None:
    error = classify(denied("PutObject", code), "uploading x", bucket="b", key="k")
    assert type(error) is S3AccessDeniedError
    assert "credentials are not valid" in str(error) and "lacks" not in str(error)


def test_a_refused_kms_key_names_the_kms_actions() -> None:
    error = classify(denied("PutObject", "KMS.AccessDeniedException"), "uploading x")
    assert "kms:GenerateDataKey" in str(error) and "OptionalSseKms" in str(error)


def test_an_unknown_operation_falls_back_to_the_policy_file() -> None:
    error = classify(denied("Op"), "doing x")
    assert type(error) is S3AccessDeniedError and "docs/iam-policy.json" in str(error)


def test_a_403_to_a_request_with_the_expected_owner_is_an_owner_mismatch() -> None:
    error = classify(denied("HeadBucket", "403", **{EXPECTED_OWNER_FIELD: OWNER}), "checking bucket 'b'", bucket="b")
    assert isinstance(error, BucketOwnerMismatchError) and isinstance(error, S3AccessDeniedError)
    message = str(error)
    assert f"ExpectedBucketOwner={OWNER} (backup.s3.expected_bucket_owner)" in message
    assert f"bucket 'b' belongs to another AWS account than {OWNER}" in message
    assert "s3:ListBucket on arn:aws:s3:::b" in message  # or the permission is missing: S3 does not say which


def test_the_failed_delete_of_an_unverified_object_names_the_delete_permission() -> None:
    client = boto3.client("s3", region_name="us-east-1", aws_access_key_id="k", aws_secret_access_key="s")
    with Stubber(client) as stub:
        stub.add_client_error("delete_object", "AccessDenied", http_status_code=403)
        stub.add_client_error("delete_object", "AccessDenied", http_status_code=403)
        versioned = delete_version(client, "b", "t/a.raw", {"VersionId": "v1"})
        plain = delete_version(client, "b", "t/a.raw", {"VersionId": "null"})
    assert versioned.startswith("deleting the unverified object failed (AccessDenied: the IAM identity lacks ")
    assert "s3:DeleteObjectVersion on arn:aws:s3:::b/t/a.raw" in versioned
    assert "s3:DeleteObject on arn:aws:s3:::b/t/a.raw" in plain and "docs/iam-policy.json" in plain


# --- ExpectedBucketOwner on every request ----------------------------------------------------------------------


def client_expecting(owner: str | None) -> Any:
    client = boto3.client("s3", region_name="us-east-1", aws_access_key_id="k", aws_secret_access_key="s")
    expect_bucket_owner(client, owner)
    return client


def sent_owner_headers(client: Any) -> dict[str, str | None]:
    """Operation -> the ExpectedBucketOwner of its request, as botocore serialises it (the Stubber answers)."""
    sent: dict[str, str | None] = {}

    def record(model: Any, params: dict[str, Any], **_kwargs: Any) -> None:
        sent[model.name] = params.get(OWNER_PARAMETER)

    client.meta.events.register_last("before-parameter-build.s3", record)  # after every other handler
    return sent


def test_the_owner_goes_with_every_operation_that_takes_it_and_no_other() -> None:
    client = client_expecting(OWNER)
    sent = sent_owner_headers(client)
    with Stubber(client) as stub:
        for operation in ("head_bucket", "head_object", "put_object", "create_bucket", "list_buckets"):
            stub.add_response(operation, {})
        client.head_bucket(Bucket="b")
        client.head_object(Bucket="b", Key="k")
        client.put_object(Bucket="b", Key="k", Body=b"x")
        client.create_bucket(Bucket="b")  # CreateBucket takes no ExpectedBucketOwner
        client.list_buckets()
    assert sent == {"HeadBucket": OWNER, "HeadObject": OWNER, "PutObject": OWNER, "CreateBucket": None,
                    "ListBuckets": None}  # fmt: skip


def test_the_operations_that_take_no_owner_are_the_ones_botocore_says() -> None:
    model = boto3.client("s3", region_name="us-east-1").meta.service_model
    without = {
        name
        for name in model.operation_names
        if OWNER_PARAMETER not in (model.operation_model(name).input_shape.members or {})
    }
    assert {"CreateBucket", "ListBuckets"} <= without
    assert not without & {"HeadBucket", "PutObject", "GetObject", "CompleteMultipartUpload", "DeleteObject"}


def test_a_refusal_of_a_request_with_the_owner_is_noted_for_classify() -> None:
    client = client_expecting(OWNER)
    with Stubber(client) as stub:
        stub.add_client_error("head_bucket", "403", "Forbidden", http_status_code=403)
        with pytest.raises(ClientError) as raised:
            client.head_bucket(Bucket="b")
    assert raised.value.response["Error"][EXPECTED_OWNER_FIELD] == OWNER
    assert isinstance(classify(raised.value, "checking bucket 'b'", bucket="b"), BucketOwnerMismatchError)


def test_without_an_owner_nothing_is_sent_or_noted() -> None:
    client = client_expecting(None)
    with Stubber(client) as stub:
        stub.add_response("head_bucket", {}, {"Bucket": "b"})
        stub.add_client_error("head_object", "403", "Forbidden", http_status_code=403)
        client.head_bucket(Bucket="b")
        with pytest.raises(ClientError) as raised:
            client.head_object(Bucket="b", Key="k")
    assert EXPECTED_OWNER_FIELD not in raised.value.response["Error"]
    assert type(classify(raised.value, "checking", bucket="b", key="k")) is S3AccessDeniedError


def test_an_owner_that_is_no_account_id_is_refused() -> None:
    with pytest.raises(S3PermanentError, match="12 digits"):
        client_expecting("my-account")
