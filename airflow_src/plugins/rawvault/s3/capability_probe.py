"""Probe one bucket for the S3 features rawvault relies on: which does this store really have.

:func:`probe_bucket` writes throw-away objects under
``.rawvault-probe/<uuid>/`` (about 5 MiB, a dozen requests) and deletes
exactly the object versions it wrote (under Object Lock it cannot: it leaves
a delete marker and says so in the notes). In order:

1. a PUT with boto3's default checksums (a store that rejects them is probed
   further with ``client_without_checksums()``);
2. a PUT with a SHA-256 checksum, read back by HEAD with ``ChecksumMode``;
3. a PUT whose SHA-256 does not match its body (refused when the store checks);
4. a PUT with ``If-None-Match: *`` over the first object;
5. a multipart upload of two parts (5 MiB + 1 KiB): the ETag shape and the
   SHA-256 HEAD reports, and the ETag CompleteMultipartUpload answered;
6. a second multipart upload to the same key completed with ``If-None-Match: *``;
7. the bucket's versioning, Object Lock and default encryption (read only).

Features are judged by what the store *does*, never by what it answers:
``rclone serve s3`` accepts ``If-None-Match`` and replaces the object anyway,
answers ``CompleteMultipartUpload`` with an AWS-style ETag but reports the
whole object's MD5 on HEAD, and answers a lock or encryption query with an
empty listing.
"""

from __future__ import annotations

import base64
import hashlib
import io
import logging
import os
import uuid
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

from botocore.exceptions import ClientError

from rawvault.digests import digest_stream
from rawvault.s3.capabilities import CHECKSUM_ALGORITHM, Conditional, EtagShape, StoreCapabilities, endpoint_of
from rawvault.s3.errors import S3AccessDeniedError, classify, error_code, is_access_error, is_conflict
from rawvault.s3.objects import etag_of
from rawvault.s3.retention import read_object_lock

log = logging.getLogger(__name__)

PROBE_PREFIX = ".rawvault-probe/"
FIRST_PART_BYTES = 5 * 1024 * 1024  # S3's smallest part that is not the last
LAST_PART_BYTES = 1024
NO_ENCRYPTION_CODES = frozenset({"ServerSideEncryptionConfigurationNotFoundError"})


def _sha256(data: bytes) -> str:
    return base64.b64encode(hashlib.sha256(data).digest()).decode()


