"""Upload one raw file set to S3: all-or-nothing, never overwriting, verified end to end.

:func:`upload_file_set` works in three phases:

1. **Check** (nothing is uploaded yet): validate every path and recorded
   ``[size, md5, etag]`` against the part size; read an existing manifest (a
   different one fails); ``head_object`` every key. An object with the
   recorded size and ETag is skipped; a different object fails the whole set
   (:class:`ExistingObjectMismatchError`) and is never overwritten. Every
   missing file must exist locally with its recorded size.
2. **Upload** the missing files one by one: a single PUT when
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
   failure aborts it. The first failure stops the set.
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

A just-uploaded object that fails verification is deleted again (its version,
in a versioned bucket); an object that existed before is never deleted.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from botocore.exceptions import ClientError

from rawvault.digests import CHECKSUM_ALGORITHM
from rawvault.s3 import manifest as manifest_mod
from rawvault.s3.errors import (
    ExistingObjectMismatchError,
    LocalFileChangedError,
    S3BackupError,
    UnsafePathError,
    VerificationError,
    classify,
    error_code,
    is_not_found,
)
from rawvault.s3.integrity import (
    RecordedFile,
    check_part_size,
    local_digests,
    multipart_parts,
    parse_file_info,
    split_checksum,
)
from rawvault.s3.keys import object_key, validate_key_prefix
from rawvault.s3.multipart import (
    CONFLICT_CODES,
    ObjectAppearedError,
    PartReader,
    UploadIdCallback,
    UploadVanishedError,
    upload_multipart,
)
from rawvault.s3.progress import DEFAULT_INTERVAL_SECONDS, ProgressReporter, format_bytes

if TYPE_CHECKING:
    from shared.settings import S3Settings

log = logging.getLogger(__name__)

MANIFEST_STORAGE_CLASS = "STANDARD"
_KMS_ENCRYPTION = frozenset({"aws:kms", "aws:kms:dsse"})
_CONFLICT_CODES = CONFLICT_CODES


class VerificationMode(StrEnum):
    """How an object was shown to hold the recorded content."""

    ETAG = "etag"
    CHECKSUM = "checksum"
    MANIFEST = "manifest"


@dataclass(frozen=True)
class ObjectSettings:
    """Settings of every uploaded object, from ``backup.s3``."""

    storage_class: str = "STANDARD"
    server_side_encryption: str | None = "AES256"
    kms_key_id: str | None = None
    max_concurrency: int = 8

    @classmethod
    def from_settings(cls, s3: S3Settings) -> ObjectSettings:
        """The object settings of a ``backup.s3`` section."""
        return cls(
            storage_class=s3.storage_class,
            server_side_encryption=s3.server_side_encryption,
            kms_key_id=s3.kms_key_id,
            max_concurrency=s3.max_concurrency,
        )

    def encryption_args(self) -> dict[str, str]:
        """``ServerSideEncryption`` / ``SSEKMSKeyId`` request arguments."""
        args: dict[str, str] = {}
        if self.server_side_encryption:
            args["ServerSideEncryption"] = self.server_side_encryption
        if self.server_side_encryption == "aws:kms" and self.kms_key_id:
            args["SSEKMSKeyId"] = self.kms_key_id
        return args


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


def s3_metadata(values: Mapping[str, str]) -> dict[str, str]:
    """User metadata S3 accepts: lower-case keys, ASCII values (others percent-encoded)."""
    result = {}
    for name, value in values.items():
        text = str(value)
        result[name.lower()] = text if text.isascii() and text.isprintable() else quote(text, safe="")
    return result


def forbid_overwrites(client: Any) -> None:
    """Make every PutObject/CompleteMultipartUpload of ``client`` conditional on the key being free."""

    def if_none_match(params: dict[str, Any], **_kwargs: Any) -> None:
        params.setdefault("IfNoneMatch", "*")

    for operation in ("PutObject", "CompleteMultipartUpload"):
        client.meta.events.register(
            f"before-parameter-build.s3.{operation}", if_none_match, unique_id=f"rawvault-if-none-match-{operation}"
        )


def upload_file_set(
    client: Any,
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

    See the module docstring for the phases and the verification. Raises an
    :class:`~rawvault.s3.errors.S3BackupError` on the first problem; what
    was uploaded and verified before stays (a retry skips it), and so does an
    unfinished multipart upload stopped by a transient failure (a retry
    resumes it).

    ``multipart_uploads`` maps keys to the upload ids of unfinished multipart
    uploads recorded by an earlier run (preferred when resuming);
    ``on_multipart_upload(key, upload_id or None)`` is called when one is
    started/resumed or completed/aborted; ``guard()`` is called before every
    request that changes S3 and raises to stop the upload (the caller lost
    its claim on the raw file).
    """
    settings = object_settings or ObjectSettings()
    metadata = dict(metadata or {})
    check = guard or (lambda: None)
    validate_key_prefix(key_prefix)
    recorded = parse_file_info(file_info)
    for entry in recorded.values():
        check_part_size(entry, part_size)
    keys = {path: object_key(key_prefix, path) for path in recorded}
    manifest_key = manifest_mod.manifest_key(key_prefix, raw_file_id)
    if manifest_key in keys.values():
        raise UnsafePathError(f"file_info path {manifest_key!r} collides with the manifest key of the raw file")
    result = UploadResult(bucket=bucket, key_prefix=key_prefix, raw_file_id=raw_file_id, manifest_key=manifest_key)
    where = f"s3://{bucket}/{key_prefix}"

    # Phase 1: check everything before uploading anything.
    existing_manifest, existing_manifest_etag = _read_manifest(client, bucket, manifest_key)
    expected_identity = _manifest(result, recorded, keys, part_size, metadata, {})
    if existing_manifest is not None and not manifest_mod.same_set(existing_manifest, expected_identity):
        raise ExistingObjectMismatchError(
            f"s3://{bucket}/{manifest_key} is the manifest of a different set than raw file {raw_file_id!r} "
            "(other files, sizes, checksums or part size): rawvault never overwrites existing backup data; "
            "compare it with the raw file's file_info and resolve the conflict by hand"
        )
    manifest_files = (existing_manifest or {}).get("files", {})
    to_upload: list[RecordedFile] = []
    for path, entry in recorded.items():
        head = _head(client, bucket, keys[path])
        if head is None:
            _check_source(source_folder / path, entry)
            to_upload.append(entry)
            continue
        result.objects[path] = _verify_existing(
            head, entry, keys[path], bucket, source_folder / path, part_size, manifest_files.get(path)
        )
    skipped_bytes = sum(obj.size for obj in result.objects.values())
    log.info(
        "%s -> %s: %d of %d files to upload (%s), %d already there (%s, verified)",
        raw_file_id,
        where,
        len(to_upload),
        len(recorded),
        format_bytes(sum(entry.size for entry in to_upload)),
        len(result.objects),
        format_bytes(skipped_bytes),
    )

    # Phase 2: upload, verify, stop at the first failure.
    forbid_overwrites(client)
    progress = ProgressReporter(
        sum(entry.size for entry in to_upload), label=f"uploading {raw_file_id} to {where}", interval=progress_interval
    )
    multipart = _MultipartHooks(dict(multipart_uploads or {}), on_multipart_upload, check)
    for entry in to_upload:
        check()
        result.objects[entry.path] = _upload_one(
            client, bucket, keys[entry.path], source_folder / entry.path, entry, part_size, settings, metadata,
            progress, multipart,
        )  # fmt: skip
    if to_upload:
        progress.finish()

    # Phase 3: the manifest, last.
    ordered = {path: result.objects[path] for path in recorded}
    result.objects = ordered
    if existing_manifest is None:
        check()
        manifest = _manifest(result, recorded, keys, part_size, metadata, ordered)
        result.manifest_etag = _write_manifest(client, bucket, manifest_key, manifest, settings, metadata)
        result.manifest_written = True
    else:
        result.manifest_etag = existing_manifest_etag
    log.info(
        "%s: complete in %s (%d uploaded, %d skipped, manifest %s%s)",
        raw_file_id,
        where,
        len(result.uploaded),
        len(result.skipped),
        manifest_key,
        " written" if result.manifest_written else " already there",
    )
    return result


