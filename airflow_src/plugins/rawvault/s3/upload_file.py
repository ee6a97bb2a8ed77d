"""Upload one file of a set (a single PUT or a resumable multipart upload) and prove S3 holds it.

An object already at the key is accepted only when :func:`rawvault.s3.objects.check_object`
shows it holds the recorded file (on a store whose ETags prove nothing, after
reading it back: :func:`rawvault.s3.readback.check_or_read_back`), and is never
replaced. A just-uploaded object that fails that check is deleted again (its
version, in a versioned bucket); an object that existed before is never
deleted. On a store that does not refuse overwrites (``If-None-Match``
ignored) nothing is deleted at all: the object at the key may be another
writer's, written after rawvault's own.

With ``backup.s3.object_lock`` every object is written with its retention; a
multipart object whose HEAD shows none (moto's server drops the retention
given at CreateMultipartUpload) gets it set afterwards, counted from its
``LastModified``.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping
from concurrent.futures import Executor
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from rawvault.digests import multipart_parts
from rawvault.s3.body import ProgressCallback
from rawvault.s3.capabilities import Conditional, StoreCapabilities, checksum_args, etag_shape_of
from rawvault.s3.client import S3Client
from rawvault.s3.errors import (
    ExistingObjectMismatchError,
    LocalFileChangedError,
    ObjectAppearedError,
    S3BackupError,
    S3TransientError,
    UploadVanishedError,
    VerificationError,
)
from rawvault.s3.file_info import RecordedFile
from rawvault.s3.multipart import upload_multipart
from rawvault.s3.multipart_resume import UploadIdCallback
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
from rawvault.s3.progress import format_bytes
from rawvault.s3.put import ObjectSettings, put_file, s3_metadata
from rawvault.s3.readback import check_or_read_back
from rawvault.s3.retention import apply_object_retention, object_retention_args, retention_from_head

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class UploadedObject:
    """One file of the set in S3 and how it was verified."""

    path: str
    key: str
    size: int
    md5: str
    etag: str  # recorded (MD5-based) ETag
    s3_etag: str  # the ETag S3 reports (differs from ``etag`` under SSE-KMS)
    checksum_sha256: str | None
    verified_by: VerificationMode
    uploaded: bool  # False: it was there already
    parts_uploaded: int = 0  # multipart: parts sent by this run
    parts_resumed: int = 0  # multipart: parts an earlier run stored, verified and kept


@dataclass
class MultipartHooks:
    """What an upload needs: recorded upload ids, a recorder, the guard, the store's capabilities, the part slots.

    ``part_pool`` runs every request that sends data (a single PUT, each part
    of a multipart upload): the files of a set share it, so at most its
    number of threads are in flight; ``None``: each multipart upload has a
    pool of its own and a PUT runs in the calling thread. ``stop`` is the
    set's stop event (set on its first failure). ``read_slots`` bounds the
    verifications that may read data (a local file hashed under SSE-KMS, an
    object read back) when a set runs more file threads than part slots.
    """

    known: dict[str, str]
    on_upload_id: UploadIdCallback | None
    guard: Callable[[], None]
    caps: StoreCapabilities | None = None  # None: AWS behaviour
    part_pool: Executor | None = None
    stop: threading.Event | None = None
    read_slots: threading.Semaphore | None = None
    verify_by_listing: bool = False  # a single PUT the answer of which shows the recorded file awaits the listing

    def reading(self) -> AbstractContextManager[object]:
        """Held while a verification may read data: at most ``read_slots`` at once (no bound without them)."""
        return self.read_slots if self.read_slots is not None else nullcontext()

    @property
    def overwrites_refused(self) -> bool:
        """The store refuses to replace an object on PUT and on completion (If-None-Match enforced)."""
        return self.caps is None or self.caps.conditional_writes


@dataclass(frozen=True)
class SetWrite:
    """How every object of one set is written: the part size of its recorded ETags, the object settings, metadata."""

    part_size: int
    settings: ObjectSettings
    metadata: Mapping[str, str]

    def create_args(self, md5: str) -> dict[str, Any]:
        """The arguments of the PUT or CreateMultipartUpload of the object whose data has this ``md5``."""
        return {
            "StorageClass": self.settings.storage_class,
            "Metadata": s3_metadata({**self.metadata, "md5": md5}),
            **self.settings.data_args(),
        }


@dataclass(frozen=True)
class AwaitingListing:
    """A single PUT whose answer showed the recorded file's ETag: the set's listing after its PUTs verifies it.

    See :mod:`rawvault.s3.listed_check`; until then it counts for nothing.
    """

    expected: ExpectedObject
    source: Path
    put_answer: Mapping[str, Any]


def expected_object(entry: RecordedFile, key: str, manifest_entry: Mapping[str, Any] | None = None) -> ExpectedObject:
    """What the object of ``entry`` must hold; S3's ETag and SHA-256 from a manifest entry that agrees with it."""
    listed = manifest_entry or {}
    if (listed.get("size"), listed.get("md5"), listed.get("etag")) != (entry.size, entry.md5, entry.etag):
        listed = {}
    return ExpectedObject(
        entry.path, key, entry.size, entry.md5, entry.etag, listed.get("s3_etag") or None,
        listed.get("checksum_sha256") or None,
    )  # fmt: skip


