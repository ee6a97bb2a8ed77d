"""What moto's server and rclone serve s3 do differently, measured with boto3 over HTTP.

Each test is one row of the table in :class:`devtools.servers.RcloneS3Server`'s
docstring and runs against both servers (ids ``moto`` / ``rclone``), so the
table stays true when either server is upgraded.
"""

from __future__ import annotations

import base64
import hashlib
import random
from typing import Any

import pytest
from botocore.exceptions import ClientError

pytest.register_assert_rewrite("tests.s3_fixtures")  # it is imported here before pytest loads it as a plugin

from devtools.servers import RcloneS3Server  # noqa: E402
from rawvault.s3.buckets import ensure_bucket  # noqa: E402
from rawvault.s3.errors import S3PermanentError  # noqa: E402
from tests.s3_fixtures import MIB, PART, S3Backend, backend_of  # noqa: E402

pytest_plugins = ["tests.s3_fixtures"]

DATA = random.Random(7).randbytes(12 * MIB)  # 3 parts of 5 MiB
PARTS = [DATA[offset : offset + PART] for offset in range(0, len(DATA), PART)]
PART_MD5S_ETAG = hashlib.md5(b"".join(hashlib.md5(part).digest() for part in PARTS)).hexdigest() + "-3"
WHOLE_MD5 = hashlib.md5(DATA).hexdigest()


def sha256(data: bytes) -> str:
    return base64.b64encode(hashlib.sha256(data).digest()).decode()


def code(error: pytest.ExceptionInfo[ClientError]) -> str:
    return str(error.value.response["Error"]["Code"])