def verify_complete_set(
    client: Any,
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
    that object, whose ETag and size must be the ones in the manifest. S3
    errors are raised (classified), so an unreachable S3 is never taken for
    an incomplete set.
    """
    validate_key_prefix(key_prefix)
    recorded = parse_file_info(file_info)
    keys = {path: object_key(key_prefix, path) for path in recorded}
    manifest_key = manifest_mod.manifest_key(key_prefix, raw_file_id)
    result = UploadResult(bucket=bucket, key_prefix=key_prefix, raw_file_id=raw_file_id, manifest_key=manifest_key)
    manifest, manifest_etag = _read_manifest(client, bucket, manifest_key)
    expected = _manifest(result, recorded, keys, part_size, dict(metadata or {}), {})
    if manifest is None or not manifest_mod.same_set(manifest, expected):
        return None
    for path, entry in recorded.items():
        listed = manifest["files"][path]
        s3_etag = str(listed.get("s3_etag") or "")
        if not s3_etag:
            return None
        result.objects[path] = UploadedObject(
            path, keys[path], entry.size, entry.md5, entry.etag, s3_etag, listed.get("checksum_sha256"),
            VerificationMode.MANIFEST, False,
        )  # fmt: skip
    if len(recorded) == 1:
        ((path, obj),) = result.objects.items()
        head = _head(client, bucket, obj.key)
        if head is None or _s3_etag(head) != obj.s3_etag or head.get("ContentLength") != obj.size:
            return None
    result.manifest_etag = manifest_etag
    return result


def _head(client: Any, bucket: str, key: str) -> dict[str, Any] | None:
    try:
        return client.head_object(Bucket=bucket, Key=key, ChecksumMode="ENABLED")
    except ClientError as error:
        if is_not_found(error):
            return None
        raise classify(error, f"checking s3://{bucket}/{key}") from error
    except Exception as error:
        raise classify(error, f"checking s3://{bucket}/{key}") from error


def _s3_etag(head: Mapping[str, Any]) -> str:
    return str(head.get("ETag", "")).strip('"')


def _is_kms(head: Mapping[str, Any]) -> bool:
    return head.get("ServerSideEncryption") in _KMS_ENCRYPTION or bool(head.get("SSECustomerAlgorithm"))


def _check_source(source: Path, entry: RecordedFile) -> None:
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


def _checksum_problem(head: Mapping[str, Any], entry: RecordedFile, source: Path, part_size: int) -> str | None:
    """``checksum`` verification: None when S3's SHA-256 proves the object holds the recorded content."""
    try:
        digests = local_digests(source, part_size)
    except OSError as error:
        raise LocalFileChangedError(
            f"cannot read the local backup copy {source} to verify {entry.path} under SSE-KMS ({error.strerror})"
        ) from None
    if (digests.size, digests.md5, digests.etag) != (entry.size, entry.md5, entry.etag):
        raise LocalFileChangedError(
            f"local backup copy {source} (size {digests.size}, MD5 {digests.md5}) no longer matches what was "
            f"recorded for {entry.path} (size {entry.size}, MD5 {entry.md5}): it changed after checksumming"
        )
    remote, remote_parts = split_checksum(head.get("ChecksumSHA256"))
    if remote is None:
        return (
            "S3 reports no SHA-256 checksum for it, and its ETag is not an MD5 (SSE-KMS), so its content "
            "cannot be verified"
        )
    if remote != digests.sha256 or (remote_parts is not None and remote_parts != (digests.parts or 1)):
        return f"its SHA-256 checksum {head.get('ChecksumSHA256')} differs from the local file's {digests.sha256}"
    return None


def _verify_existing(
    head: Mapping[str, Any],
    entry: RecordedFile,
    key: str,
    bucket: str,
    source: Path,
    part_size: int,
    manifest_entry: Mapping[str, Any] | None,
) -> UploadedObject:
    s3_etag, size, checksum = _s3_etag(head), head.get("ContentLength"), head.get("ChecksumSHA256")

    def found(mode: VerificationMode) -> UploadedObject:
        log.info("%s: already in S3 with the recorded content (verified by %s), skipped", entry.path, mode.value)
        return UploadedObject(entry.path, key, entry.size, entry.md5, entry.etag, s3_etag, checksum, mode, False)

    problem = f"size {size}, ETag {s3_etag}"
    if size == entry.size:
        if s3_etag == entry.etag:
            return found(VerificationMode.ETAG)
        if (
            manifest_entry
            and manifest_entry.get("s3_etag") == s3_etag
            and manifest_entry.get("checksum_sha256") == checksum
            and (manifest_entry.get("size"), manifest_entry.get("md5"), manifest_entry.get("etag"))
            == (entry.size, entry.md5, entry.etag)
        ):
            return found(VerificationMode.MANIFEST)
        if _is_kms(head):
            checksum_problem = _checksum_problem(head, entry, source, part_size)
            if checksum_problem is None:
                return found(VerificationMode.CHECKSUM)
            problem += f"; {checksum_problem}"
    raise ExistingObjectMismatchError(
        f"s3://{bucket}/{key} already holds a different object ({problem}) than {entry.path} (size {entry.size}, "
        f"ETag {entry.etag}): rawvault never overwrites existing backup data, so nothing more of this raw file "
        "was uploaded; find out which copy is right and move or delete the object by hand if the local one is"
    )


@dataclass
class _MultipartHooks:
    """What a multipart upload needs from the caller: recorded upload ids, a recorder, the guard."""

    known: dict[str, str]
    on_upload_id: UploadIdCallback | None
    guard: Callable[[], None]


def _put_object(
    client: Any, bucket: str, key: str, source: Path, entry: RecordedFile, object_args: Mapping[str, Any],
    progress: ProgressReporter,
) -> None:  # fmt: skip
    """One PUT, streamed from the file, with a SHA-256 checksum; never replaces an object (If-None-Match)."""
    target = f"s3://{bucket}/{key}"
    try:
        with PartReader(source, 0, entry.size, progress) as body:
            client.put_object(
                Bucket=bucket,
                Key=key,
                Body=body if entry.size else b"",
                ContentLength=entry.size,
                ChecksumAlgorithm=CHECKSUM_ALGORITHM,
                IfNoneMatch="*",
                **object_args,
            )
    except ClientError as error:
        if error_code(error) in _CONFLICT_CODES:
            raise ObjectAppearedError(
                f"another object appeared at {target} during the upload of {entry.path}; S3 refused to replace it "
                "(rawvault never overwrites backup data): find out where it came from"
            ) from error
        raise classify(error, f"uploading {entry.path} to {target}") from error
    except OSError as error:
        raise LocalFileChangedError(
            f"cannot read the local backup copy {source} of {entry.path} ({error.strerror}): run copy_raw_file again"
        ) from error
    except Exception as error:
        raise classify(error, f"uploading {entry.path} to {target}") from error


def _upload_one(
    client: Any,
    bucket: str,
    key: str,
    source: Path,
    entry: RecordedFile,
    part_size: int,
    settings: ObjectSettings,
    metadata: Mapping[str, str],
    progress: ProgressReporter,
    multipart: _MultipartHooks,
) -> UploadedObject:
    target = f"s3://{bucket}/{key}"
    _check_source(source, entry)  # again: it may have changed since phase 1
    parts = multipart_parts(entry.size, part_size)
    log.info(
        "uploading %s (%s, %s) to %s",
        entry.path,
        format_bytes(entry.size),
        "one PUT" if parts is None else f"{parts} parts of {format_bytes(part_size)}",
        target,
    )
    object_args: dict[str, Any] = {
        "StorageClass": settings.storage_class,
        "Metadata": s3_metadata({**metadata, "md5": entry.md5}),
        **settings.encryption_args(),
    }
    parts_uploaded = parts_resumed = 0
    try:
        if parts is None:
            _put_object(client, bucket, key, source, entry, object_args, progress)
        else:
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
                known_upload_id=multipart.known.get(key),
                on_upload_id=multipart.on_upload_id,
                guard=multipart.guard,
                kms=settings.server_side_encryption in _KMS_ENCRYPTION,
            )
            parts_uploaded, parts_resumed = outcome.parts_uploaded, outcome.parts_resumed
    except (ObjectAppearedError, UploadVanishedError) as error:
        # Another run (a zombie of this one, a double trigger) may have stored the same file: accept it
        # only after the usual verification of an existing object, never replace it.
        head = _head(client, bucket, key)
        if head is None:
            raise
        log.warning("%s: %s; checking the object now at the key", entry.path, error)
        try:
            return _verify_existing(head, entry, key, bucket, source, part_size, None)
        except ExistingObjectMismatchError:
            raise error from None

    head = _head(client, bucket, key)
    if head is None:
        raise VerificationError(f"{target} is missing right after its upload succeeded: check the bucket")
    s3_etag, size, checksum = _s3_etag(head), head.get("ContentLength"), head.get("ChecksumSHA256")
    if size == entry.size and s3_etag == entry.etag:
        mode = VerificationMode.ETAG
    elif size == entry.size and _is_kms(head):
        try:
            problem = _checksum_problem(head, entry, source, part_size)
        except S3BackupError as error:
            _delete_uploaded(client, bucket, key, head)
            raise type(error)(f"{error}; the uploaded object was deleted again") from None
        if problem:
            _delete_uploaded(client, bucket, key, head)
            raise VerificationError(f"{target} does not hold {entry.path}: {problem}; it was deleted again")
        mode = VerificationMode.CHECKSUM
    else:
        deleted = _delete_uploaded(client, bucket, key, head)
        raise LocalFileChangedError(
            f"{target} has size {size} and ETag {s3_etag} after the upload, but {entry.path} was recorded with "
            f"size {entry.size} and ETag {entry.etag}: the local file changed after it was checksummed; "
            f"{deleted}. Check the file and checksum it again"
        )
    log.info(
        "%s: uploaded and verified by %s%s",
        entry.path,
        mode.value,
        f" ({parts_resumed} of {parts} parts resumed from an earlier run)" if parts_resumed else "",
    )
    return UploadedObject(
        entry.path, key, entry.size, entry.md5, entry.etag, s3_etag, checksum, mode, True, parts_uploaded, parts_resumed
    )