def check_source(source: Path, entry: RecordedFile) -> None:
    """Raise :class:`LocalFileChangedError` unless the local copy of ``entry`` is a file of the recorded size."""
    try:
        size = source.stat().st_size
    except OSError as error:
        raise LocalFileChangedError(
            f"local backup copy {source} of {entry.path} cannot be read ({error.strerror}): run copy_raw_file again"
        ) from None
    if not source.is_file():
        raise LocalFileChangedError(f"local backup copy {source} of {entry.path} is not a file")
    if size != entry.size:
        raise LocalFileChangedError(
            f"local backup copy {source} has {size} bytes but {entry.size} were recorded when {entry.path} was "
            "checksummed: the file changed after checksumming; nothing of this raw file was uploaded"
        )


def accept_existing(
    client: S3Client,
    response: Mapping[str, Any],
    expected: ExpectedObject,
    bucket: str,
    source: Path,
    part_size: int,
    caps: StoreCapabilities | None = None,
) -> UploadedObject:
    """The object found at the key, if it holds ``expected``; else :class:`ExistingObjectMismatchError`."""
    verdict = check_or_read_back(
        client, bucket, response, expected, local_file=source, part_size=part_size, etag_shape=etag_shape_of(caps)
    )
    s3_etag = etag_of(response)
    if verdict.ok:
        assert verdict.how is not None
        log.info("%s: already in S3 with the recorded content (verified by %s), skipped", expected.path, verdict.how)
        return UploadedObject(
            expected.path, expected.key, expected.size, expected.md5, expected.etag, s3_etag,
            response.get("ChecksumSHA256"), verdict.how, False,
        )  # fmt: skip
    problem = f"size {response.get('ContentLength')}, ETag {s3_etag}"
    if verdict.kind in (VerdictKind.CHECKSUM_DIFFERS, VerdictKind.CONTENT_DIFFERS, VerdictKind.CANNOT_VERIFY):
        problem += f"; {verdict.problem}"
    raise ExistingObjectMismatchError(
        f"s3://{bucket}/{expected.key} already holds a different object ({problem}) than {expected.path} (size "
        f"{expected.size}, ETag {expected.etag}): rawvault never overwrites existing backup data, so nothing more of "
        "this raw file was uploaded; find out which copy is right and move or delete the object by hand if the "
        "local one is"
    )