def multipart(client: Any, bucket: str, key: str, **complete: Any) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Upload DATA in 3 parts with SHA-256 checksums; ``(CompleteMultipartUpload answer, UploadPart answers)``."""
    upload_id = client.create_multipart_upload(Bucket=bucket, Key=key, ChecksumAlgorithm="SHA256")["UploadId"]
    answers = [
        client.upload_part(
            Bucket=bucket, Key=key, UploadId=upload_id, PartNumber=number, Body=body, ChecksumAlgorithm="SHA256"
        )
        for number, body in enumerate(PARTS, start=1)
    ]
    parts = [{"PartNumber": n, "ETag": a["ETag"]} for n, a in enumerate(answers, start=1)]
    done = client.complete_multipart_upload(
        Bucket=bucket, Key=key, UploadId=upload_id, MultipartUpload={"Parts": parts}, **complete
    )
    return done, answers


def test_put_if_none_match_over_an_existing_object(s3_backend: S3Backend, backend_bucket: str) -> None:
    client = s3_backend.client()
    client.put_object(Bucket=backend_bucket, Key="k", Body=b"first")
    if s3_backend.name == "moto":
        with pytest.raises(ClientError) as refused:
            client.put_object(Bucket=backend_bucket, Key="k", Body=b"second", IfNoneMatch="*")
        assert code(refused) == "PreconditionFailed"
        assert client.get_object(Bucket=backend_bucket, Key="k")["Body"].read() == b"first"
    else:  # accepted, and the object is replaced
        client.put_object(Bucket=backend_bucket, Key="k", Body=b"second", IfNoneMatch="*")
        assert client.get_object(Bucket=backend_bucket, Key="k")["Body"].read() == b"second"
    # If-Match with a wrong ETag: the same picture.
    if s3_backend.name == "moto":
        with pytest.raises(ClientError, match="PreconditionFailed"):
            client.put_object(Bucket=backend_bucket, Key="k", Body=b"third", IfMatch='"0000"')
    else:
        client.put_object(Bucket=backend_bucket, Key="k", Body=b"third", IfMatch='"0000"')


def test_complete_if_none_match_over_an_existing_object(s3_backend: S3Backend, backend_bucket: str) -> None:
    client = s3_backend.client()
    client.put_object(Bucket=backend_bucket, Key="mp", Body=b"first")
    if s3_backend.name == "moto":
        with pytest.raises(ClientError) as refused:
            multipart(client, backend_bucket, "mp", IfNoneMatch="*")
        assert code(refused) == "PreconditionFailed"
        assert client.head_object(Bucket=backend_bucket, Key="mp")["ContentLength"] == len(b"first")
    else:
        multipart(client, backend_bucket, "mp", IfNoneMatch="*")
        assert client.head_object(Bucket=backend_bucket, Key="mp")["ContentLength"] == len(DATA)


def test_multipart_etag_and_sha256(s3_backend: S3Backend, backend_bucket: str) -> None:
    client = s3_backend.client()
    done, answers = multipart(client, backend_bucket, "mp")
    head = client.head_object(Bucket=backend_bucket, Key="mp", ChecksumMode="ENABLED")
    assert done["ETag"].strip('"') == PART_MD5S_ETAG  # both answer AWS's shape on completion...
    composite = sha256(b"".join(hashlib.sha256(part).digest() for part in PARTS))
    if s3_backend.name == "moto":
        assert head["ETag"].strip('"') == PART_MD5S_ETAG
        assert [a["ChecksumSHA256"] for a in answers] == [sha256(part) for part in PARTS]
        assert head["ChecksumSHA256"] == composite  # AWS appends "-3"
    else:
        assert head["ETag"].strip('"') == WHOLE_MD5  # ...but rclone's HEAD reports the whole object's MD5
        assert all("ChecksumSHA256" not in a for a in answers) and "ChecksumSHA256" not in head


def test_sha256_on_a_single_put(s3_backend: S3Backend, backend_bucket: str) -> None:
    client = s3_backend.client()
    put = client.put_object(Bucket=backend_bucket, Key="k", Body=b"hello", ChecksumAlgorithm="SHA256")
    head = client.head_object(Bucket=backend_bucket, Key="k", ChecksumMode="ENABLED")
    assert head["ChecksumSHA256"] == sha256(b"hello")  # stored and returned by both
    assert ("ChecksumSHA256" in put) is (s3_backend.name == "moto")  # rclone's PUT answer leaves it out
    # A SHA-256 that does not match the body: AWS refuses it (BadDigest); neither server does.
    wrong = sha256(b"another body")
    client.put_object(Bucket=backend_bucket, Key="wrong", Body=b"hello", ChecksumSHA256=wrong)
    stored = client.head_object(Bucket=backend_bucket, Key="wrong", ChecksumMode="ENABLED").get("ChecksumSHA256")
    assert stored == (None if s3_backend.name == "moto" else wrong)  # rclone keeps the client's claim


def test_content_md5_that_does_not_match(s3_backend: S3Backend, backend_bucket: str) -> None:
    client = s3_backend.client()
    wrong_md5 = base64.b64encode(hashlib.md5(b"another body").digest()).decode()
    if s3_backend.name == "moto":  # moto checks no digest at all
        client.put_object(Bucket=backend_bucket, Key="k", Body=b"hello", ContentMD5=wrong_md5)
    else:
        with pytest.raises(ClientError, match="BadDigest"):
            client.put_object(Bucket=backend_bucket, Key="k", Body=b"hello", ContentMD5=wrong_md5)


def test_boto3_default_checksums_over_http(s3_backend: S3Backend, backend_bucket: str) -> None:
    # boto3 >= 1.36 adds a CRC32 to every PUT (in a header over HTTP; over HTTPS an aws-chunked trailer,
    # which rclone refuses: tests/integration/test_s3_capabilities.py).
    client = s3_backend.client()
    client.put_object(Bucket=backend_bucket, Key="k", Body=b"hello")
    assert client.head_object(Bucket=backend_bucket, Key="k", ChecksumMode="ENABLED")["ChecksumCRC32"] == "NhCmhg=="


def test_versioning(s3_backend: S3Backend, backend_bucket: str) -> None:
    client = s3_backend.client()
    status = client.get_bucket_versioning(Bucket=backend_bucket).get("Status")
    if s3_backend.name == "moto":
        assert status == "Enabled"
    else:
        assert status is None
        with pytest.raises(ClientError) as refused:
            client.put_bucket_versioning(Bucket=backend_bucket, VersioningConfiguration={"Status": "Enabled"})
        assert code(refused) == "NotImplemented"


def test_object_lock_and_bucket_configuration(s3_backend: S3Backend) -> None:
    client = s3_backend.client()
    bucket = f"{s3_backend.new_bucket(client)}-lock"
    client.create_bucket(Bucket=bucket, ObjectLockEnabledForBucket=True)  # both accept it
    lock = client.get_object_lock_configuration(Bucket=bucket)["ObjectLockConfiguration"]
    encryption = {"Rules": [{"ApplyServerSideEncryptionByDefault": {"SSEAlgorithm": "AES256"}}]}
    if s3_backend.name == "moto":
        assert lock == {"ObjectLockEnabled": "Enabled"}
        client.put_bucket_encryption(Bucket=bucket, ServerSideEncryptionConfiguration=encryption)
        client.put_bucket_tagging(Bucket=bucket, Tagging={"TagSet": [{"Key": "a", "Value": "b"}]})
    else:
        # rclone ignores the flag, answers bucket sub-resources it does not know as an empty listing
        # (200), and takes a PUT of one for CreateBucket.
        assert lock == {}
        assert client.get_bucket_encryption(Bucket=bucket)["ServerSideEncryptionConfiguration"] == {}
        for put in (
            lambda: client.put_bucket_encryption(Bucket=bucket, ServerSideEncryptionConfiguration=encryption),
            lambda: client.put_bucket_tagging(Bucket=bucket, Tagging={"TagSet": [{"Key": "a", "Value": "b"}]}),
            lambda: client.put_public_access_block(
                Bucket=bucket, PublicAccessBlockConfiguration={"BlockPublicAcls": True}
            ),
        ):
            with pytest.raises(ClientError, match="BucketAlreadyExists"):
                put()


def test_rawvault_auto_creates_a_bucket_on_rclone_only_in_auto_mode(
    s3_backend: S3Backend, caplog: pytest.LogCaptureFixture
) -> None:
    # ensure_bucket configures a new bucket (public access block, versioning, encryption, tags): rclone implements
    # none of these. compatibility auto (degrade) creates the bucket and warns, naming what is weaker; strict and aws
    # refuse, naming every gap, and remove the bucket again (it is empty and this run created it).
    client = s3_backend.client()
    name = f"{s3_backend.new_bucket(client)}-auto"
    if s3_backend.name == "moto":
        assert ensure_bucket(client, name, "us-east-1", True) is True
        return
    with pytest.raises(S3PermanentError) as refused:
        ensure_bucket(client, name, "us-east-1", True)
    for gap in ("the public access block (BucketAlreadyExists", "versioning (NotImplemented", "tags (BucketAlr"):
        assert gap in str(refused.value)
    assert "the new bucket was deleted again" in str(refused.value) and "compatibility: auto" in str(refused.value)
    assert name not in [bucket["Name"] for bucket in client.list_buckets()["Buckets"]]
    with caplog.at_level("WARNING", logger="rawvault.s3.buckets"):
        assert ensure_bucket(client, name, "us-east-1", True, degrade=True) is True
    assert f"cannot configure versioning on new bucket {name}: the store answered NotImplemented" in caplog.text
    client.put_object(Bucket=name, Key="a.raw", Body=b"data")  # the bucket works


def test_a_bucket_that_holds_data_is_never_removed_after_a_failed_configuration(rclone_s3_server: Any) -> None:
    # Another run uploads into the new bucket while this one configures it (strict: the configuration fails).
    backend = backend_of("rclone", rclone_s3_server)
    client = backend.client()
    name = f"{backend.new_bucket(client)}-busy"

    def another_run_uploads(**_kwargs: Any) -> None:
        backend.client().put_object(Bucket=name, Key="other-run.raw", Body=b"uploaded meanwhile")

    client.meta.events.register("after-call.s3.CreateBucket", another_run_uploads)
    with pytest.raises(S3PermanentError, match=r"holds data already .* left as it is"):
        ensure_bucket(client, name, "us-east-1", True)
    assert client.get_object(Bucket=name, Key="other-run.raw")["Body"].read() == b"uploaded meanwhile"


def test_encryption_headers_on_put(s3_backend: S3Backend, backend_bucket: str, rclone_s3_server: Any) -> None:
    client = s3_backend.client()
    put = client.put_object(Bucket=backend_bucket, Key="k", Body=b"plain text", ServerSideEncryption="AES256")
    assert client.head_object(Bucket=backend_bucket, Key="k")["ServerSideEncryption"] == "AES256"  # both say so
    kms = client.put_object(Bucket=backend_bucket, Key="kms", Body=b"x", ServerSideEncryption="aws:kms")
    assert kms["ETag"].strip('"') == hashlib.md5(b"x").hexdigest()  # AWS gives no MD5 ETag under SSE-KMS
    if s3_backend.name == "rclone":
        assert "ServerSideEncryption" not in put  # an echo of stored metadata: the file on disk is plain
        assert (rclone_s3_server.data_path / backend_bucket / "k").read_bytes() == b"plain text"


def test_multipart_listings(s3_backend: S3Backend, backend_bucket: str) -> None:
    client = s3_backend.client()
    if s3_backend.name == "moto":
        assert "Uploads" not in client.list_multipart_uploads(Bucket=backend_bucket)
    else:  # no unfinished upload at all: an error instead of an empty list
        with pytest.raises(ClientError, match="NoSuchUpload"):
            client.list_multipart_uploads(Bucket=backend_bucket)
    upload_id = client.create_multipart_upload(Bucket=backend_bucket, Key="mp", ChecksumAlgorithm="SHA256")["UploadId"]
    client.upload_part(
        Bucket=backend_bucket, Key="mp", UploadId=upload_id, PartNumber=1, Body=PARTS[0], ChecksumAlgorithm="SHA256"
    )
    (upload,) = client.list_multipart_uploads(Bucket=backend_bucket)["Uploads"]
    (part,) = client.list_parts(Bucket=backend_bucket, Key="mp", UploadId=upload_id)["Parts"]
    assert upload["Key"] == "mp" and (part["PartNumber"], part["Size"]) == (1, PART)
    assert part["ETag"].strip('"') == hashlib.md5(PARTS[0]).hexdigest()
    assert "ChecksumSHA256" not in part  # neither lists a part's SHA-256 (AWS does)
    assert upload.get("ChecksumAlgorithm") == ("SHA256" if s3_backend.name == "moto" else None)
    client.abort_multipart_upload(Bucket=backend_bucket, Key="mp", UploadId=upload_id)


def test_user_metadata_keys(s3_backend: S3Backend, backend_bucket: str) -> None:
    client = s3_backend.client()
    client.put_object(Bucket=backend_bucket, Key="k", Body=b"x", Metadata={"md5": "abc", "raw-file-id": "r"})
    metadata = client.head_object(Bucket=backend_bucket, Key="k")["Metadata"]
    if s3_backend.name == "moto":
        assert metadata == {"md5": "abc", "raw-file-id": "r"}
    else:  # canonical HTTP header case: read metadata case-insensitively
        assert metadata == {"Md5": "abc", "Raw-File-Id": "r"}


def test_bucket_names_shorter_than_three_characters(s3_backend: S3Backend) -> None:
    with pytest.raises(ClientError, match="InvalidBucketName"):
        s3_backend.client().create_bucket(Bucket="ab")


def test_rclone_restart_keeps_objects_and_loses_unfinished_uploads() -> None:
    with RcloneS3Server() as server:
        backend = backend_of("rclone", server)
        client = backend.client()
        bucket = backend.new_bucket(client)
        client.put_object(Bucket=bucket, Key="kept.raw", Body=b"kept")
        upload_id = client.create_multipart_upload(Bucket=bucket, Key="mp")["UploadId"]
        client.upload_part(Bucket=bucket, Key="mp", UploadId=upload_id, PartNumber=1, Body=PARTS[0])
        port = server.port
        server.stop()
        server.start()
        assert server.port == port
        assert client.get_object(Bucket=bucket, Key="kept.raw")["Body"].read() == b"kept"
        with pytest.raises(ClientError, match="NoSuchUpload"):
            client.list_parts(Bucket=bucket, Key="mp", UploadId=upload_id)
