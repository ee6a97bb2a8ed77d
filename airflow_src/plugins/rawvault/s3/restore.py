"""Restore a raw file set from S3 into a local folder, every file verified before it gets its name.

**What to restore** (:class:`RestorePlan`) comes from one of two places:

- the database (default): ``RawFile.file_info`` (``[size, md5, etag]`` per
  path), ``etag_part_size`` and ``s3_backup_key`` (``s3://<bucket>/<key_prefix>``).
  The set's manifest, when present, adds S3's ETag and SHA-256 of each object
  (needed under SSE-KMS); where it disagrees with the database, the database wins.
- the manifest alone (``manifest=`` / ``--from-manifest``), when the database
  is unavailable: ``s3://<bucket>/<key_prefix><raw_file_id>.rawvault-manifest.json``
  lists every file's key, size, MD5, ETag and SHA-256 and the part size.
  Objects are looked up next to the manifest, wherever the bucket now is.

Each path ``p`` is restored to ``<target_folder>/p``, so the target mirrors
the raw file's local backup folder (``NAME.raw``, ``NAME.d/...``).

**Steps**

1. Plan, writing nothing: a target file that exists with the recorded size,
   MD5 and ETag is skipped; any other existing target is a
   :class:`RestoreConflictError` (listing every conflict) and is never
   overwritten. ``head_object`` every remaining object: a missing object, a
   wrong size or a wrong ETag (S3's ETag equals the recorded MD5-based ETag
   unless the object is KMS-encrypted; then it must equal the S3 ETag in the
   manifest) is a :class:`RestoreVerificationError` listing every problem,
   and nothing is downloaded. An object in an archive tier (``GLACIER``,
   ``DEEP_ARCHIVE``, or Intelligent-Tiering's archive access tiers) without a
   restored copy cannot be read: :class:`RestoreArchivedError` lists them with
   the ``aws s3api restore-object`` command for each (``GLACIER_IR`` needs
   nothing). S3 answering a download with ``InvalidObjectState`` (the object
   moved to an archive tier meanwhile) gives the same error for that object.
2. Download each file with boto3's managed transfer (ranged GETs of one part
   each, ``max_concurrency`` at a time, memory bounded by s3transfer's queue),
   pinned to the object version checked in step 1, into a temporary file
   ``.NAME.rawvault-restore`` next to its final place; fsync it.
3. Verify the temporary file: size, MD5 and the S3 ETag recomputed with the
   recorded part size must equal the recorded ones; for a KMS object whose
   SHA-256 is in the manifest, S3's SHA-256 (composite for multipart) must
   match too. Only then is it linked to its final name (never replacing a file
   that appeared meanwhile) and the temporary file removed. On a mismatch the
   temporary file is deleted and a :class:`RestoreVerificationError` names the
   object: nothing is left under the final name.

Files restored before a failure are verified and stay; running the restore
again skips them as identical. Progress (bytes, percent, MiB/s, ETA) is
logged every ``progress_interval`` seconds.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rawvault.checksum import checksum_file
from rawvault.local_backup import fsync_dir
from rawvault.s3 import manifest as manifest_mod
from rawvault.s3.errors import S3BackupError, botocore_cause, classify, error_code
from rawvault.s3.integrity import (
    check_part_size,
    local_digests,
    multipart_parts,
    parse_file_info,
    split_checksum,
    transfer_config,
)
from rawvault.s3.keys import object_key, validate_key_prefix
from rawvault.s3.progress import ProgressReporter, format_bytes
from rawvault.s3.remote import (
    ManifestUnreadableError,
    S3UrlError,
    etag_of,
    head,
    is_kms,
    parse_s3_url,
    read_manifest,
    s3_url,
    version_of,
)

log = logging.getLogger(__name__)

TEMP_SUFFIX = ".rawvault-restore"
DEFAULT_MAX_CONCURRENCY = 4
DEFAULT_PROGRESS_INTERVAL_SECONDS = 5.0
MIB = 1024 * 1024
DEFAULT_PART_SIZE = 64 * MIB  # shared.settings.DEFAULT_PART_SIZE_MB; only when nothing is recorded
# Storage classes (and Intelligent-Tiering archive statuses) whose objects must be restored before a GET.
ARCHIVE_STORAGE_CLASSES = ("GLACIER", "DEEP_ARCHIVE")
ARCHIVE_ACCESS_TIERS = ("ARCHIVE_ACCESS", "DEEP_ARCHIVE_ACCESS")
MAX_COMMANDS_IN_MESSAGE = 20


class RestoreError(RuntimeError):
    """A restore failed; the message names the object or file and what to do."""


class RestoreSourceError(RestoreError):
    """What to restore cannot be determined (unknown raw file, no S3 backup, no database, bad manifest)."""


class RestoreConflictError(RestoreError):
    """A different file exists where a restored file should go; it is never overwritten."""


class RestoreVerificationError(RestoreError):
    """An object in S3 is missing or does not hold the recorded content."""


class RestoreArchivedError(RestoreError):
    """Objects are in an archive tier (Glacier Flexible Retrieval, Deep Archive): restore them in S3 first."""


@dataclass(frozen=True)
class ManifestLocation:
    """Where a set's manifest is: ``s3://<bucket>/<key_prefix><raw_file_id>.rawvault-manifest.json``."""

    bucket: str
    key: str

    @classmethod
    def parse(cls, url: str, raw_file_id: str | None = None) -> ManifestLocation:
        """The manifest at ``url``; a URL ending in ``/`` is a key prefix, completed with ``raw_file_id``."""
        try:
            bucket, key = parse_s3_url(url)
        except S3UrlError as error:
            raise RestoreSourceError(f"--from-manifest: {error}") from None
        if key == "" or key.endswith("/"):
            if not raw_file_id:
                raise RestoreSourceError(
                    f"--from-manifest {url} is a key prefix: name the manifest object "
                    f"(...<raw_file_id>{manifest_mod.MANIFEST_SUFFIX}) or give the raw file id"
                )
            key = manifest_mod.manifest_key(key, raw_file_id)
        if not key.endswith(manifest_mod.MANIFEST_SUFFIX):
            raise RestoreSourceError(
                f"--from-manifest {url} does not name a manifest: its key must end in {manifest_mod.MANIFEST_SUFFIX}"
            )
        return cls(bucket, key)

    @property
    def url(self) -> str:
        return s3_url(self.bucket, self.key)

    @property
    def key_prefix(self) -> str:
        """The key prefix the manifest lies under (its set's objects are next to it)."""
        return self.key[: self.key.rfind("/") + 1]