def upload_file(
    client: S3Client,
    bucket: str,
    expected: ExpectedObject,
    source: Path,
    write: SetWrite,
    progress: ProgressCallback,
    hooks: MultipartHooks,
) -> UploadedObject | AwaitingListing:
    """Upload ``source`` to ``expected.key`` (it is not there yet) and verify what S3 then holds.

    With ``hooks.verify_by_listing``, a single PUT whose answer shows the
    recorded file is returned as :class:`AwaitingListing`: the set verifies
    it by its listing after the PUTs (:mod:`rawvault.s3.listed_check`).
    """
    part_size = write.part_size
    entry = RecordedFile(expected.path, expected.size, expected.md5, expected.etag)
    check_source(source, entry)  # again: it may have changed since the check phase
    part_count = multipart_parts(entry.size, part_size)
    log.info(
        "uploading %s (%s, %s) to s3://%s/%s",
        entry.path,
        format_bytes(entry.size),
        "one PUT" if part_count is None else f"{part_count} parts of {format_bytes(part_size)}",
        bucket,
        expected.key,
    )
    try:
        put_answer, *parts = _send(client, bucket, expected.key, source, write, progress, hooks, entry)
    except (ObjectAppearedError, UploadVanishedError) as error:
        # Another run (a zombie of this one, a double trigger) may have stored the same file: accept it
        # only after the usual check of an existing object, never replace it.
        found = head(client, bucket, expected.key)
        if found is None:
            raise
        log.warning("%s: %s; checking the object now at the key", entry.path, error)
        try:
            with hooks.reading():
                return accept_existing(client, found, expected, bucket, source, part_size, hooks.caps)
        except ExistingObjectMismatchError:
            raise error from None
    if put_answer is not None and hooks.verify_by_listing and _shows_recorded_file(put_answer, expected, hooks.caps):
        return AwaitingListing(expected, source, put_answer)
    return verify_upload(client, bucket, expected, source, write, hooks, (parts[0], parts[1]))


def verify_upload(
    client: S3Client,
    bucket: str,
    expected: ExpectedObject,
    source: Path,
    write: SetWrite,
    hooks: MultipartHooks,
    parts: tuple[int, int] = (0, 0),
) -> UploadedObject:
    """HEAD the object just uploaded from ``source`` and verify it (deleted again if it is not the file and ours).

    ``parts``: the parts this run uploaded and resumed (multipart), for the record.
    """
    response, mode = _verify_uploaded(client, bucket, expected, source, write.part_size, hooks)
    if write.settings.object_lock is not None and retention_from_head(response) is None:
        _set_missing_retention(client, bucket, expected.key, response, write.settings)
    log.info(
        "%s: uploaded and verified by %s%s",
        expected.path,
        mode.value,
        f" ({parts[1]} of {sum(parts)} parts resumed from an earlier run)" if parts[1] else "",
    )
    return UploadedObject(
        expected.path, expected.key, expected.size, expected.md5, expected.etag, etag_of(response),
        response.get("ChecksumSHA256"), mode, True, *parts,
    )  # fmt: skip


def _shows_recorded_file(
    put_answer: Mapping[str, Any], expected: ExpectedObject, caps: StoreCapabilities | None
) -> bool:
    """The PUT's answer has the recorded MD5 as ETag (no KMS) and the SHA-256 S3 validated, if one was sent.

    Only then does the listing record what a HEAD would: the same ETag and,
    from the answer, the same SHA-256 (``rclone serve s3`` answers a PUT
    without it, so its objects are verified by HEAD).
    """
    sha256_sent = bool(checksum_args(caps))
    return (
        etag_of(put_answer) in (expected.etag, expected.md5)
        and not is_kms(put_answer)
        and bool(put_answer.get("ChecksumSHA256")) == sha256_sent
    )


