"""Object Lock and lifecycle configuration on moto's S3 server (and what rclone serve s3 makes of them)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

pytest.register_assert_rewrite("tests.s3_fixtures")  # it is imported here before pytest loads it as a plugin

from rawvault.s3.errors import S3PermanentError  # noqa: E402
from rawvault.s3.retention import (  # noqa: E402
    ABORT_RULE_ID,
    DATA_TAG,
    NONCURRENT_RULE_ID,
    TRANSITION_RULE_ID,
    BucketObjectLock,
    apply_lifecycle,
    apply_object_lock,
    apply_object_retention,
    bucket_creation_args,
    bucket_lock_problem,
    data_object_tagging,
    lifecycle_rules,
    object_retention_args,
    read_lifecycle,
    read_object_lock,
    read_object_retention,
    retention_problem,
)
from shared.settings import LifecycleSettings, ObjectLockSettings  # noqa: E402
from tests.s3_fixtures import S3Backend, backend_of  # noqa: E402

pytest_plugins = ["tests.s3_fixtures"]

LOCK = ObjectLockSettings(mode="COMPLIANCE", days=30)
LIFECYCLE = LifecycleSettings.model_validate(
    {
        "abort_incomplete_multipart_days": 14,
        "transition": {"days": 90, "storage_class": "GLACIER"},
        "noncurrent_version_expiration_days": 365,
    }
)


@pytest.fixture
def moto(s3_server: Any) -> S3Backend:
    return backend_of("moto", s3_server)


def locked_bucket(client: Any, default_retention: bool = True) -> str:
    """A bucket created the way rawvault auto-creates one with ``object_lock`` configured."""
    name = f"rv-lock-{uuid.uuid4().hex[:12]}"
    client.create_bucket(Bucket=name, **bucket_creation_args(LOCK))
    if default_retention:
        apply_object_lock(client, name, LOCK)
    return name


def put(client: Any, bucket: str, key: str, **args: Any) -> dict[str, Any]:
    return client.put_object(Bucket=bucket, Key=key, Body=b"raw data", ChecksumAlgorithm="SHA256", **args)


def test_bucket_created_with_object_lock_reads_back_its_configuration(moto: S3Backend) -> None:
    client = moto.client()
    bucket = locked_bucket(client)
    assert read_object_lock(client, bucket) == BucketObjectLock(True, "COMPLIANCE", 30)
    assert client.get_bucket_versioning(Bucket=bucket)["Status"] == "Enabled"  # S3 turns it on with Object Lock
    assert bucket_lock_problem(read_object_lock(client, bucket), LOCK) is None


def test_object_written_with_retention_reads_it_back(moto: S3Backend) -> None:
    client = moto.client()
    bucket = locked_bucket(client)
    now = datetime.now(UTC)
    version = put(client, bucket, "thermo1/2026_11/a.raw", **object_retention_args(LOCK, now))["VersionId"]
    retention, written_at = read_object_retention(client, bucket, "thermo1/2026_11/a.raw")
    assert retention is not None and retention.mode == "COMPLIANCE"
    assert abs(retention.retain_until - (now + timedelta(days=30))) < timedelta(seconds=2)
    assert retention_problem(retention, LOCK, written_at) is None
    # Compliance mode: not even rawvault's own credentials may delete that version now.
    with pytest.raises(Exception, match="AccessDenied"):
        client.delete_object(Bucket=bucket, Key="thermo1/2026_11/a.raw", VersionId=version)


def test_object_without_retention_is_detected(moto: S3Backend) -> None:
    client = moto.client()
    bucket = locked_bucket(client, default_retention=False)  # no default retention as a backstop
    put(client, bucket, "no-retention.raw")
    retention, written_at = read_object_retention(client, bucket, "no-retention.raw")
    assert retention is None
    problem = retention_problem(retention, LOCK, written_at)
    assert problem is not None and "no Object Lock retention" in problem and "s3:GetObjectRetention" in problem


def test_shorter_or_weaker_retention_is_detected(moto: S3Backend) -> None:
    client = moto.client()
    bucket = locked_bucket(client, default_retention=False)
    put(client, bucket, "short.raw", **object_retention_args(ObjectLockSettings(mode="COMPLIANCE", days=2)))
    put(client, bucket, "weak.raw", **object_retention_args(ObjectLockSettings(mode="GOVERNANCE", days=30)))
    short = retention_problem(*read_object_retention(client, bucket, "short.raw")[:1], LOCK, datetime.now(UTC))
    assert short is not None and "before 30 days after it was written" in short
    weak = retention_problem(read_object_retention(client, bucket, "weak.raw")[0], LOCK, None)
    assert weak == "its retention mode GOVERNANCE is weaker than the configured COMPLIANCE"


def test_default_retention_covers_an_object_written_without_one(moto: S3Backend) -> None:
    client = moto.client()
    bucket = locked_bucket(client)
    put(client, bucket, "backstop.raw")
    retention, written_at = read_object_retention(client, bucket, "backstop.raw")
    assert retention is not None and retention_problem(retention, LOCK, written_at) is None


def test_multipart_object_without_retention_gets_it_set_afterwards(moto: S3Backend) -> None:
    # moto 5.2.5 drops the retention given at CreateMultipartUpload (AWS keeps it); verify must see that,
    # and apply_object_retention must repair it.
    client = moto.client()
    bucket = locked_bucket(client, default_retention=False)
    upload = client.create_multipart_upload(
        Bucket=bucket, Key="mp.raw", ChecksumAlgorithm="SHA256", **object_retention_args(LOCK)
    )
    part = client.upload_part(
        Bucket=bucket, Key="mp.raw", UploadId=upload["UploadId"], PartNumber=1, Body=b"x" * 1024,
        ChecksumAlgorithm="SHA256",
    )  # fmt: skip
    client.complete_multipart_upload(
        Bucket=bucket, Key="mp.raw", UploadId=upload["UploadId"],
        MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": part["ETag"], "ChecksumSHA256": part["ChecksumSHA256"]}]},
    )  # fmt: skip
    retention, written_at = read_object_retention(client, bucket, "mp.raw")
    assert retention is None and retention_problem(retention, LOCK, written_at) is not None
    until = object_retention_args(LOCK, written_at)["ObjectLockRetainUntilDate"]
    apply_object_retention(client, bucket, "mp.raw", None, until, LOCK.mode)
    retention, written_at = read_object_retention(client, bucket, "mp.raw")
    assert retention_problem(retention, LOCK, written_at) is None


def test_lifecycle_applied_to_an_existing_bucket_keeps_other_rules(moto: S3Backend) -> None:
    client = moto.client()
    bucket = moto.new_bucket(client)
    foreign = {"ID": "facility-logs", "Status": "Enabled", "Filter": {"Prefix": "logs/"}, "Expiration": {"Days": 30}}
    client.put_bucket_lifecycle_configuration(Bucket=bucket, LifecycleConfiguration={"Rules": [foreign]})
    apply_lifecycle(client, bucket, LIFECYCLE)
    apply_lifecycle(  # applied again with other values: rawvault's rules are replaced, not added twice
        client, bucket, LIFECYCLE.model_copy(update={"abort_incomplete_multipart_days": 21})
    )
    rules = {rule["ID"]: rule for rule in read_lifecycle(client, bucket)}
    assert sorted(rules) == sorted(["facility-logs", ABORT_RULE_ID, TRANSITION_RULE_ID, NONCURRENT_RULE_ID])
    assert rules["facility-logs"]["Expiration"] == {"Days": 30}
    assert rules[ABORT_RULE_ID]["AbortIncompleteMultipartUpload"] == {"DaysAfterInitiation": 21}
    assert rules[TRANSITION_RULE_ID]["Transitions"] == [{"Days": 90, "StorageClass": "GLACIER"}]
    assert rules[TRANSITION_RULE_ID]["Filter"] == {"Tag": {"Key": DATA_TAG[0], "Value": DATA_TAG[1]}}
    assert rules[NONCURRENT_RULE_ID]["NoncurrentVersionExpiration"] == {"NoncurrentDays": 365}


def test_lifecycle_and_object_lock_after_creating_a_bucket_like_rawvault(moto: S3Backend) -> None:
    client = moto.client()
    bucket = locked_bucket(client)
    assert read_lifecycle(client, bucket) == []
    apply_lifecycle(client, bucket, LIFECYCLE)
    assert [rule["ID"] for rule in read_lifecycle(client, bucket)] == [
        rule["ID"] for rule in lifecycle_rules(LIFECYCLE)
    ]
    assert read_object_lock(client, bucket).enabled
    # A data object carries the tag the transition rule selects; a manifest does not (it stays in STANDARD).
    put(client, bucket, "data.raw", Tagging=data_object_tagging())
    tags = client.get_object_tagging(Bucket=bucket, Key="data.raw")["TagSet"]
    assert tags == [{"Key": DATA_TAG[0], "Value": DATA_TAG[1]}]


def test_rclone_echoes_retention_headers_without_object_lock(rclone_s3_server: Any) -> None:
    backend = backend_of("rclone", rclone_s3_server)
    client = backend.client()
    bucket = backend.new_bucket(client)
    client.create_bucket(Bucket=f"{bucket}-lock", **bucket_creation_args(LOCK))  # accepted, and ignored
    assert read_object_lock(client, f"{bucket}-lock") == BucketObjectLock(False)
    put(client, bucket, "echo.raw", **object_retention_args(LOCK))
    retention, _written_at = read_object_retention(client, bucket, "echo.raw")
    assert retention is not None and retention.mode == "COMPLIANCE"  # only an echo of the request's headers...
    problem = bucket_lock_problem(read_object_lock(client, bucket), LOCK)  # ...which the bucket check unmasks
    assert problem is not None and "no Object Lock" in problem
    client.delete_object(Bucket=bucket, Key="echo.raw")  # nothing is locked: the delete succeeds


def test_rclone_refuses_lifecycle_with_a_message_naming_the_way_out(rclone_s3_server: Any) -> None:
    backend = backend_of("rclone", rclone_s3_server)
    client = backend.client()
    bucket = backend.new_bucket(client)
    assert read_lifecycle(client, bucket) == []
    with pytest.raises(S3PermanentError, match=r"BucketAlreadyExists.*remove backup\.s3\.lifecycle"):
        apply_lifecycle(client, bucket, LIFECYCLE)
    with pytest.raises(S3PermanentError, match="created with Object Lock"):
        apply_object_lock(client, bucket, LOCK)