@dataclass(frozen=True)
class ExpectedFile:
    """One file to restore: its path in the set, its object key and what it must hold."""

    path: str
    key: str
    size: int
    md5: str
    etag: str  # recorded MD5-based ETag for ``part_size`` parts
    s3_etag: str | None = None  # the ETag S3 reported at upload (from the manifest), differs under SSE-KMS
    checksum_sha256: str | None = None  # S3's SHA-256 at upload (from the manifest), base64


@dataclass(frozen=True)
class RestorePlan:
    """Everything a restore needs to know about a set, from the database or the manifest."""

    raw_file_id: str
    bucket: str
    key_prefix: str
    part_size: int
    files: dict[str, ExpectedFile]
    source: str  # "database" or "manifest"

    @property
    def s3_backup_key(self) -> str:
        return s3_url(self.bucket, self.key_prefix)


@dataclass
class RestoreResult:
    """What :func:`restore_raw_file` did."""

    raw_file_id: str
    bucket: str
    key_prefix: str
    target_folder: Path
    source: str
    restored: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # already in the target, identical
    bytes_downloaded: int = 0
    verified: dict[str, str] = field(default_factory=dict)  # path -> what was compared, e.g. "size, MD5, ETag"


def _resolve_part_size(*candidates: int | None) -> int:
    for candidate in candidates:
        if candidate:
            if not isinstance(candidate, int) or candidate <= 0:
                raise RestoreSourceError(f"part size {candidate!r} is not a positive number of bytes")
            return candidate
    return DEFAULT_PART_SIZE


