"""Upload one raw file set to S3: all-or-nothing, never overwriting, verified end to end.

:func:`upload_file_set` works in three phases:

1. **Check** (nothing is uploaded yet): validate every path and recorded
   ``[size, md5, etag]`` against the part size; read an existing manifest (a
   different one fails); ``head_object`` every key (``max_concurrency`` at a
   time). An object with the recorded size and ETag is skipped; a different
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
   it; interrupted multipart uploads are kept) and is raised.
3. **Manifest** (:mod:`rawvault.s3.manifest`), written last: its presence
   means the set is complete.

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

The verification is :func:`rawvault.s3.objects.check_object`, the one rule
shared with restore and audit. A just-uploaded object that fails it is
deleted again (its version, in a versioned bucket); an object that existed
before is never deleted (:mod:`rawvault.s3.upload_file`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rawvault.s3 import manifest as manifest_mod
from rawvault.s3.errors import ExistingObjectMismatchError, UnsafePathError
from rawvault.s3.file_info import RecordedFile, check_part_size, parse_file_info
from rawvault.s3.keys import object_key, s3_url, validate_key_prefix
from rawvault.s3.multipart_resume import UploadIdCallback
from rawvault.s3.objects import VerificationMode, check_object, head
from rawvault.s3.parallel import upload_side_by_side
from rawvault.s3.progress import DEFAULT_INTERVAL_SECONDS, ProgressReporter, format_bytes
from rawvault.s3.put import ObjectSettings, forbid_overwrites
from rawvault.s3.upload_file import (
    MultipartHooks,
    UploadedObject,
    accept_existing,
    check_source,
    expected_object,
    upload_file,
)

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

__all__ = [
    "ObjectSettings",
    "UploadResult",
    "UploadedObject",
    "VerificationMode",
    "upload_file_set",
    "verify_complete_set",
]

log = logging.getLogger(__name__)


@dataclass
class UploadResult:
    """What :func:`upload_file_set` did."""

    bucket: str
    key_prefix: str
    raw_file_id: str
    manifest_key: str
    objects: dict[str, UploadedObject] = field(default_factory=dict)
    manifest_etag: str = ""
    manifest_written: bool = False

    @property
    def uploaded(self) -> list[str]:
        """Paths uploaded in this run."""
        return [path for path, obj in self.objects.items() if obj.uploaded]

    @property
    def skipped(self) -> list[str]:
        """Paths that were in S3 already (verified)."""
        return [path for path, obj in self.objects.items() if not obj.uploaded]

    @property
    def bytes_uploaded(self) -> int:
        """Bytes of the files uploaded in this run."""
        return sum(obj.size for obj in self.objects.values() if obj.uploaded)

    @property
    def parts_resumed(self) -> int:
        """Parts of multipart uploads that an earlier run had stored and this run completed."""
        return sum(obj.parts_resumed for obj in self.objects.values())

    @property
    def already_complete(self) -> bool:
        """The set was complete in S3 before this run (nothing was written)."""
        return not self.uploaded and not self.manifest_written

    @property
    def s3_backup_key(self) -> str:
        """``s3://<bucket>/<key_prefix>``: every path ``p`` is at ``<key_prefix><p>``."""
        return f"s3://{self.bucket}/{self.key_prefix}"

    @property
    def s3_etag(self) -> str:
        """A single file's S3 ETag; for a set of several files, the S3 ETag of its manifest."""
        if len(self.objects) == 1:
            return next(iter(self.objects.values())).s3_etag
        return self.manifest_etag


