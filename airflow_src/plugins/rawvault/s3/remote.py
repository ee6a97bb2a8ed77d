"""Reading what is in S3, shared by ``restore`` and ``verify``: URLs, ``head_object``, the manifest.

Plain functions of a boto3 client; no Airflow, no database.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from botocore.exceptions import ClientError

from rawvault.s3 import manifest as manifest_mod
from rawvault.s3.errors import classify, is_not_found

# Server-side encryption whose ETag is not the MD5 of the content.
KMS_ENCRYPTION = frozenset({"aws:kms", "aws:kms:dsse"})


class S3UrlError(ValueError):
    """A text that should be an ``s3://<bucket>/<key>`` URL is not one."""


def parse_s3_url(url: str) -> tuple[str, str]:
    """``s3://<bucket>/<key>`` as ``(bucket, key)``; the key may be empty or a prefix ending in ``/``."""
    if not isinstance(url, str) or not url.startswith("s3://"):
        raise S3UrlError(f"{url!r} is not an S3 URL: write s3://<bucket>/<key>")
    bucket, _, key = url[len("s3://") :].partition("/")
    if not bucket:
        raise S3UrlError(f"{url!r} names no bucket: write s3://<bucket>/<key>")
    return bucket, key


def s3_url(bucket: str, key: str) -> str:
    """``s3://<bucket>/<key>``."""
    return f"s3://{bucket}/{key}"


def head(client: Any, bucket: str, key: str, version_id: str | None = None) -> dict[str, Any] | None:
    """``head_object`` (with S3's checksum) of ``key``, or ``None`` when it does not exist (or is deleted).

    Other failures raise an :class:`~rawvault.s3.errors.S3BackupError` naming the object.
    """
    args: dict[str, Any] = {"Bucket": bucket, "Key": key, "ChecksumMode": "ENABLED"}
    if version_id:
        args["VersionId"] = version_id
    try:
        return client.head_object(**args)
    except ClientError as error:
        if is_not_found(error):
            return None
        raise classify(error, f"checking {s3_url(bucket, key)}") from error
    except Exception as error:
        raise classify(error, f"checking {s3_url(bucket, key)}") from error


def etag_of(response: Mapping[str, Any]) -> str:
    """The ETag of a ``head_object``/``get_object`` answer, without quotes."""
    return str(response.get("ETag", "")).strip('"')


def is_kms(response: Mapping[str, Any]) -> bool:
    """Whether S3's ETag of this object is not an MD5 of its content (SSE-KMS, SSE-C)."""
    return response.get("ServerSideEncryption") in KMS_ENCRYPTION or bool(response.get("SSECustomerAlgorithm"))


def version_of(response: Mapping[str, Any]) -> str | None:
    """The object's version id, ``None`` in an unversioned bucket."""
    version = response.get("VersionId")
    return version if version and version != "null" else None


class ManifestUnreadableError(ValueError):
    """The object where a manifest belongs is not a rawvault manifest."""


def read_manifest(client: Any, bucket: str, key: str) -> tuple[dict[str, Any], str] | None:
    """The manifest at ``key`` and its S3 ETag, or ``None`` when there is none.

    Raises :class:`ManifestUnreadableError` when the object is not a rawvault
    manifest and an :class:`~rawvault.s3.errors.S3BackupError` when S3 fails.
    """
    try:
        response = client.get_object(Bucket=bucket, Key=key)
        body = response["Body"].read()
    except ClientError as error:
        if is_not_found(error):
            return None
        raise classify(error, f"reading manifest {s3_url(bucket, key)}") from error
    except Exception as error:
        raise classify(error, f"reading manifest {s3_url(bucket, key)}") from error
    try:
        return manifest_mod.decode(body), etag_of(response)
    except ValueError as error:
        raise ManifestUnreadableError(f"{s3_url(bucket, key)} is not a readable rawvault manifest ({error})") from None