def _expected_files(
    raw_file_id: str,
    file_info: dict[str, Any],
    key_prefix: str,
    part_size: int,
    manifest_files: dict[str, Any],
) -> dict[str, ExpectedFile]:
    try:
        recorded = parse_file_info(file_info)
        validate_key_prefix(key_prefix)
        for entry in recorded.values():
            check_part_size(entry, part_size)
    except S3BackupError as error:
        raise RestoreSourceError(f"cannot restore raw file {raw_file_id!r}: {error}") from None
    files = {}
    for path, entry in recorded.items():
        extra = manifest_files.get(path) or {}
        if extra and (extra.get("size"), extra.get("md5"), extra.get("etag")) != (entry.size, entry.md5, entry.etag):
            log.warning(
                "the manifest of %s records %s differently from the database (size %s, MD5 %s): verifying "
                "against the database; run the verify command on this raw file",
                raw_file_id,
                path,
                extra.get("size"),
                extra.get("md5"),
            )
            extra = {}
        files[path] = ExpectedFile(
            path=path,
            key=object_key(key_prefix, path),
            size=entry.size,
            md5=entry.md5,
            etag=entry.etag,
            s3_etag=extra.get("s3_etag") or None,
            checksum_sha256=extra.get("checksum_sha256") or None,
        )
    return files


def plan_from_database(
    raw_file_id: str, client: Any, *, part_size: int | None = None, fallback_part_size: int | None = None
) -> RestorePlan:
    """The plan of raw file ``raw_file_id`` from its ``RawFile`` document (plus its manifest, if readable)."""
    from shared.db.interface import DatabaseError, RawFileNotFoundError, get_raw_file

    try:
        raw_file = get_raw_file(raw_file_id)
    except RawFileNotFoundError as error:
        raise RestoreSourceError(str(error)) from None
    except DatabaseError as error:
        raise RestoreSourceError(
            f"the database is unavailable ({error}); restore from the set's manifest instead: "
            f"--from-manifest s3://<bucket>/<key_prefix>{raw_file_id}{manifest_mod.MANIFEST_SUFFIX}"
        ) from None
    except Exception as error:  # pymongo's ServerSelectionTimeoutError and friends
        raise RestoreSourceError(
            f"cannot read raw file {raw_file_id!r} from the database ({type(error).__name__}: {error}); restore "
            f"from the set's manifest instead: --from-manifest s3://<bucket>/<key_prefix>{raw_file_id}"
            f"{manifest_mod.MANIFEST_SUFFIX}"
        ) from None
    if not raw_file.s3_backup_key:
        raise RestoreSourceError(
            f"raw file {raw_file_id!r} has no S3 backup (backup_status {raw_file.backup_status!r}, no "
            "s3_backup_key): only raw files with backup_status upload_done can be restored from S3"
        )
    if raw_file.backup_status != "upload_done":
        log.warning(
            "raw file %s has backup_status %r (not upload_done): restoring what its file_info records",
            raw_file_id,
            raw_file.backup_status,
        )
    try:
        bucket, key_prefix = parse_s3_url(raw_file.s3_backup_key)
    except S3UrlError as error:
        raise RestoreSourceError(f"raw file {raw_file_id!r} has an invalid s3_backup_key: {error}") from None
    manifest_key = manifest_mod.manifest_key(key_prefix, raw_file.id)
    manifest: dict[str, Any] = {}
    try:
        found = read_manifest(client, bucket, manifest_key)
    except ManifestUnreadableError as error:
        log.warning("%s: verifying against the database only", error)
        found = None
    if found is None:
        log.warning(
            "no manifest at %s: verifying against the database only (SSE-KMS objects cannot be checked "
            "against S3's SHA-256)",
            s3_url(bucket, manifest_key),
        )
    else:
        manifest = found[0]
    chosen = _resolve_part_size(part_size, raw_file.etag_part_size, manifest.get("part_size"), fallback_part_size)
    files = _expected_files(
        raw_file.id, dict(raw_file.file_info or {}), key_prefix, chosen, manifest.get("files") or {}
    )
    return RestorePlan(raw_file.id, bucket, key_prefix, chosen, files, "database")