@dataclass(frozen=True)
class _SetLayout:
    """A validated set: its recorded files by path, their keys and the manifest key."""

    recorded: dict[str, RecordedFile]
    keys: dict[str, str]
    manifest_key: str

    @classmethod
    def of(cls, key_prefix: str, file_info: Mapping[str, Any], raw_file_id: str) -> _SetLayout:
        validate_key_prefix(key_prefix)
        recorded = parse_file_info(file_info)
        keys = {path: object_key(key_prefix, path) for path in recorded}
        manifest_key = manifest_mod.manifest_key(key_prefix, raw_file_id)
        if manifest_key in keys.values():
            raise UnsafePathError(f"file_info path {manifest_key!r} collides with the manifest key of the raw file")
        return cls(recorded, keys, manifest_key)

    def manifest(
        self, result: UploadResult, part_size: int, metadata: Mapping[str, str], objects: Mapping[str, UploadedObject]
    ) -> dict[str, Any]:
        """The set's manifest; with ``objects``, what S3 reported for each (omitted: only the identity)."""
        files: dict[str, dict[str, Any]] = {}
        for path, entry in self.recorded.items():
            files[path] = {"key": self.keys[path], "size": entry.size, "md5": entry.md5, "etag": entry.etag}
            obj = objects.get(path)
            if obj is not None:
                files[path].update(
                    {
                        "s3_etag": obj.s3_etag,
                        "checksum_sha256": obj.checksum_sha256,
                        "verified_by": obj.verified_by.value,
                    }
                )
        return manifest_mod.build(
            raw_file_id=result.raw_file_id, bucket=result.bucket, key_prefix=result.key_prefix, part_size=part_size,
            metadata=metadata, files=files,
        )  # fmt: skip


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
) -> UploadResult:
    """Upload the files of ``file_info`` from ``source_folder`` to ``bucket`` under ``key_prefix``.

    See the module docstring. Raises an :class:`~rawvault.s3.errors.S3BackupError`
    on the first problem; what was uploaded and verified before stays (a retry
    skips it), and so does an unfinished multipart upload stopped by a
    transient failure (a retry resumes it).

    ``multipart_uploads`` maps keys to the upload ids of unfinished multipart
    uploads recorded by an earlier run (preferred when resuming);
    ``on_multipart_upload(key, upload_id or None)`` is called when one is
    started/resumed or completed/aborted; ``guard()`` is called before every
    request that changes S3 and raises to stop the upload (the caller lost
    its claim on the raw file).
    """
    settings, metadata, check = object_settings or ObjectSettings(), dict(metadata or {}), guard or (lambda: None)
    layout = _SetLayout.of(key_prefix, file_info, raw_file_id)
    for entry in layout.recorded.values():
        check_part_size(entry, part_size)
    result = UploadResult(bucket, key_prefix, raw_file_id, layout.manifest_key)
    # Phase 1: check everything before uploading anything.
    existing_manifest, existing_etag = _existing_manifest(client, result, layout, part_size, metadata)
    to_upload = _check_phase(
        client, result, layout, source_folder, part_size, existing_manifest, settings.max_concurrency
    )

    # Phase 2: upload and verify, side by side; the first failure stops the set.
    forbid_overwrites(client)
    hooks = MultipartHooks(dict(multipart_uploads or {}), on_multipart_upload, check)
    result.objects.update(
        _upload_phase(
            client, result, layout, to_upload, source_folder, part_size, settings, metadata, hooks, progress_interval
        )
    )

    # Phase 3: the manifest, last.
    result.objects = {path: result.objects[path] for path in layout.recorded}
    if existing_manifest is None:
        check()
        manifest = layout.manifest(result, part_size, metadata, result.objects)
        result.manifest_etag = manifest_mod.write(client, bucket, layout.manifest_key, manifest, settings, metadata)
        result.manifest_written = True
    else:
        result.manifest_etag = existing_etag
    _log_complete(result)
    return result


def _log_complete(result: UploadResult) -> None:
    log.info(
        "%s: complete in %s (%d uploaded, %d skipped, manifest %s%s)",
        result.raw_file_id,
        result.s3_backup_key,
        len(result.uploaded),
        len(result.skipped),
        result.manifest_key,
        " written" if result.manifest_written else " already there",
    )


def _upload_phase(
    client: S3Client,
    result: UploadResult,
    layout: _SetLayout,
    to_upload: list[RecordedFile],
    source_folder: Path,
    part_size: int,
    settings: ObjectSettings,
    metadata: Mapping[str, str],
    hooks: MultipartHooks,
    progress_interval: float,
) -> dict[str, UploadedObject]:
    """Upload and verify the missing files side by side (see the module docstring); return them by path."""
    if not to_upload:
        return {}
    where = s3_url(result.bucket, result.key_prefix)
    progress = ProgressReporter(
        sum(entry.size for entry in to_upload),
        label=f"uploading {result.raw_file_id} to {where}",
        interval=progress_interval,
    )

    def upload_one(entry: RecordedFile, hooks: MultipartHooks) -> UploadedObject:
        expected = expected_object(entry, layout.keys[entry.path])
        source = source_folder / entry.path
        return upload_file(client, result.bucket, expected, source, part_size, settings, metadata, progress, hooks)

    uploaded = upload_side_by_side(to_upload, upload_one, settings.max_concurrency, hooks)
    progress.finish()
    return uploaded


