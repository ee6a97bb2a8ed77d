"""Verify the object just uploaded by a HEAD; delete it again only where it is certainly this upload's.

The check is :func:`rawvault.s3.readback.check_or_read_back` (the one rule,
:func:`rawvault.s3.objects.check_object`, and a read back where metadata
proves nothing). An object that fails it is deleted again (its version, in a
versioned bucket) only when it is the one this upload wrote: on a store that
refuses overwrites, and when the HEAD shows the version (or, without
versions, the ETag) the PUT or CompleteMultipartUpload answered with. An object another
writer put there after the upload is never deleted: the upload fails and
says so. With ``backup.s3.object_lock``, an object whose HEAD shows no
retention (moto's server drops the retention given at CreateMultipartUpload)
gets it, counted from its ``LastModified``.

:func:`shows_recorded_file` decides which single PUTs may leave their
verification to the set's listing instead (:mod:`rawvault.s3.listed_check`).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from datetime import datetime
from pathlib import Path
from typing import Any

from rawvault.s3.capabilities import Conditional, StoreCapabilities, checksum_args, etag_shape_of
from rawvault.s3.client import S3Client
from rawvault.s3.errors import LocalFileChangedError, S3BackupError, VerificationError
from rawvault.s3.objects import (
    ExpectedObject,
    VerdictKind,
    VerificationMode,
    delete_version,
    etag_of,
    head,
    is_kms,
    version_of,
)
from rawvault.s3.put import ObjectSettings
from rawvault.s3.readback import check_or_read_back
from rawvault.s3.retention import apply_object_retention, object_retention_args, retention_from_head
from rawvault.s3.set_write import MultipartHooks, SetWrite, UploadedObject

log = logging.getLogger(__name__)


def verify_upload(
    client: S3Client,
    bucket: str,
    expected: ExpectedObject,
    source: Path,
    write: SetWrite,
    hooks: MultipartHooks,
    parts: tuple[int, int] = (0, 0),
    answer: Mapping[str, Any] | None = None,
) -> UploadedObject:
    """HEAD the object just uploaded from ``source`` and verify it (see the module docstring).

    ``parts``: the parts this run uploaded and resumed (multipart), for the
    record. ``answer``: S3's answer to the PUT or CompleteMultipartUpload,
    which tells this upload's object from one another writer put there since.
    Raises :class:`~rawvault.s3.errors.VerificationError` (or
    :class:`~rawvault.s3.errors.LocalFileChangedError`) when the object does
    not hold the recorded file.
    """
    response, mode = _verify_uploaded(client, bucket, expected, source, write.part_size, hooks, answer)
    if write.settings.object_lock is not None and retention_from_head(response) is None:
        _set_missing_retention(client, bucket, expected.key, response, write.settings)
    log.info(
        "%s: uploaded and verified by %s%s",
        expected.path,
        mode.value,
        f" ({parts[1]} of {sum(parts)} parts resumed from an earlier run)" if parts[1] else "",
    )
    return UploadedObject.of(
        expected, etag_of(response), response.get("ChecksumSHA256"), mode, uploaded=True, parts=parts
    )


def shows_recorded_file(answer: Mapping[str, Any], expected: ExpectedObject, caps: StoreCapabilities | None) -> bool:
    """Whether a single PUT's answer proves what its verifying HEAD would record, so the set's listing may stand in.

    Its ETag is the recorded MD5 (no SSE-KMS: S3's ETag would be no MD5).
    When a SHA-256 was sent, the answer has one and the store refuses a wrong
    one (AWS; ``caps.checksum_validated``), so the SHA-256 recorded from the
    answer is the one a HEAD reports (``rclone serve s3`` answers a PUT
    without it: its objects keep their HEAD); when none was sent, the answer
    must have none either (a HEAD would record it).
    """
    if etag_of(answer) not in (expected.etag, expected.md5) or is_kms(answer):
        return False
    if checksum_args(caps):  # a SHA-256 was sent
        return bool(answer.get("ChecksumSHA256")) and (caps is None or caps.checksum_validated)
    return not answer.get("ChecksumSHA256")


def _set_missing_retention(
    client: S3Client, bucket: str, key: str, response: Mapping[str, Any], settings: ObjectSettings
) -> None:
    """Give the object just verified the retention its HEAD does not show (counted from its ``LastModified``)."""
    lock = settings.object_lock
    assert lock is not None
    written = response.get("LastModified")
    until = object_retention_args(lock, written if isinstance(written, datetime) else None)["ObjectLockRetainUntilDate"]
    log.info(
        "s3://%s/%s: the store kept no retention from the upload; setting %s until %s", bucket, key, lock.mode, until
    )
    apply_object_retention(client, bucket, key, version_of(response), until, lock.mode)


def _verify_uploaded(
    client: S3Client,
    bucket: str,
    expected: ExpectedObject,
    source: Path,
    part_size: int,
    hooks: MultipartHooks,
    answer: Mapping[str, Any] | None,
) -> tuple[dict[str, Any], VerificationMode]:
    """Check the object just uploaded; delete it again when it does not hold the recorded file (and is ours)."""
    target = f"s3://{bucket}/{expected.key}"
    response = head(client, bucket, expected.key)
    if response is None:
        raise VerificationError(
            f"{target} is missing right after its upload of {expected.path} succeeded: something deleted it (a "
            "lifecycle rule, another writer?); nothing was recorded as done, check the bucket and upload again"
        )
    ours = _written_by_this_upload(response, answer)
    try:
        with hooks.reading():
            verdict = check_or_read_back(
                client, bucket, response, expected, local_file=source, part_size=part_size,
                etag_shape=etag_shape_of(hooks.caps),
            )  # fmt: skip
    except S3BackupError as error:
        raise type(error)(f"{error}; {_discard(client, bucket, expected.key, response, hooks, ours)}") from None
    if verdict.ok:
        assert verdict.how is not None
        return response, verdict.how
    discarded = _discard(client, bucket, expected.key, response, hooks, ours)
    if not ours:
        raise VerificationError(
            f"{target} is no longer the object uploaded from {expected.path}: it has ETag {etag_of(response)}"
            f"{_version_note(response)}, the upload was answered with ETag {etag_of(answer or {})}"
            f"{_version_note(answer or {})}; another writer replaced it after the upload; {discarded}"
        )
    if verdict.kind in (VerdictKind.SIZE_DIFFERS, VerdictKind.ETAG_DIFFERS) and hooks.overwrites_refused:
        raise LocalFileChangedError(
            f"{target} has size {response.get('ContentLength')} and ETag {etag_of(response)} after the upload, but "
            f"{expected.path} was recorded with size {expected.size} and ETag {expected.etag}: the local file changed "
            f"after it was checksummed; {discarded}. Check the file and checksum it again"
        )
    raise VerificationError(f"{target} does not hold {expected.path}: {verdict.problem}; {discarded}")


def _written_by_this_upload(response: Mapping[str, Any], answer: Mapping[str, Any] | None) -> bool:
    """Whether the HEAD shows the object the upload's answer was for: the same version, else the same ETag.

    Compared only where both tell (a version id on both; an ETag in the
    answer); an answer that tells nothing (``None``, an empty one) leaves the
    object taken as this upload's, as before answers were compared.
    """
    if answer is None:
        return True
    ours, now = version_of(answer), version_of(response)
    if ours is not None and now is not None:
        return ours == now
    return not etag_of(answer) or etag_of(answer).lower() == etag_of(response).lower()


def _version_note(response: Mapping[str, Any]) -> str:
    version = version_of(response)
    return f" (version {version})" if version else ""


def _discard(
    client: S3Client,
    bucket: str,
    key: str,
    response: Mapping[str, Any],
    hooks: MultipartHooks,
    ours: bool,
) -> str:
    """Delete the unverified object just uploaded, where it is certainly ours; else leave it. A note for messages.

    ``ours``: the HEAD shows the object this upload was answered for (:func:`_written_by_this_upload`).
    """
    if not ours:
        return (
            "it was left as it is (rawvault deletes nothing it did not write) and nothing was recorded as done; find "
            "out who writes there, then upload the raw file again"
        )
    if hooks.overwrites_refused:
        return delete_version(client, bucket, key, response)
    assert hooks.caps is not None
    ignored = "ignores" if hooks.caps.conditional_put is Conditional.IGNORED else "rejects"
    return (
        f"it was left as it is: this store {ignored} If-None-Match, so the object at the key may be another "
        "writer's, written after this upload (or the local file changed after it was checksummed), and rawvault "
        "deletes nothing it cannot prove it wrote; find out which it is, then move or delete the object by hand"
    )