def plan_from_manifest(
    location: ManifestLocation,
    client: Any,
    *,
    raw_file_id: str | None = None,
    part_size: int | None = None,
    fallback_part_size: int | None = None,
) -> RestorePlan:
    """The plan of the set whose manifest is at ``location`` (no database needed)."""
    try:
        found = read_manifest(client, location.bucket, location.key)
    except ManifestUnreadableError as error:
        raise RestoreSourceError(str(error)) from None
    if found is None:
        raise RestoreSourceError(
            f"there is no manifest at {location.url}: check the bucket and key "
            f"(s3://<bucket>/<key_prefix><raw_file_id>{manifest_mod.MANIFEST_SUFFIX}; the key prefix is the "
            "raw file's folder in the local backup, e.g. <instrument_id>/<YYYY_MM>/)"
        )
    manifest = found[0]
    manifest_id = manifest.get("raw_file_id")
    if not isinstance(manifest_id, str) or not manifest_id:
        raise RestoreSourceError(f"the manifest at {location.url} names no raw file id")
    if raw_file_id and raw_file_id != manifest_id:
        raise RestoreSourceError(
            f"the manifest at {location.url} is the one of raw file {manifest_id!r}, not {raw_file_id!r}: "
            "check the raw file id or the manifest URL"
        )
    if (manifest.get("bucket"), manifest.get("key_prefix")) != (location.bucket, location.key_prefix):
        log.warning(
            "the manifest was written for s3://%s/%s; restoring the objects next to it, under %s",
            manifest.get("bucket"),
            manifest.get("key_prefix"),
            s3_url(location.bucket, location.key_prefix),
        )
    files = manifest.get("files")
    if not isinstance(files, dict) or not files:
        raise RestoreSourceError(f"the manifest at {location.url} lists no files")
    try:
        file_info = {path: [entry["size"], entry["md5"], entry["etag"]] for path, entry in files.items()}
    except (KeyError, TypeError) as error:
        raise RestoreSourceError(f"the manifest at {location.url} has an incomplete file entry ({error})") from None
    chosen = _resolve_part_size(part_size, manifest.get("part_size"), fallback_part_size)
    expected = _expected_files(manifest_id, file_info, location.key_prefix, chosen, files)
    return RestorePlan(manifest_id, location.bucket, location.key_prefix, chosen, expected, "manifest")


def restore_raw_file(
    raw_file_id: str | None,
    target_folder: Path,
    client: Any,
    *,
    manifest: ManifestLocation | str | None = None,
    use_database: bool = True,
    part_size: int | None = None,
    fallback_part_size: int | None = None,
    max_concurrency: int = DEFAULT_MAX_CONCURRENCY,
    progress_interval: float = DEFAULT_PROGRESS_INTERVAL_SECONDS,
) -> RestoreResult:
    """Restore raw file ``raw_file_id`` (or the set of ``manifest``) from S3 into ``target_folder``, verified.

    The expected files come from the database unless ``manifest`` is given
    (an ``s3://`` URL of the manifest, or of its key prefix ending in ``/``)
    or ``use_database`` is false (then ``manifest`` is required); with both,
    ``raw_file_id`` must be the manifest's. ``part_size`` overrides the
    recorded part size of the ETags; ``fallback_part_size`` is used only when
    none is recorded. See the module docstring for the steps.

    Raises :class:`RestoreSourceError`, :class:`RestoreConflictError`,
    :class:`RestoreVerificationError` or an
    :class:`~rawvault.s3.errors.S3BackupError` (S3 failed or refused).
    """
    if manifest is not None:
        location = manifest if isinstance(manifest, ManifestLocation) else ManifestLocation.parse(manifest, raw_file_id)
        plan = plan_from_manifest(
            location, client, raw_file_id=raw_file_id, part_size=part_size, fallback_part_size=fallback_part_size
        )
    elif not use_database:
        raise RestoreSourceError(
            "without the database the restore needs the set's manifest: --from-manifest "
            f"s3://<bucket>/<key_prefix>{raw_file_id or '<raw_file_id>'}{manifest_mod.MANIFEST_SUFFIX}"
        )
    elif not raw_file_id:
        raise RestoreSourceError("name the raw file to restore (its raw file id)")
    else:
        plan = plan_from_database(raw_file_id, client, part_size=part_size, fallback_part_size=fallback_part_size)
    return restore_plan(
        plan, Path(target_folder), client, max_concurrency=max_concurrency, progress_interval=progress_interval
    )


def _temp_path(final: Path) -> Path:
    return final.with_name(f".{final.name}{TEMP_SUFFIX}")


