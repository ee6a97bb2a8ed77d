"""Upload one file of a set (a single PUT or a resumable multipart upload) and prove S3 holds it.

An object already at the key is accepted only when :func:`rawvault.s3.objects.check_object`
shows it holds the recorded file, and is never replaced. A just-uploaded
object that fails that check is deleted again (its version, in a versioned
bucket); an object that existed before is never deleted.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping
from concurrent.futures import Executor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rawvault.digests import multipart_parts
from rawvault.s3.body import ProgressCallback
from rawvault.s3.errors import (
    ExistingObjectMismatchError,
    LocalFileChangedError,
    ObjectAppearedError,
    S3BackupError,
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
    check_object,
    delete_version,
    etag_of,
    head,
)
from rawvault.s3.progress import format_bytes
from rawvault.s3.put import ObjectSettings, put_file, s3_metadata

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

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
    """What an upload needs from the caller: recorded upload ids, a recorder, the guard, the set's part slots.

    ``part_pool`` runs every request that sends data (a single PUT, each part
    of a multipart upload): the files of a set share it, so at most its
    number of threads are in flight; ``None``: each multipart upload has a
    pool of its own and a PUT runs in the calling thread. ``stop`` is the
    set's stop event (set on its first failure).
    """

    known: dict[str, str]
    on_upload_id: UploadIdCallback | None
    guard: Callable[[], None]
    part_pool: Executor | None = None
    stop: threading.Event | None = None


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
    response: Mapping[str, Any], expected: ExpectedObject, bucket: str, source: Path, part_size: int
) -> UploadedObject:
    """The object found at the key, if it holds ``expected``; else :class:`ExistingObjectMismatchError`."""
    verdict = check_object(response, expected, local_file=source, part_size=part_size)
    s3_etag = etag_of(response)
    if verdict.ok:
        assert verdict.how is not None
        log.info("%s: already in S3 with the recorded content (verified by %s), skipped", expected.path, verdict.how)
        return UploadedObject(
            expected.path, expected.key, expected.size, expected.md5, expected.etag, s3_etag,
            response.get("ChecksumSHA256"), verdict.how, False,
        )  # fmt: skip
    problem = f"size {response.get('ContentLength')}, ETag {s3_etag}"
    if verdict.kind in (VerdictKind.CHECKSUM_DIFFERS, VerdictKind.CANNOT_VERIFY):
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
    part_size: int,
    settings: ObjectSettings,
    metadata: Mapping[str, str],
    progress: ProgressCallback,
    hooks: MultipartHooks,
) -> UploadedObject:
    """Upload ``source`` to ``expected.key`` (it is not there yet) and verify what S3 then holds."""
    entry = RecordedFile(expected.path, expected.size, expected.md5, expected.etag)
    check_source(source, entry)  # again: it may have changed since the check phase
    parts = multipart_parts(entry.size, part_size)
    log.info(
        "uploading %s (%s, %s) to s3://%s/%s",
        entry.path,
        format_bytes(entry.size),
        "one PUT" if parts is None else f"{parts} parts of {format_bytes(part_size)}",
        bucket,
        expected.key,
    )
    try:
        parts_uploaded, parts_resumed = _send(
            client, bucket, expected.key, source, entry, part_size, settings, metadata, progress, hooks
        )
    except (ObjectAppearedError, UploadVanishedError) as error:
        # Another run (a zombie of this one, a double trigger) may have stored the same file: accept it
        # only after the usual check of an existing object, never replace it.
        found = head(client, bucket, expected.key)
        if found is None:
            raise
        log.warning("%s: %s; checking the object now at the key", entry.path, error)
        try:
            return accept_existing(found, expected, bucket, source, part_size)
        except ExistingObjectMismatchError:
            raise error from None
    response, mode = _verify_uploaded(client, bucket, expected, source, part_size)
    log.info(
        "%s: uploaded and verified by %s%s",
        entry.path,
        mode.value,
        f" ({parts_resumed} of {parts} parts resumed from an earlier run)" if parts_resumed else "",
    )
    return UploadedObject(
        entry.path, expected.key, entry.size, entry.md5, entry.etag, etag_of(response),
        response.get("ChecksumSHA256"), mode, True, parts_uploaded, parts_resumed,
    )  # fmt: skip


def _send(
    client: S3Client,
    bucket: str,
    key: str,
    source: Path,
    entry: RecordedFile,
    part_size: int,
    settings: ObjectSettings,
    metadata: Mapping[str, str],
    progress: ProgressCallback,
    hooks: MultipartHooks,
) -> tuple[int, int]:
    """One PUT or a (resumed) multipart upload; return the parts uploaded and resumed."""
    object_args: dict[str, Any] = {
        "StorageClass": settings.storage_class,
        "Metadata": s3_metadata({**metadata, "md5": entry.md5}),
        **settings.encryption_args(),
    }
    if multipart_parts(entry.size, part_size) is None:
        if hooks.part_pool is None:
            put_file(client, bucket, key, source, entry.size, object_args, progress, what=entry.path)
        else:  # a part slot of the set, like any part
            hooks.part_pool.submit(
                put_file, client, bucket, key, source, entry.size, object_args, progress, what=entry.path
            ).result()
        return 0, 0
    outcome = upload_multipart(
        client,
        bucket=bucket,
        key=key,
        source=source,
        size=entry.size,
        part_size=part_size,
        create_args=object_args,
        max_concurrency=settings.max_concurrency,
        progress=progress,
        known_upload_id=hooks.known.get(key),
        on_upload_id=hooks.on_upload_id,
        guard=hooks.guard,
        kms=settings.kms,
        part_pool=hooks.part_pool,
        stop=hooks.stop,
    )
    return outcome.parts_uploaded, outcome.parts_resumed


def _verify_uploaded(
    client: S3Client, bucket: str, expected: ExpectedObject, source: Path, part_size: int
) -> tuple[dict[str, Any], VerificationMode]:
    """Check the object just uploaded; delete it again when it does not hold the recorded file."""
    target = f"s3://{bucket}/{expected.key}"
    response = head(client, bucket, expected.key)
    if response is None:
        raise VerificationError(f"{target} is missing right after its upload succeeded: check the bucket")
    try:
        verdict = check_object(response, expected, local_file=source, part_size=part_size)
    except S3BackupError as error:
        delete_version(client, bucket, expected.key, response)
        raise type(error)(f"{error}; the uploaded object was deleted again") from None
    if verdict.ok:
        assert verdict.how is not None
        return response, verdict.how
    if verdict.kind in (VerdictKind.SIZE_DIFFERS, VerdictKind.ETAG_DIFFERS):
        deleted = delete_version(client, bucket, expected.key, response)
        raise LocalFileChangedError(
            f"{target} has size {response.get('ContentLength')} and ETag {etag_of(response)} after the upload, but "
            f"{expected.path} was recorded with size {expected.size} and ETag {expected.etag}: the local file changed "
            f"after it was checksummed; {deleted}. Check the file and checksum it again"
        )
    delete_version(client, bucket, expected.key, response)
    raise VerificationError(f"{target} does not hold {expected.path}: {verdict.problem}; it was deleted again")