def _read_manifest(client: S3Client, bucket: str, key: str) -> tuple[dict[str, Any], str] | None:
    """The manifest at ``key`` and its ETag, ``None`` when there is none; anything else there fails."""
    try:
        return manifest_mod.read(client, bucket, key)
    except manifest_mod.ManifestUnreadableError as error:
        raise ExistingObjectMismatchError(
            f"s3://{bucket}/{key} is where the raw file's manifest belongs, but it holds something else ({error}): "
            "rawvault never overwrites it; move it away by hand"
        ) from None


def _existing_manifest(
    client: S3Client, result: UploadResult, layout: _SetLayout, part_size: int, metadata: Mapping[str, str]
) -> tuple[dict[str, Any] | None, str]:
    """The set's manifest already in S3 (``None``, ``""`` when there is none); one of another set fails."""
    bucket, key = result.bucket, layout.manifest_key
    found = _read_manifest(client, bucket, key)
    if found is None:
        return None, ""
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
    layout: _SetLayout,
    source_folder: Path,
    part_size: int,
    existing_manifest: Mapping[str, Any] | None,
    concurrency: int,
) -> list[RecordedFile]:
    """HEAD every key (``concurrency`` at a time): accept verified objects into ``result``, return the rest."""
    manifest_files = (existing_manifest or {}).get("files", {})

    def check(path: str, entry: RecordedFile) -> UploadedObject | None:
        found = head(client, result.bucket, layout.keys[path])
        if found is None:
            check_source(source_folder / path, entry)
            return None
        expected = expected_object(entry, layout.keys[path], manifest_files.get(path))
        return accept_existing(found, expected, result.bucket, source_folder / path, part_size)

    to_upload: list[RecordedFile] = []
    workers = max(1, min(concurrency, len(layout.recorded)))
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
    return to_upload


def verify_complete_set(
    client: S3Client,
    *,
    bucket: str,
    key_prefix: str,
    file_info: Mapping[str, Any],
    part_size: int,
    raw_file_id: str,
    metadata: Mapping[str, str] | None = None,
) -> UploadResult | None:
    """The set as recorded by its manifest when it is complete in S3, else ``None``; cheap, uploads nothing.

    One GET of the manifest (written only after every file was verified),
    which must describe this set; for a raw file of one file, one HEAD of
    that object, which must hold the file by :func:`~rawvault.s3.objects.check_object`
    with the manifest's record. S3 errors are raised (classified), so an
    unreachable S3 is never taken for an incomplete set.
    """
    layout = _SetLayout.of(key_prefix, file_info, raw_file_id)
    result = UploadResult(
        bucket=bucket, key_prefix=key_prefix, raw_file_id=raw_file_id, manifest_key=layout.manifest_key
    )
    found = _read_manifest(client, bucket, layout.manifest_key)
    expected_identity = layout.manifest(result, part_size, dict(metadata or {}), {})
    if found is None or not manifest_mod.same_set(found[0], expected_identity):
        return None
    for path, entry in layout.recorded.items():
        listed = found[0]["files"][path]
        s3_etag = str(listed.get("s3_etag") or "")
        if not s3_etag:
            return None
        result.objects[path] = UploadedObject(
            path, layout.keys[path], entry.size, entry.md5, entry.etag, s3_etag, listed.get("checksum_sha256"),
            VerificationMode.MANIFEST, False,
        )  # fmt: skip
    if len(layout.recorded) == 1:
        ((path, entry),) = layout.recorded.items()
        expected = expected_object(entry, layout.keys[path], found[0]["files"][path])
        if not check_object(head(client, bucket, expected.key), expected).ok:
            return None
    result.manifest_etag = found[1]
    return result