def _send(
    client: S3Client,
    bucket: str,
    key: str,
    source: Path,
    write: SetWrite,
    progress: ProgressCallback,
    hooks: MultipartHooks,
    entry: RecordedFile,
) -> tuple[dict[str, Any] | None, int, int]:
    """One PUT or a (resumed) multipart upload; return the PUT's answer (``None``: multipart), parts sent, resumed."""
    object_args = write.create_args(entry.md5)
    if multipart_parts(entry.size, write.part_size) is None:

        def put() -> dict[str, Any]:
            # Queued for a part slot, perhaps for a while: like a part, it starts only if the set has not
            # stopped (and put_file checks the claim right before the PUT).
            if hooks.stop is not None and hooks.stop.is_set():
                raise S3TransientError(
                    f"{entry.path} was not uploaded: the upload of its set stopped; the next run does"
                )
            return put_file(
                client, bucket, key, source, entry.size, object_args, progress, what=entry.path, caps=hooks.caps,
                guard=hooks.guard,
            )  # fmt: skip

        # In a part slot of the set, like any part.
        return (put() if hooks.part_pool is None else hooks.part_pool.submit(put).result()), 0, 0
    outcome = upload_multipart(
        client,
        bucket=bucket,
        key=key,
        source=source,
        size=entry.size,
        part_size=write.part_size,
        create_args=object_args,
        max_concurrency=write.settings.max_concurrency,
        progress=progress,
        known_upload_id=hooks.known.get(key),
        on_upload_id=hooks.on_upload_id,
        guard=hooks.guard,
        kms=write.settings.kms,
        caps=hooks.caps,
        part_pool=hooks.part_pool,
        stop=hooks.stop,
    )
    return None, outcome.parts_uploaded, outcome.parts_resumed


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
    client: S3Client, bucket: str, expected: ExpectedObject, source: Path, part_size: int, hooks: MultipartHooks
) -> tuple[dict[str, Any], VerificationMode]:
    """Check the object just uploaded; delete it again when it does not hold the recorded file (and is ours)."""
    target = f"s3://{bucket}/{expected.key}"
    response = head(client, bucket, expected.key)
    if response is None:
        raise VerificationError(f"{target} is missing right after its upload succeeded: check the bucket")
    caps = hooks.caps
    try:
        with hooks.reading():
            verdict = check_or_read_back(
                client, bucket, response, expected, local_file=source, part_size=part_size,
                etag_shape=etag_shape_of(caps),
            )  # fmt: skip
    except S3BackupError as error:
        raise type(error)(f"{error}; {_discard(client, bucket, expected.key, response, hooks)}") from None
    if verdict.ok:
        assert verdict.how is not None
        return response, verdict.how
    discarded = _discard(client, bucket, expected.key, response, hooks)
    if verdict.kind in (VerdictKind.SIZE_DIFFERS, VerdictKind.ETAG_DIFFERS) and hooks.overwrites_refused:
        raise LocalFileChangedError(
            f"{target} has size {response.get('ContentLength')} and ETag {etag_of(response)} after the upload, but "
            f"{expected.path} was recorded with size {expected.size} and ETag {expected.etag}: the local file changed "
            f"after it was checksummed; {discarded}. Check the file and checksum it again"
        )
    raise VerificationError(f"{target} does not hold {expected.path}: {verdict.problem}; {discarded}")


def _discard(client: S3Client, bucket: str, key: str, response: Mapping[str, Any], hooks: MultipartHooks) -> str:
    """Delete the unverified object just uploaded, where it is certainly ours; else leave it. A note for messages."""
    if hooks.overwrites_refused:
        return delete_version(client, bucket, key, response)
    assert hooks.caps is not None
    ignored = "ignores" if hooks.caps.conditional_put is Conditional.IGNORED else "rejects"
    return (
        f"it was left as it is: this store {ignored} If-None-Match, so the object at the key may be another "
        "writer's, written after this upload (or the local file changed after it was checksummed), and rawvault "
        "deletes nothing it cannot prove it wrote; find out which it is, then move or delete the object by hand"
    )
