"""One object in S3: read its metadata, delete one version, and THE rule "does it hold this recorded file".

:func:`check_object` is the only place that decides whether an object holds
a recorded file; the upload (objects found before uploading, and each object
right after its upload), the restore (before downloading) and the audit all
ask it. The rule, in order:

1. the object exists and has the recorded size;
2. its ETag equals the recorded MD5-based ETag (``etag``), or the whole
   file's recorded MD5 (``md5``: stores such as ``rclone serve s3`` report
   that for multipart objects, and so does any store for a single PUT; it
   proves the content as well as AWS's ETag does): done. An object that is
   not KMS-encrypted, on a store whose ETags follow one of these rules, and
   has another ETag holds other content;
3. an *opaque* ETag, one that is not an MD5 of the content: SSE-KMS (or
   SSE-C), or any object of a store whose multipart ETags have another shape
   (``etag_shape`` :attr:`~rawvault.s3.capabilities.EtagShape.OTHER`, as its
   probe recorded it; the callers pass it). The object is the one the
   manifest vouches for (``manifest``) when its ETag is the S3 ETag the
   manifest recorded after verifying it and its SHA-256 is the one recorded
   there too;
4. otherwise, with the local file at hand (the upload), S3's SHA-256
   (composite for multipart) must equal the local file's, whose size, MD5 and
   ETag must still be the recorded ones (``checksum``); without a SHA-256 in
   S3, or without a local file (restore, audit), the object cannot be
   verified by its metadata alone (``cannot be verified``: the upload then
   reads a non-KMS object back, :func:`rawvault.s3.readback.check_or_read_back`).

Its other half, :func:`check_content`, decides whether the bytes of an object
read back (a restore's download, a scrub's re-read) are the recorded file:
size, MD5 and the ETag recomputed with the recorded part size, and S3's
SHA-256 when one is recorded and was computed. Metadata can be stale or
forged; the bytes cannot.

Plain functions of a boto3 client; no Airflow, no database.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any, TypeVar

from botocore.exceptions import ClientError

from rawvault.digests import Digests, digest_file, split_checksum
from rawvault.s3.capabilities import EtagShape
from rawvault.s3.client import S3Client
from rawvault.s3.errors import (
    LocalFileChangedError,
    botocore_cause,
    classify,
    error_code,
    is_access_error,
    is_not_found,
)
from rawvault.s3.keys import s3_url
from rawvault.s3.permissions import POLICY_FILE, resource_arn

log = logging.getLogger(__name__)
T = TypeVar("T")

# Server-side encryption whose ETag is not the MD5 of the content.
KMS_ENCRYPTION = frozenset({"aws:kms", "aws:kms:dsse"})


def head(client: S3Client, bucket: str, key: str, version_id: str | None = None) -> dict[str, Any] | None:
    """``head_object`` (with S3's checksum) of ``key``, or ``None`` when it does not exist (or is deleted).

    Other failures raise an :class:`~rawvault.s3.errors.S3BackupError` naming the object.
    """
    args: dict[str, Any] = {"Bucket": bucket, "Key": key, "ChecksumMode": "ENABLED"}
    if version_id:
        args["VersionId"] = version_id
    return unless_missing(lambda: dict(client.head_object(**args)), "checking", bucket, key)


def unless_missing(request: Callable[[], T], action: str, bucket: str, key: str) -> T | None:
    """``request()``, or ``None`` when S3 answers that ``key`` does not exist (or is deleted).

    Every other failure raises an :class:`~rawvault.s3.errors.S3BackupError`
    that says ``action`` and names the object.
    """
    try:
        return request()
    except ClientError as error:
        if is_not_found(error):
            return None
        raise classify(error, f"{action} {s3_url(bucket, key)}", bucket=bucket, key=key) from error
    except Exception as error:
        raise classify(error, f"{action} {s3_url(bucket, key)}", bucket=bucket, key=key) from error


def etag_of(response: Mapping[str, Any]) -> str:
    """The ETag of a ``head_object``/``get_object``/``put_object`` answer, without quotes."""
    return str(response.get("ETag", "")).strip('"')


def is_kms(response: Mapping[str, Any]) -> bool:
    """Whether S3's ETag of this object is not an MD5 of its content (SSE-KMS, SSE-C)."""
    return response.get("ServerSideEncryption") in KMS_ENCRYPTION or bool(response.get("SSECustomerAlgorithm"))


def version_of(response: Mapping[str, Any]) -> str | None:
    """The object's version id, ``None`` in an unversioned bucket."""
    version = response.get("VersionId")
    return str(version) if version and version != "null" else None


def delete_version(client: S3Client, bucket: str, key: str, response: Mapping[str, Any]) -> str:
    """Delete the object version ``response`` describes (one this run wrote and could not verify); return a note.

    Only ever called for an object the caller uploaded itself: an object that
    existed before is never deleted. Under Object Lock a version cannot be
    deleted before its retention ends (S3 answers AccessDenied): when it is
    still the key's current version it is hidden behind a delete marker
    instead, so the key is free for the next run, and the note says that the
    bad version stays, locked.
    """
    version = version_of(response)
    args: dict[str, str] = {"Bucket": bucket, "Key": key}
    if version:
        args["VersionId"] = version
    try:
        client.delete_object(**args)  # type: ignore[arg-type]
    except Exception as error:
        log.warning("could not delete the unverified object s3://%s/%s: %s", bucket, key, error)
        cause = botocore_cause(error) or error
        why = type(error).__name__
        if is_access_error(cause):
            if version and _hidden_behind_delete_marker(client, bucket, key, version):
                return (
                    f"its version {version} could not be deleted ({error_code(cause) or 'access denied'}: under Object "
                    "Lock it stays until its retention ends, or the IAM identity lacks s3:DeleteObjectVersion); it "
                    "stays in the bucket, hidden behind a delete marker, so the key is free for the next run"
                )
            action = "s3:DeleteObjectVersion" if version else "s3:DeleteObject"
            why = (
                f"{error_code(cause) or 'access denied'}: the IAM identity lacks {action} on "
                f"{resource_arn('delete_object', bucket, key)}, see {POLICY_FILE}"
            )
        return f"deleting the unverified object failed ({why}): delete s3://{bucket}/{key} by hand"
    log.warning("deleted the unverified object s3://%s/%s (version %s)", bucket, key, version or "-")
    return "the uploaded object was deleted again"


def _hidden_behind_delete_marker(client: S3Client, bucket: str, key: str, version: str) -> bool:
    """Put a delete marker over ``version`` if it is still the key's current version; whether that worked."""
    try:
        current = head(client, bucket, key)
        if current is None or version_of(current) != version:
            return False  # another version is current now: a marker would hide that one
        client.delete_object(Bucket=bucket, Key=key)
    except Exception as error:
        log.warning("could not hide the unverified version %s of s3://%s/%s: %s", version, bucket, key, error)
        return False
    log.warning(
        "hid the unverified version %s of s3://%s/%s behind a delete marker (it stays locked)", version, bucket, key
    )
    return True


class VerificationMode(StrEnum):
    """How an object was shown to hold the recorded content."""

    ETAG = "etag"
    WHOLE_MD5 = "md5"  # the ETag is the MD5 of the whole object (a store's multipart ETag, or a single PUT)
    CHECKSUM = "checksum"
    MANIFEST = "manifest"
    CONTENT = "content"  # the object's bytes were read back and hashed


class VerdictKind(StrEnum):
    """What :func:`check_object` found."""

    OK = "ok"
    MISSING = "missing"
    SIZE_DIFFERS = "size differs"
    ETAG_DIFFERS = "ETag differs"
    CHECKSUM_DIFFERS = "checksum differs"
    CONTENT_DIFFERS = "content differs"  # its bytes, read back, are not the recorded file
    CANNOT_VERIFY = "cannot be verified"


@dataclass(frozen=True)
class ExpectedObject:
    """One recorded file and where it belongs in S3: what the object at ``key`` must hold."""

    path: str  # the file_info path
    key: str
    size: int
    md5: str
    etag: str  # recorded MD5-based ETag for the part size
    s3_etag: str | None = None  # the ETag S3 reported at upload (from the manifest), differs under SSE-KMS
    checksum_sha256: str | None = None  # S3's SHA-256 at upload (from the manifest), base64


@dataclass(frozen=True)
class ObjectVerdict:
    """The answer of :func:`check_object`: ok and how, or what is wrong as a readable ``problem``."""

    kind: VerdictKind
    how: VerificationMode | None = None
    problem: str = ""
    expected: str = ""  # the value compared, for reports
    actual: str = ""
    note: str = ""  # what it was compared with, when not the recorded file_info

    @property
    def ok(self) -> bool:
        """The object holds the recorded file."""
        return self.kind is VerdictKind.OK


_OK_BY_ETAG = ObjectVerdict(VerdictKind.OK, VerificationMode.ETAG)
_OK_BY_WHOLE_MD5 = ObjectVerdict(VerdictKind.OK, VerificationMode.WHOLE_MD5)
_CANNOT_VERIFY_WITHOUT_DOWNLOAD = (
    "its ETag is not an MD5 of its content (SSE-KMS, or the store's own ETags) and no S3 ETag is recorded for it "
    "(manifest missing?): cannot be verified without downloading; run the restore command to check it"
)


def check_object(
    response: Mapping[str, Any] | None,
    expected: ExpectedObject,
    *,
    local_file: Path | None = None,
    part_size: int | None = None,
    etag_shape: EtagShape = EtagShape.PART_MD5S,
) -> ObjectVerdict:
    """Whether the object (its ``head_object`` answer, ``None``: missing) holds ``expected``; see the module doc.

    ``local_file`` (with the ``part_size`` of the recorded ETag) is the local
    copy of the file: it is read only for an object with an opaque ETag the
    manifest does not vouch for, and S3 reports a SHA-256 of. ``etag_shape``
    is the store's multipart ETag shape as probed (the default: AWS's).
    Raises :class:`~rawvault.s3.errors.LocalFileChangedError` when that local
    file no longer matches the recorded size, MD5 and ETag.
    """
    if response is None:
        return ObjectVerdict(
            VerdictKind.MISSING, problem="missing (no such key, or deleted)", expected=f"{expected.size} bytes",
            actual="no object",
        )  # fmt: skip
    size = response.get("ContentLength")
    if size != expected.size:
        return ObjectVerdict(
            VerdictKind.SIZE_DIFFERS, problem=f"size differs: {size} bytes in S3, {expected.size} recorded",
            expected=f"{expected.size} bytes", actual=f"{size} bytes",
        )  # fmt: skip
    etag = etag_of(response)
    if etag == expected.etag:
        return _OK_BY_ETAG
    if etag == expected.md5:
        return _OK_BY_WHOLE_MD5
    if not (is_kms(response) or etag_shape is EtagShape.OTHER):
        return ObjectVerdict(
            VerdictKind.ETAG_DIFFERS,
            problem=f"ETag differs: {etag} in S3, {expected.etag} recorded (the object was replaced or corrupted)",
            expected=expected.etag, actual=etag,
        )  # fmt: skip
    by_manifest = _against_manifest(response, expected)
    # Proven when S3's SHA-256 is the recorded one too; a record without one rests on the ETag alone,
    # which is enough only when there is no local file to prove the content with.
    proven = response.get("ChecksumSHA256") == expected.checksum_sha256 or local_file is None
    if by_manifest is not None and by_manifest.ok and proven:
        return by_manifest
    if local_file is not None:
        if part_size is None:
            raise ValueError("check_object needs the part_size of the recorded ETag to read the local file")
        return _against_local_file(response, expected, local_file, part_size)
    if by_manifest is not None:
        return by_manifest
    return ObjectVerdict(VerdictKind.CANNOT_VERIFY, problem=_CANNOT_VERIFY_WITHOUT_DOWNLOAD)


def _against_manifest(response: Mapping[str, Any], expected: ExpectedObject) -> ObjectVerdict | None:
    """An opaque ETag: the object the manifest recorded after verifying it (same S3 ETag, SHA-256); None: no record."""
    if not expected.s3_etag:
        return None
    etag = etag_of(response)
    if etag != expected.s3_etag:
        return ObjectVerdict(
            VerdictKind.ETAG_DIFFERS,
            problem=(
                f"ETag differs: {etag} in S3, {expected.s3_etag} recorded in the manifest (the object was replaced)"
            ),
            expected=expected.s3_etag, actual=etag,
            note="SSE-KMS: compared with the manifest" if is_kms(response) else "compared with the manifest",
        )  # fmt: skip
    remote = response.get("ChecksumSHA256")
    if expected.checksum_sha256 and remote != expected.checksum_sha256:
        return ObjectVerdict(
            VerdictKind.CHECKSUM_DIFFERS,
            problem=f"SHA-256 differs: {remote} in S3, {expected.checksum_sha256} recorded in the manifest",
            expected=expected.checksum_sha256 or "", actual=remote or "", note="SHA-256 differs from the manifest",
        )  # fmt: skip
    return ObjectVerdict(VerdictKind.OK, VerificationMode.MANIFEST)


def _against_local_file(
    response: Mapping[str, Any], expected: ExpectedObject, local_file: Path, part_size: int
) -> ObjectVerdict:
    """An opaque ETag: S3's SHA-256 must be the local file's, and the local file still the recorded one."""
    value = response.get("ChecksumSHA256")
    remote, remote_parts = split_checksum(value)
    if remote is None:  # nothing to compare the local file with: do not read it
        return ObjectVerdict(
            VerdictKind.CANNOT_VERIFY,
            problem="S3 reports no SHA-256 checksum for it, and its ETag is not an MD5 of its content (SSE-KMS, or "
            "the store's own ETags), so its content cannot be verified by its metadata",
        )
    try:
        digests = digest_file(local_file, part_size, sha256=True)
    except OSError as error:
        raise LocalFileChangedError(
            f"cannot read the local backup copy {local_file} to verify {expected.path} by SHA-256 ({error.strerror})"
        ) from None
    if (digests.size, digests.md5, digests.etag) != (expected.size, expected.md5, expected.etag):
        raise LocalFileChangedError(
            f"local backup copy {local_file} (size {digests.size}, MD5 {digests.md5}) no longer matches what was "
            f"recorded for {expected.path} (size {expected.size}, MD5 {expected.md5}): it changed after checksumming"
        )
    if remote != digests.sha256 or (remote_parts is not None and remote_parts != (digests.parts or 1)):
        return ObjectVerdict(
            VerdictKind.CHECKSUM_DIFFERS,
            problem=f"its SHA-256 checksum {value} differs from the local file's {digests.sha256}",
            expected=digests.sha256 or "", actual=value or "",
        )  # fmt: skip
    return ObjectVerdict(VerdictKind.OK, VerificationMode.CHECKSUM)


def check_content(digests: Digests, expected: ExpectedObject, *, sha256: bool = False) -> ObjectVerdict:
    """Whether the bytes read back from an object (their ``digests``) are the recorded file ``expected``.

    ``digests`` were computed with the recorded part size; with ``sha256`` (and a
    SHA-256 recorded in the manifest) S3's SHA-256, composite for multipart, is
    compared too. Every difference is named in ``problem``.
    """
    differences: list[tuple[str, str, str]] = []  # (what, found, recorded)
    if digests.size != expected.size:
        differences.append(("size", f"{digests.size} bytes", str(expected.size)))
    if digests.md5 != expected.md5:
        differences.append(("MD5", digests.md5, expected.md5))
    if digests.etag != expected.etag:
        differences.append(("ETag", digests.etag, expected.etag))
    if sha256 and expected.checksum_sha256:
        recorded, recorded_parts = split_checksum(expected.checksum_sha256)
        if digests.sha256 != recorded or (recorded_parts is not None and recorded_parts != (digests.parts or 1)):
            differences.append(("SHA-256", digests.sha256 or "-", expected.checksum_sha256))
    if not differences:
        return ObjectVerdict(VerdictKind.OK, VerificationMode.CONTENT)
    what, found, recorded = differences[0]
    return ObjectVerdict(
        VerdictKind.CONTENT_DIFFERS,
        problem="the downloaded data has " + "; ".join(f"{w} {f}, recorded {r}" for w, f, r in differences),
        expected=f"{what} {recorded}", actual=f"{what} {found}",
    )  # fmt: skip