def _matches(path: Path, entry: ExpectedFile, part_size: int) -> tuple[bool, str]:
    """Whether the existing file ``path`` holds ``entry``; and a description of what it holds."""
    size = path.stat().st_size
    if size != entry.size:
        return False, f"{size} bytes"
    digests = checksum_file(path, part_size)
    return (digests.md5, digests.etag) == (entry.md5, entry.etag), f"{size} bytes, MD5 {digests.md5}"


def _check_target(target_root: Path, entry: ExpectedFile, part_size: int) -> tuple[bool, str | None]:
    """``(already identical, conflict description)`` for the final place of ``entry``."""
    final = target_root / entry.path
    root = target_root.resolve()
    if not final.resolve().is_relative_to(root):
        return False, f"{final} leads outside {target_root} (through a symbolic link)"
    for parent in final.parents:
        if parent == target_root or not parent.is_relative_to(target_root):
            break
        if parent.exists() and not parent.is_dir():
            return False, f"{parent} is a file, but {entry.path} needs it to be a folder"
    if not final.exists() and not final.is_symlink():
        return False, None
    if not final.is_file():
        return False, f"{final} exists and is not a regular file"
    identical, found = _matches(final, entry, part_size)
    if identical:
        return True, None
    return False, (f"{final} exists and differs ({found}; the backup has {entry.size} bytes, MD5 {entry.md5})")


def _object_problem(response: dict[str, Any] | None, entry: ExpectedFile) -> str | None:
    """What is wrong with the object (``head_object`` answer), as far as S3's metadata shows."""
    if response is None:
        return "missing (no such key, or deleted)"
    size = response.get("ContentLength")
    if size != entry.size:
        return f"size differs: {size} bytes in S3, {entry.size} recorded"
    etag = etag_of(response)
    if etag == entry.etag:
        return None
    if not is_kms(response):
        return f"ETag differs: {etag} in S3, {entry.etag} recorded (the object was replaced or corrupted)"
    # SSE-KMS: S3's ETag is not an MD5; compare it with the one S3 reported at upload, when known.
    if entry.s3_etag and etag != entry.s3_etag:
        return f"ETag differs: {etag} in S3, {entry.s3_etag} recorded in the manifest (the object was replaced)"
    remote = response.get("ChecksumSHA256")
    if entry.checksum_sha256 and remote and remote != entry.checksum_sha256:
        return f"SHA-256 differs: {remote} in S3, {entry.checksum_sha256} recorded in the manifest"
    return None


def _archive_tier(response: dict[str, Any]) -> str | None:
    """The archive tier an object must be restored from before it can be read (``None``: readable now)."""
    storage_class = response.get("StorageClass") or "STANDARD"
    archive_status = response.get("ArchiveStatus")
    if storage_class in ARCHIVE_STORAGE_CLASSES:
        tier = storage_class
    elif archive_status in ARCHIVE_ACCESS_TIERS:
        tier = f"{storage_class} ({archive_status})"
    else:
        return None
    if 'ongoing-request="false"' in (response.get("Restore") or ""):
        return None  # a restored copy is available until its expiry date
    return tier


def _restore_command(bucket: str, key: str, response: dict[str, Any] | None) -> str:
    """The ``aws s3api restore-object`` command that makes an archived object readable."""
    version = version_of(response) if response else None
    intelligent_tiering = bool(response and response.get("StorageClass") == "INTELLIGENT_TIERING")
    # Intelligent-Tiering's archive tiers take no Days: the object moves back to the frequent access tier.
    days = "" if intelligent_tiering else '"Days":7,'
    request = f'{{{days}"GlacierJobParameters":{{"Tier":"Standard"}}}}'
    return (
        f"aws s3api restore-object --bucket {bucket} --key '{key}'"
        + (f" --version-id {version}" if version else "")
        + f" --restore-request '{request}'"
    )