def _delete_uploaded(client: Any, bucket: str, key: str, head: Mapping[str, Any]) -> str:
    """Delete the object (version) this run uploaded and that failed verification; return a note."""
    version = head.get("VersionId")
    args: dict[str, str] = {"Bucket": bucket, "Key": key}
    if version and version != "null":
        args["VersionId"] = version
    try:
        client.delete_object(**args)
    except Exception as error:
        log.warning("could not delete the unverified object s3://%s/%s: %s", bucket, key, error)
        return f"deleting the unverified object failed ({type(error).__name__}): delete s3://{bucket}/{key} by hand"
    log.warning("deleted the unverified object s3://%s/%s (version %s)", bucket, key, version or "-")
    return "the uploaded object was deleted again"


def _read_manifest(client: Any, bucket: str, key: str) -> tuple[dict[str, Any] | None, str]:
    try:
        response = client.get_object(Bucket=bucket, Key=key)
        body = response["Body"].read()
    except ClientError as error:
        if is_not_found(error):
            return None, ""
        raise classify(error, f"reading manifest s3://{bucket}/{key}") from error
    except Exception as error:
        raise classify(error, f"reading manifest s3://{bucket}/{key}") from error
    try:
        return manifest_mod.decode(body), _s3_etag(response)
    except ValueError as error:
        raise ExistingObjectMismatchError(
            f"s3://{bucket}/{key} is where the raw file's manifest belongs, but it holds something else ({error}): "
            "rawvault never overwrites it; move it away by hand"
        ) from None


