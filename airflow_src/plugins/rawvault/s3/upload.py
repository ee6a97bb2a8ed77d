"""Upload one raw file set to S3: all-or-nothing, never overwriting, verified end to end.

:func:`upload_file_set` works in three phases:

1. **Check** (nothing is uploaded yet): validate every path and recorded
   ``[size, md5, etag]`` against the part size; read an existing manifest (a
   different one fails); list the set's keys (one ListObjectsV2 for a set of
   several files, :mod:`rawvault.s3.listing`: a key it does not show is taken
   as absent, and the conditional write or the key check before it catches one
   that is there after all) and ``head_object`` every key found, and every key
   of a file sent in parts (``max_concurrency`` at a time; a one-file set: its
   one HEAD). An object with the recorded size and ETag is skipped; a different
   object fails the whole set (:class:`ExistingObjectMismatchError`) and is
   never overwritten. Every missing file must exist locally with its size.
2. **Upload** the missing files side by side, sharing ``max_concurrency``
   part slots (:mod:`rawvault.s3.parallel`): a single PUT when
   ``size <= part_size``, else a resumable multipart upload with parts of
   exactly ``part_size`` (:mod:`rawvault.s3.multipart`), so S3's ETag is the
   recorded one. An unfinished multipart upload of the key left by an earlier
   run (a failure, a killed worker) is resumed: its stored parts are verified
   against the local file and only missing or mismatching parts are uploaded.
   Every request carries a SHA-256 flexible checksum that S3 validates,
   ``If-None-Match: *`` on the PUT and on CompleteMultipartUpload (S3 refuses
   to replace an object that appeared meanwhile), the storage class,
   server-side encryption and metadata (raw file id, instrument, the file's
   MD5). A transient failure (network, S3 5xx after botocore's retries) keeps
   the unfinished multipart upload for the next run to resume; any other
   failure aborts it. The first failure stops the set (nothing starts after
   it; interrupted multipart uploads are kept) and is raised. Every object is
   verified by a HEAD after its upload, except the single PUTs of a set whose
   answers showed the recorded file: one listing after the set's PUTs
   verifies them (:mod:`rawvault.s3.listed_check`).
3. **Manifest** (:mod:`rawvault.s3.manifest`), written last, after every
   object is verified (on a store that does not refuse overwrites, every
   object is checked once more by HEAD right before it: one replaced since
   its verification fails the set): its presence means the set is complete, and it always
   describes what is in S3. A set without one gets one (``If-None-Match``).
   An existing manifest that still records the S3 ETag and SHA-256 of every
   object is kept as it is (a re-run writes nothing, ``s3_etag`` stays); one
   that records others (an object was uploaded again, e.g. a repair under
   SSE-KMS, where every upload gives a new ETag) is replaced, conditional on
   its ETag (a new version of the key in a versioned bucket).

The read-only check of a set recorded as complete (the manifest and a HEAD
of every object, no local file read) is :func:`rawvault.s3.file_set.check_complete_set`:
a run for an ``upload_done`` raw file asks it first and, when something is
missing or the manifest is stale, repairs the set with :func:`upload_file_set`.

Verification after each upload (and for objects found in phase 1), explicit
per object in :attr:`UploadedObject.verified_by`:

- ``etag``: S3's ETag equals the recorded MD5-based ETag (and the size).
  Used whenever the object is not KMS-encrypted.
- ``checksum``: under SSE-KMS (or SSE-C) S3's ETag is not an MD5 of the
  content. Then the local file is read once more to compute its MD5, its
  ETag and S3's SHA-256 (composite for multipart); MD5 and ETag must equal
  the recorded ones (the file is what was checksummed) and the SHA-256 must
  equal the one S3 computed and validated on upload (S3 holds the local
  file). An object without a SHA-256 cannot be verified and fails.
- ``manifest``: an object listed in the set's existing manifest with the same
  S3 ETag and checksum (it was verified before the manifest was written).

- ``md5``: S3's ETag is the whole file's recorded MD5 (a store such as
  ``rclone serve s3`` reports that for a multipart object).
- ``content``: a store whose ETags are not MD5s of the content and that keeps
  no SHA-256: the object was read back and hashed (never skipped).

The verification is :func:`rawvault.s3.objects.check_object`, the one rule
shared with restore and audit. A just-uploaded object that fails it is
deleted again (its version, in a versioned bucket) only where it is certainly
this upload's: on a store that refuses overwrites, and the version (or ETag)
the upload was answered with (:mod:`rawvault.s3.upload_verify`); an object
that existed before, or that another writer put there since, is never deleted.

**Stores that are not AWS.** ``capabilities`` (the bucket's probed
:class:`~rawvault.s3.capabilities.StoreCapabilities`; ``None``: AWS) decides
the checksums and conditions sent; without conditional writes each write is
preceded by a HEAD of its key under ``guard`` (see :mod:`rawvault.s3.put`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path
from typing import Any

from rawvault.digests import multipart_parts
from rawvault.s3 import manifest as manifest_mod
from rawvault.s3.capabilities import StoreCapabilities
from rawvault.s3.client import S3Client
from rawvault.s3.errors import ExistingObjectMismatchError, VerificationError
from rawvault.s3.file_info import RecordedFile, check_part_size
from rawvault.s3.file_set import SetLayout, SetState, UploadResult, check_complete_set, read_set_manifest
from rawvault.s3.keys import s3_url
from rawvault.s3.listed_check import listing_verifies, verify_listed
from rawvault.s3.listing import list_keys
from rawvault.s3.multipart_resume import UploadIdCallback
from rawvault.s3.objects import VerificationMode, etag_of, head
from rawvault.s3.parallel import upload_side_by_side
from rawvault.s3.progress import DEFAULT_INTERVAL_SECONDS, ProgressReporter, format_bytes
from rawvault.s3.put import ObjectSettings, forbid_overwrites
from rawvault.s3.set_write import AwaitingListing, MultipartHooks, SetWrite, UploadedObject, expected_object
from rawvault.s3.upload_file import accept_existing, check_source, upload_file

__all__ = [
    "ObjectSettings",
    "SetState",
    "UploadResult",
    "UploadedObject",
    "VerificationMode",
    "check_complete_set",
    "upload_file_set",
]

log = logging.getLogger(__name__)


def upload_file_set(
    client: S3Client,
    *,
    bucket: str,
    key_prefix: str,
    source_folder: Path,
    file_info: Mapping[str, Any],
    part_size: int,
    raw_file_id: str,
    object_settings: ObjectSettings | None = None,
    metadata: Mapping[str, str] | None = None,
    progress_interval: float = DEFAULT_INTERVAL_SECONDS,
    multipart_uploads: Mapping[str, str] | None = None,
    on_multipart_upload: UploadIdCallback | None = None,
    guard: Callable[[], None] | None = None,
    capabilities: StoreCapabilities | None = None,
    bandwidth_status: Callable[[], str | None] | None = None,
    on_progress: Callable[[ProgressReporter], None] | None = None,
) -> UploadResult:
    """Upload the files of ``file_info`` from ``source_folder`` to ``bucket`` under ``key_prefix``.

    See the module docstring. Raises an :class:`~rawvault.s3.errors.S3BackupError`
    on the first problem; what was uploaded and verified before stays (a retry
    skips it), and so does an unfinished multipart upload stopped by a
    transient failure (a retry resumes it).

    ``multipart_uploads`` maps keys to the upload ids of unfinished multipart uploads recorded by an earlier
    run (preferred when resuming); ``on_multipart_upload(key, upload_id or None)`` is called when one is
    started/resumed or completed/aborted; ``guard()`` is called before every request that changes S3 and
    raises to stop the upload (the caller lost its claim on the raw file). ``capabilities``: what the
    bucket's store can do (``None``: AWS); ``bandwidth_status()``: the limit and throughput, for progress.
    ``on_progress(reporter)`` receives the upload's progress reporter once the bytes to send are known (the
    claim's heartbeat records its :meth:`~rawvault.s3.progress.ProgressReporter.snapshot`).
    """
    settings, metadata, check = object_settings or ObjectSettings(), dict(metadata or {}), guard or (lambda: None)
    layout = SetLayout.of(key_prefix, file_info, raw_file_id)
    for entry in layout.recorded.values():
        check_part_size(entry, part_size)
    result = UploadResult(bucket, key_prefix, raw_file_id, layout.manifest_key)
    # Phase 1: check everything before uploading anything.
    hooks = MultipartHooks(dict(multipart_uploads or {}), on_multipart_upload, check, capabilities)
    existing = _existing_manifest(client, result, layout, part_size, metadata)
    to_upload, listable = _check_phase(client, result, layout, source_folder, part_size, existing, hooks, settings)

    # Phase 2: upload side by side (the first failure stops the set), verify by HEAD or by the set's listing.
    forbid_overwrites(client, capabilities)
    progress = _progress_of(result, to_upload, progress_interval, on_progress, bandwidth_status)
    write = SetWrite(part_size, settings, metadata)
    hooks = replace(hooks, verify_by_listing=listing_verifies(to_upload, write, listable=listable))
    result.objects.update(_upload_phase(client, result, layout, to_upload, source_folder, write, hooks, progress))

    # Phase 3: the manifest, last: every object is verified now.
    result.objects = {path: result.objects[path] for path in layout.recorded}
    if not hooks.overwrites_refused:
        _recheck_before_manifest(client, result)
    manifest = layout.manifest(result, part_size, metadata, result.objects)
    _put_manifest(client, result, manifest, existing, settings, metadata, check, capabilities)
    _log_complete(result)
    return result


def _progress_of(
    result: UploadResult,
    to_upload: list[RecordedFile],
    interval: float,
    on_progress: Callable[[ProgressReporter], None] | None,
    bandwidth_status: Callable[[], str | None] | None,
) -> ProgressReporter:
    """The progress reporter of the bytes to send, handed to ``on_progress`` (the claim's heartbeat records it)."""
    progress = ProgressReporter(
        sum(entry.size for entry in to_upload),
        label=f"uploading {result.raw_file_id} to {result.s3_backup_key}",
        interval=interval,
        status=bandwidth_status,
    )
    if on_progress is not None:
        on_progress(progress)
    return progress


def _put_manifest(
    client: S3Client,
    result: UploadResult,
    manifest: dict[str, Any],
    existing: tuple[dict[str, Any], str] | None,
    settings: ObjectSettings,
    metadata: Mapping[str, str],
    check: Callable[[], None],
    caps: StoreCapabilities | None,
) -> None:
    """Write the manifest of the verified objects, replace one that records others, keep one that describes them."""
    bucket, key = result.bucket, result.manifest_key
    if existing is not None:
        stale = manifest_mod.stale_files(existing[0], manifest)
        if not stale:
            result.manifest_etag = existing[1]
            return
        log.info("%s: the manifest records other S3 ETags or checksums for %s: replacing it", key, ", ".join(stale))
        check()
        result.manifest_etag = manifest_mod.replace(
            client, bucket, key, manifest, old_etag=existing[1], settings=settings, metadata=metadata, caps=caps
        )
        result.replaced_manifest_etag = existing[1]
    else:
        check()
        result.manifest_etag = manifest_mod.write(client, bucket, key, manifest, settings, metadata, caps=caps)
    result.manifest_written = True


def _recheck_before_manifest(client: S3Client, result: UploadResult) -> None:
    """A store that does not refuse overwrites: every object must still be the one verified (HEAD: size, ETag).

    Another writer may have replaced an object verified earlier in the set;
    the manifest vouches for the set, so it is written only if none was.
    """
    for path, obj in result.objects.items():
        found = head(client, result.bucket, obj.key)
        now = (found.get("ContentLength"), etag_of(found)) if found is not None else None
        if now != (obj.size, obj.s3_etag):
            raise VerificationError(
                f"s3://{result.bucket}/{obj.key} ({path}) changed after it was verified (size and ETag were "
                f"{obj.size}, {obj.s3_etag}; now {'missing' if now is None else f'{now[0]}, {now[1]}'}): another "
                "writer replaced or deleted it, which this store does not prevent (If-None-Match is not enforced); "
                "no manifest was written and nothing was recorded as done. Find out who writes there, then upload "
                "the raw file again"
            )


def _log_complete(result: UploadResult) -> None:
    log.info(
        "%s: complete in %s (%d uploaded, %d skipped, manifest %s%s)",
        result.raw_file_id,
        result.s3_backup_key,
        len(result.uploaded),
        len(result.skipped),
        result.manifest_key,
        " replaced" if result.replaced_manifest_etag else " written" if result.manifest_written else " already there",
    )


def _upload_phase(
    client: S3Client,
    result: UploadResult,
    layout: SetLayout,
    to_upload: list[RecordedFile],
    source_folder: Path,
    write: SetWrite,
    hooks: MultipartHooks,
    progress: ProgressReporter,
) -> dict[str, UploadedObject]:
    """Upload the missing files side by side and verify them (see the module docstring); return them by path."""
    if not to_upload:
        return {}

    def upload_one(entry: RecordedFile, hooks: MultipartHooks) -> UploadedObject | AwaitingListing:
        expected = expected_object(entry, layout.keys[entry.path])
        source = source_folder / entry.path
        return upload_file(client, result.bucket, expected, source, write, progress, hooks)

    sent = upload_side_by_side(to_upload, upload_one, write.settings.max_concurrency, hooks)
    progress.finish()
    uploaded = {path: obj for path, obj in sent.items() if isinstance(obj, UploadedObject)}
    awaiting = [obj for obj in sent.values() if isinstance(obj, AwaitingListing)]
    uploaded.update(verify_listed(client, result.bucket, awaiting, write, hooks))
    return uploaded


def _existing_manifest(
    client: S3Client, result: UploadResult, layout: SetLayout, part_size: int, metadata: Mapping[str, str]
) -> tuple[dict[str, Any], str] | None:
    """The set's manifest already in S3 and its ETag (``None`` when there is none); one of another set fails."""
    bucket, key = result.bucket, layout.manifest_key
    found = read_set_manifest(client, bucket, key)
    if found is None:
        return None
    if not manifest_mod.same_set(found[0], layout.manifest(result, part_size, metadata, {})):
        raise ExistingObjectMismatchError(
            f"s3://{bucket}/{key} is the manifest of a different set than raw file {result.raw_file_id!r} "
            "(other files, sizes, checksums or part size): rawvault never overwrites existing backup data; "
            "compare it with the raw file's file_info and resolve the conflict by hand"
        )
    return found


def _check_phase(
    client: S3Client,
    result: UploadResult,
    layout: SetLayout,
    source_folder: Path,
    part_size: int,
    existing_manifest: tuple[dict[str, Any], str] | None,
    hooks: MultipartHooks,
    settings: ObjectSettings,
) -> tuple[list[RecordedFile], bool]:
    """List the set's keys, HEAD those found (``max_concurrency`` at a time): accept verified ones, return the rest.

    Also returns whether the set could be listed (a one-file set, a store that cannot list, a crowded prefix: no).

    One listing (:mod:`~rawvault.s3.listing`) tells which keys are absent; a one-file set HEADs its key.
    A file sent in parts is HEADed even when the listing leaves it out: one request against all its parts,
    should the listing have missed an object (the conditional write would refuse it only at the end).
    """
    manifest_files = (existing_manifest[0] if existing_manifest else {}).get("files", {})
    listed = list_keys(client, result.bucket, layout.keys.values())  # None: HEAD every key

    def check(path: str, entry: RecordedFile) -> UploadedObject | None:
        absent = (
            listed is not None and layout.keys[path] not in listed and multipart_parts(entry.size, part_size) is None
        )
        found = None if absent else head(client, result.bucket, layout.keys[path])
        if found is None:
            check_source(source_folder / path, entry)
            return None
        expected = expected_object(entry, layout.keys[path], manifest_files.get(path))
        return accept_existing(client, found, expected, result.bucket, source_folder / path, part_size, hooks.caps)

    to_upload: list[RecordedFile] = []
    workers = max(1, min(settings.max_concurrency, len(layout.recorded)))
    with ThreadPoolExecutor(workers, thread_name_prefix="rawvault-head") as pool:  # map(): in set order
        for (path, entry), existing in zip(
            layout.recorded.items(), pool.map(check, layout.recorded, layout.recorded.values()), strict=True
        ):
            if existing is None:
                to_upload.append(entry)
            else:
                result.objects[path] = existing
    log.info(
        "%s -> %s: %d of %d files to upload (%s), %d already there (%s, verified)",
        result.raw_file_id,
        s3_url(result.bucket, result.key_prefix),
        len(to_upload),
        len(layout.recorded),
        format_bytes(sum(entry.size for entry in to_upload)),
        len(result.objects),
        format_bytes(sum(obj.size for obj in result.objects.values())),
    )
    return to_upload, listed is not None