def _archived_error(
    plan: RestorePlan, archived: list[tuple[ExpectedFile, str, dict[str, Any] | None]], *, downloading: bool = False
) -> RestoreError:
    """:class:`RestoreArchivedError` naming each archived object, with the command that restores it."""
    lines = [f"{s3_url(plan.bucket, entry.key)}: {state}" for entry, state, _response in archived]
    commands = [
        _restore_command(plan.bucket, entry.key, response)
        for entry, state, response in archived
        if "in progress" not in state
    ]
    text = (
        f"{len(archived)} object(s) of {plan.raw_file_id} ({plan.s3_backup_key}) are in an S3 archive tier (Glacier "
        "Flexible Retrieval or Deep Archive) and cannot be downloaded until they are restored from Glacier in S3; "
        + ("files restored before it are verified and stay" if downloading else "nothing was downloaded")
        + ":\n  "
        + "\n  ".join(lines)
    )
    if commands:
        shown = commands[:MAX_COMMANDS_IN_MESSAGE]
        more = len(commands) - len(shown)
        text += (
            "\nRestore them first (or in the S3 console: select the objects, Actions > Initiate restore), e.g.\n  "
            + "\n  ".join(shown)
            + (f"\n  ... and {more} more" if more else "")
        )
    text += (
        "\nA Standard restore takes about 3-5 hours from GLACIER and up to 12 hours from DEEP_ARCHIVE (Bulk is "
        "cheaper and slower, Expedited faster for GLACIER); run this restore again once every object shows "
        'ongoing-request="false" (aws s3api head-object)'
    )
    return RestoreArchivedError(text)


def _verify_download(temp: Path, entry: ExpectedFile, part_size: int, kms: bool, where: str) -> str:
    """Raise :class:`RestoreVerificationError` unless ``temp`` holds ``entry``; return what was verified."""
    if kms and entry.checksum_sha256:
        digests = local_digests(temp, part_size)
        size, md5, etag, sha256 = digests.size, digests.md5, digests.etag, digests.sha256
    else:
        checksum = checksum_file(temp, part_size)
        size, md5, etag, sha256 = checksum.size, checksum.md5, checksum.etag, None
    problems = []
    if size != entry.size:
        problems.append(f"size {size} bytes, recorded {entry.size}")
    if md5 != entry.md5:
        problems.append(f"MD5 {md5}, recorded {entry.md5}")
    if etag != entry.etag:
        problems.append(f"ETag {etag}, recorded {entry.etag}")
    if sha256 is not None:
        # S3 writes a multipart object's composite checksum as "<base64>-<parts>".
        recorded_sha, recorded_parts = split_checksum(entry.checksum_sha256)
        parts = multipart_parts(size, part_size) or 1
        if sha256 != recorded_sha or (recorded_parts is not None and recorded_parts != parts):
            problems.append(f"SHA-256 {sha256}, recorded {entry.checksum_sha256}")
    if problems:
        raise RestoreVerificationError(
            f"{where} does not hold {entry.path}: the downloaded data has {'; '.join(problems)}. The object in S3 "
            "is corrupted or was replaced; nothing was written under its name. Check the object's older versions "
            "(versioned bucket) or the local backup"
        )
    return "size, MD5, ETag" + (", SHA-256" if sha256 is not None else "")


def _publish(temp: Path, final: Path, entry: ExpectedFile, part_size: int) -> bool:
    """Give the verified ``temp`` its final name without ever replacing a file; False: an identical one appeared."""
    try:
        os.link(temp, final)  # fails if ``final`` exists: no window in which a file could be replaced
    except FileExistsError:
        identical, found = _matches(final, entry, part_size) if final.is_file() else (False, "not a file")
        if identical:
            return False
        raise RestoreConflictError(
            f"{final} appeared while {entry.path} was being restored and differs ({found}); it was not overwritten"
        ) from None
    except OSError:
        # A file system without hard links (some network shares): check, then rename.
        if final.exists() or final.is_symlink():
            raise RestoreConflictError(
                f"{final} appeared while {entry.path} was being restored; it was not overwritten"
            ) from None
        temp.rename(final)
    fsync_dir(final.parent)
    return True