def _manifest(
    result: UploadResult,
    recorded: Mapping[str, RecordedFile],
    keys: Mapping[str, str],
    part_size: int,
    metadata: Mapping[str, str],
    objects: Mapping[str, UploadedObject],
) -> dict[str, Any]:
    files: dict[str, dict[str, Any]] = {}
    for path, entry in recorded.items():
        files[path] = {"key": keys[path], "size": entry.size, "md5": entry.md5, "etag": entry.etag}
        obj = objects.get(path)
        if obj is not None:
            files[path].update(
                {"s3_etag": obj.s3_etag, "checksum_sha256": obj.checksum_sha256, "verified_by": obj.verified_by.value}
            )
    return {
        "format": manifest_mod.MANIFEST_FORMAT,
        "raw_file_id": result.raw_file_id,
        "bucket": result.bucket,
        "key_prefix": result.key_prefix,
        "part_size": part_size,
        "checksum_algorithm": CHECKSUM_ALGORITHM,
        "metadata": dict(metadata),
        "file_count": len(recorded),
        "total_size": sum(entry.size for entry in recorded.values()),
        "files": files,
        "completed_at": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
    }


def _write_manifest(
    client: Any,
    bucket: str,
    key: str,
    manifest: dict[str, Any],
    settings: ObjectSettings,
    metadata: Mapping[str, str],
) -> str:
    try:
        response = client.put_object(
            Bucket=bucket,
            Key=key,
            Body=manifest_mod.encode(manifest),
            ContentType="application/json",
            ChecksumAlgorithm=CHECKSUM_ALGORITHM,
            StorageClass=MANIFEST_STORAGE_CLASS,
            Metadata=s3_metadata(metadata),
            IfNoneMatch="*",
            **settings.encryption_args(),
        )
    except ClientError as error:
        if error_code(error) not in _CONFLICT_CODES:
            raise classify(error, f"writing manifest s3://{bucket}/{key}") from error
        # Another run wrote it first: fine if it describes the same set.
        existing, etag = _read_manifest(client, bucket, key)
        if existing is not None and manifest_mod.same_set(existing, manifest):
            return etag
        raise ExistingObjectMismatchError(
            f"a different manifest appeared at s3://{bucket}/{key} during the upload; it was not overwritten"
        ) from None
    except Exception as error:
        raise classify(error, f"writing manifest s3://{bucket}/{key}") from error
    return _s3_etag(response)