def _now_ms() -> datetime:
    # MongoDB keeps milliseconds: a probe time read back must equal the one recorded.
    now = datetime.now(UTC)
    return now.replace(microsecond=now.microsecond // 1000 * 1000)


def _is_transient(error: ClientError) -> bool:
    return classify(error, "probing").resumable


class _Probe:
    """One probe run: its client, its key prefix, and every object version it wrote (to delete them after)."""

    def __init__(self, client: Any, bucket: str, object_args: Mapping[str, Any]) -> None:
        self.client = client
        self.bucket = bucket
        self.prefix = f"{PROBE_PREFIX}{uuid.uuid4().hex}/"
        self.object_args = dict(object_args)
        self.written: list[tuple[str, str | None]] = []
        self.open_uploads: list[tuple[str, str]] = []
        self.notes: list[str] = []

    def call(self, operation: str, **args: Any) -> dict[str, Any]:
        """One request; a store's refusal is a ``ClientError`` for the step to judge.

        Access errors, transient ones and anything else stop the probe, classified (the upload would meet them too).
        """
        try:
            return getattr(self.client, operation)(Bucket=self.bucket, **args)
        except ClientError as error:
            if is_access_error(error) or _is_transient(error):
                raise classify(error, f"probing s3://{self.bucket} ({operation})") from error
            raise
        except Exception as error:
            raise classify(error, f"probing s3://{self.bucket} ({operation})") from error

    def put(self, name: str, body: bytes, **args: Any) -> dict[str, Any]:
        key = self.prefix + name
        response = self.call("put_object", Key=key, Body=body, **self.object_args, **args)
        self.written.append((key, response.get("VersionId")))
        return response

    def note(self, step: str, error: ClientError) -> None:
        self.notes.append(f"{step}: {error_code(error) or 'error'}")

    def default_checksums(self) -> bool:
        try:
            self.put("default-checksums", b"rawvault probe: boto3 default checksums")
            return True
        except ClientError as error:
            self.note("PUT with boto3's default checksums", error)
            return False

    def sha256_put(self) -> bool:
        body = os.urandom(4096)
        try:
            self.put("sha256", body, ChecksumAlgorithm=CHECKSUM_ALGORITHM)
            head = self.call("head_object", Key=self.prefix + "sha256", ChecksumMode="ENABLED")
        except ClientError as error:
            self.note("PUT with a SHA-256 checksum", error)
            return False
        return head.get("ChecksumSHA256") == _sha256(body)

    def checksum_validated(self) -> bool:
        try:
            self.put("wrong-sha256", b"rawvault probe: body", ChecksumSHA256=_sha256(b"another body"))
        except ClientError:
            return True  # BadDigest, XAmzContentChecksumMismatch, InvalidRequest: refused as it should be
        return False

    def _conditional(self, request: str, second_write: Callable[[], object]) -> Conditional:
        """How the store treats ``second_write`` (``request`` with If-None-Match on a key that exists)."""
        try:
            second_write()
        except ClientError as error:
            if is_conflict(error):
                return Conditional.ENFORCED
            self.note(f"{request} with If-None-Match", error)
            return Conditional.REFUSED
        return Conditional.IGNORED

    def conditional_put(self) -> Conditional:
        return self._conditional(
            "PUT", lambda: self.put("default-checksums", b"rawvault probe: second write", IfNoneMatch="*")
        )

    def multipart(self, checksums: dict[str, str]) -> tuple[EtagShape, bool, bool]:
        """``(ETag shape, SHA-256 reported, Complete's ETag equals HEAD's)`` of a two-part object."""
        key = self.prefix + "multipart"
        parts = [os.urandom(FIRST_PART_BYTES), os.urandom(LAST_PART_BYTES)]
        try:
            response = self._upload(key, parts, checksums)
            head = self.call("head_object", Key=key, ChecksumMode="ENABLED")
        except ClientError as error:
            self.note("multipart upload", error)
            return EtagShape.OTHER, False, False
        etag = etag_of(head)
        data = b"".join(parts)
        # What rawvault's digest engine expects of this upload (parts of the first part's size).
        expected = digest_stream(io.BytesIO(data), len(parts[0]), size=len(data), sha256=True)
        if etag == expected.etag:
            shape = EtagShape.PART_MD5S
        elif etag == expected.md5:
            shape = EtagShape.WHOLE_MD5
        else:
            shape = EtagShape.OTHER
        composite = expected.sha256
        reported = str(head.get("ChecksumSHA256") or "")
        sha256 = reported in (composite, f"{composite}-{len(parts)}", _sha256(data))
        return shape, sha256, etag_of(response) == etag

    def conditional_complete(self, checksums: dict[str, str]) -> Conditional:
        key = self.prefix + "multipart"
        return self._conditional(
            "CompleteMultipartUpload",
            lambda: self._upload(key, [b"rawvault probe: second multipart write"], checksums, IfNoneMatch="*"),
        )

    def _upload(self, key: str, parts: list[bytes], checksums: dict[str, str], **complete: Any) -> dict[str, Any]:
        upload_id = self.call("create_multipart_upload", Key=key, **self.object_args, **checksums)["UploadId"]
        self.open_uploads.append((key, upload_id))
        listed = []
        for number, body in enumerate(parts, start=1):
            part = self.call("upload_part", Key=key, UploadId=upload_id, PartNumber=number, Body=body, **checksums)
            entry = {"PartNumber": number, "ETag": part["ETag"]}
            if part.get("ChecksumSHA256"):
                entry["ChecksumSHA256"] = part["ChecksumSHA256"]
            listed.append(entry)
        response = self.call(
            "complete_multipart_upload", Key=key, UploadId=upload_id, MultipartUpload={"Parts": listed}, **complete
        )
        self.open_uploads.remove((key, upload_id))
        self.written.append((key, response.get("VersionId")))
        return response

    def versioning(self) -> str:
        try:
            status = self.call("get_bucket_versioning").get("Status")
        except ClientError as error:
            self.note("GetBucketVersioning", error)
            return "unknown"
        except S3AccessDeniedError:  # a read-only setting: without the permission it is unknown, nothing fails
            self.notes.append("GetBucketVersioning: access denied (s3:GetBucketVersioning)")
            return "unknown"
        return {"Enabled": "enabled", "Suspended": "suspended"}.get(str(status), "off")

    def object_lock(self) -> bool | None:
        try:
            return read_object_lock(self.client, self.bucket).enabled
        except Exception as error:
            self.notes.append(f"GetObjectLockConfiguration: {type(error).__name__}")
            return None

    def default_encryption(self) -> str | None:
        try:
            response = self.call("get_bucket_encryption")
        except ClientError as error:
            if error_code(error) not in NO_ENCRYPTION_CODES:
                self.note("GetBucketEncryption", error)
            return None
        except S3AccessDeniedError:
            self.notes.append("GetBucketEncryption: access denied (s3:GetEncryptionConfiguration)")
            return None
        rules = (response.get("ServerSideEncryptionConfiguration") or {}).get("Rules") or []
        default = (rules[0].get("ApplyServerSideEncryptionByDefault") or {}) if rules else {}
        return default.get("SSEAlgorithm")

    def cleanup(self) -> None:
        """Delete exactly what this probe wrote; never fail the probe over it."""
        for key, upload_id in self.open_uploads:
            try:
                self.client.abort_multipart_upload(Bucket=self.bucket, Key=key, UploadId=upload_id)
            except Exception as error:
                log.warning("probe: could not abort multipart upload %s of %s: %s", upload_id, key, error)
        kept = 0
        for key, version in dict.fromkeys(self.written):
            args = {"Bucket": self.bucket, "Key": key, **({"VersionId": version} if version else {})}
            try:
                self.client.delete_object(**args)
            except ClientError as error:
                if version is None or not is_access_error(error):
                    log.warning("probe: could not delete s3://%s/%s: %s", self.bucket, key, error_code(error))
                    continue
                kept += 1  # a version under Object Lock: hide it behind a delete marker until its retention ends
                try:
                    self.client.delete_object(Bucket=self.bucket, Key=key)
                except Exception as marker_error:
                    log.warning("probe: could not hide s3://%s/%s: %s", self.bucket, key, marker_error)
        if kept:
            self.notes.append(f"{kept} probe object version(s) under {self.prefix} stay until their retention ends")


def probe_bucket(
    client: Any,
    bucket: str,
    *,
    object_args: Mapping[str, Any] | None = None,
    client_without_checksums: Callable[[], Any] | None = None,
    now: datetime | None = None,
) -> StoreCapabilities:
    """Probe ``bucket`` (see the module docstring); access and transient S3 errors are raised, classified.

    ``object_args`` go to every PUT and CreateMultipartUpload as the upload
    sends them (storage class, encryption: SSE-KMS changes the ETag shape).
    ``client_without_checksums()`` gives a client of the same store built with
    :func:`rawvault.s3.capabilities.no_flexible_checksums_config`, used when
    the store rejects boto3's default checksums (without it, the remaining
    features count as missing).
    """
    run = _Probe(client, bucket, object_args or {})
    found: dict[str, Any] = {}
    try:
        found["default_checksums"] = run.default_checksums()
        if not found["default_checksums"]:
            if client_without_checksums is None:
                raise _DefaultChecksumsRejectedError
            run.client = client_without_checksums()
            run.put("default-checksums", b"rawvault probe: without default checksums")
        found["sha256_put"] = run.sha256_put()
        found["checksum_validated"] = found["sha256_put"] and run.checksum_validated()
        found["conditional_put"] = run.conditional_put()
        checksums = {"ChecksumAlgorithm": CHECKSUM_ALGORITHM} if found["sha256_put"] else {}
        shape, sha256, same_etag = run.multipart(checksums)
        found.update(multipart_etag=shape, sha256_multipart=sha256, complete_etag_matches_head=same_etag)
        found["conditional_complete"] = run.conditional_complete(checksums)
    except _DefaultChecksumsRejectedError:
        found.update(sha256_put=False, checksum_validated=False, sha256_multipart=False, multipart_etag=EtagShape.OTHER)
        found.update(conditional_put=Conditional.REFUSED, conditional_complete=Conditional.REFUSED)
        run.notes.append("no client without default checksums was given: nothing more was probed")
    finally:
        run.cleanup()
    caps = StoreCapabilities(
        endpoint=endpoint_of(client),
        bucket=bucket,
        probed_at=now or _now_ms(),
        versioning=run.versioning(),
        object_lock=run.object_lock(),
        default_encryption=run.default_encryption(),
        notes=tuple(run.notes),
        **found,
    )
    log.info("probed s3://%s: %s", bucket, caps.summary())
    return caps


class _DefaultChecksumsRejectedError(Exception):
    """The store refuses boto3's default checksums and no client without them was given."""