def restore_plan(
    plan: RestorePlan,
    target_folder: Path,
    client: Any,
    *,
    max_concurrency: int = DEFAULT_MAX_CONCURRENCY,
    progress_interval: float = DEFAULT_PROGRESS_INTERVAL_SECONDS,
) -> RestoreResult:
    """Restore the files of ``plan`` into ``target_folder`` (see the module docstring)."""
    target_folder = Path(target_folder).expanduser().absolute()
    result = RestoreResult(plan.raw_file_id, plan.bucket, plan.key_prefix, target_folder, plan.source)
    if target_folder.exists() and not target_folder.is_dir():
        raise RestoreConflictError(f"the restore target {target_folder} exists and is not a folder")

    # Step 1: check every target and every object before writing anything.
    conflicts, pending = [], []
    for entry in plan.files.values():
        identical, conflict = _check_target(target_folder, entry, plan.part_size)
        if conflict:
            conflicts.append(conflict)
        elif identical:
            result.skipped.append(entry.path)
        else:
            pending.append(entry)
    if conflicts:
        raise RestoreConflictError(
            f"restoring {plan.raw_file_id} into {target_folder} would overwrite {len(conflicts)} different "
            "file(s); nothing was restored (rawvault never overwrites a file). Restore into an empty folder or "
            "move these aside:\n  " + "\n  ".join(conflicts)
        )
    heads: dict[str, dict[str, Any]] = {}
    problems = []
    archived: list[tuple[ExpectedFile, str, dict[str, Any] | None]] = []
    for entry in pending:
        response = head(client, plan.bucket, entry.key)
        problem = _object_problem(response, entry)
        if problem:
            problems.append(f"{s3_url(plan.bucket, entry.key)}: {problem}")
            continue
        assert response is not None
        heads[entry.path] = response
        tier = _archive_tier(response)
        if tier:
            ongoing = 'ongoing-request="true"' in (response.get("Restore") or "")
            archived.append((entry, f"storage class {tier}, " + ("restore in progress" if ongoing else "not restored"),
                             response))  # fmt: skip
    if problems:
        raise RestoreVerificationError(
            f"the S3 backup of {plan.raw_file_id} ({plan.s3_backup_key}) does not match what the {plan.source} "
            f"records; nothing was downloaded:\n  "
            + "\n  ".join(problems)
            + "\nIn a versioned bucket an older version may still hold the backup (aws s3api list-object-versions); "
            "otherwise restore from the local backup"
        )
    if archived:
        raise _archived_error(plan, archived)
    total = sum(entry.size for entry in pending)
    log.info(
        "restoring %s from %s (file list from the %s) into %s: %d file(s) to download (%s), %d already there "
        "and identical",
        plan.raw_file_id,
        plan.s3_backup_key,
        plan.source,
        target_folder,
        len(pending),
        format_bytes(total),
        len(result.skipped),
    )

    # Steps 2 and 3: download to a temporary name, verify, then give it its name.
    progress = ProgressReporter(total, label=f"restoring {plan.raw_file_id}", interval=progress_interval, logger=log)
    config = transfer_config(plan.part_size, max_concurrency)
    for entry in pending:
        where = s3_url(plan.bucket, entry.key)
        final = target_folder / entry.path
        final.parent.mkdir(parents=True, exist_ok=True)
        temp = _temp_path(final)
        response = heads[entry.path]
        version = version_of(response)
        extra_args = {"VersionId": version} if version else None  # exactly the version checked above
        try:
            try:
                with temp.open("wb") as handle:
                    client.download_fileobj(
                        plan.bucket, entry.key, handle, ExtraArgs=extra_args, Config=config, Callback=progress
                    )
                    handle.flush()
                    os.fsync(handle.fileno())
            except OSError as error:
                raise RestoreError(f"cannot write {temp} while restoring {entry.path}: {error}") from error
            except Exception as error:
                if error_code(botocore_cause(error) or error) == "InvalidObjectState":
                    # Moved to an archive tier after it was checked (a lifecycle rule), or HEAD did not say.
                    refused = [(entry, "S3 refused to read it (InvalidObjectState)", response)]
                    raise _archived_error(plan, refused, downloading=True) from error
                raise classify(error, f"downloading {where}") from error
            verified = _verify_download(temp, entry, plan.part_size, is_kms(response), where)
            if _publish(temp, final, entry, plan.part_size):
                result.restored.append(entry.path)
                result.bytes_downloaded += entry.size
                result.verified[entry.path] = verified
                log.info("restored %s (%s), verified: %s", entry.path, format_bytes(entry.size), verified)
            else:
                result.skipped.append(entry.path)
                log.info("%s appeared meanwhile and is identical: kept", entry.path)
        finally:
            temp.unlink(missing_ok=True)
    if pending:
        progress.finish()
    log.info(
        "restored %s into %s: %d file(s) downloaded and verified, %d already there",
        plan.raw_file_id,
        target_folder,
        len(result.restored),
        len(result.skipped),
    )
    return result
