"""The S3 half of a restore: download the planned objects of a set into a folder, every file verified first.

Each path ``p`` of a :class:`RestorePlan` is restored to ``<target_folder>/p``.

1. Check, writing nothing: a target file that exists with the recorded size,
   MD5 and ETag is skipped; any other existing target is a
   :class:`RestoreConflictError` (listing every conflict) and is never
   overwritten. ``head_object`` every remaining object and ask
   :func:`rawvault.s3.objects.check_object` whether it holds the recorded file:
   a missing object, a wrong size or a wrong ETag is a
   :class:`RestoreVerificationError` listing every problem, and nothing is
   downloaded (an SSE-KMS object the manifest does not vouch for is
   downloaded and verified by its content). An object in an archive tier
   without a restored copy cannot be read: :class:`RestoreArchivedError` lists
   them with the ``aws s3api restore-object`` command for each
   (:mod:`rawvault.s3.archive`). S3 answering a download with
   ``InvalidObjectState`` gives the same error for that object.
2. Download each file with boto3's managed transfer (ranged GETs of one part
   each, ``max_concurrency`` at a time, memory bounded by s3transfer's queue),
   pinned to the object version checked in step 1, into a temporary file
   ``.NAME.rawvault-restore`` next to its final place; fsync it.
3. Verify the temporary file: size, MD5 and the S3 ETag recomputed with the
   recorded part size must equal the recorded ones; for a KMS object whose
   SHA-256 is in the manifest, S3's SHA-256 (composite for multipart) must
   match too. Only then is it linked to its final name (never replacing a
   file that appeared meanwhile) and the temporary file removed.

Files restored before a failure are verified and stay; running the restore
again skips them as identical. No database.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from boto3.s3.transfer import TransferConfig

from rawvault.digests import digest_file, split_checksum
from rawvault.s3.archive import RestoreArchivedError, RestoreError, archive_tier, archived_error
from rawvault.s3.errors import botocore_cause, classify, error_code
from rawvault.s3.keys import s3_url
from rawvault.s3.objects import ExpectedObject, VerdictKind, check_object, head, is_kms, version_of
from rawvault.s3.progress import ProgressReporter, format_bytes
from rawvault.safe_files import place_no_overwrite

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

__all__ = [
    "RestoreArchivedError",
    "RestoreConflictError",
    "RestoreError",
    "RestorePlan",
    "RestoreResult",
    "RestoreSourceError",
    "RestoreVerificationError",
    "object_problem",
    "restore_plan",
    "transfer_config",
]

log = logging.getLogger(__name__)

TEMP_SUFFIX = ".rawvault-restore"
DEFAULT_MAX_CONCURRENCY = 4
DEFAULT_PROGRESS_INTERVAL_SECONDS = 5.0


class RestoreSourceError(RestoreError):
    """What to restore cannot be determined (unknown raw file, no S3 backup, no database, bad manifest)."""


class RestoreConflictError(RestoreError):
    """A different file exists where a restored file should go; it is never overwritten."""


class RestoreVerificationError(RestoreError):
    """An object in S3 is missing or does not hold the recorded content."""


@dataclass(frozen=True)
class RestorePlan:
    """Everything a restore needs to know about a set, from the database or the manifest."""

    raw_file_id: str
    bucket: str
    key_prefix: str
    part_size: int
    files: dict[str, ExpectedObject]
    source: str  # "database" or "manifest"

    @property
    def s3_backup_key(self) -> str:
        return s3_url(self.bucket, self.key_prefix)


@dataclass
class RestoreResult:
    """What :func:`restore_plan` did."""

    raw_file_id: str
    bucket: str
    key_prefix: str
    target_folder: Path
    source: str
    restored: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # already in the target, identical
    bytes_downloaded: int = 0
    verified: dict[str, str] = field(default_factory=dict)  # path -> what was compared, e.g. "size, MD5, ETag"


def transfer_config(part_size: int, max_concurrency: int) -> TransferConfig:
    """boto3 managed-transfer settings whose parts match the recorded ETags.

    Uploads do not use boto3's managed transfer (it cannot resume, see
    :mod:`rawvault.s3.multipart`); downloads do, in ranged GETs of exactly one
    upload part each. s3transfer transfers multipart when ``size >=
    multipart_threshold``, so the threshold ``part_size + 1`` makes every file
    of at most ``part_size`` bytes one PUT. The classic (non-CRT) transfer
    client honours the chunk size exactly.
    """
    return TransferConfig(
        multipart_threshold=part_size + 1,
        multipart_chunksize=part_size,
        max_concurrency=max_concurrency,
        use_threads=True,
        preferred_transfer_client="classic",
    )


def object_problem(response: dict[str, Any] | None, entry: ExpectedObject) -> str | None:
    """What is wrong with the object (``head_object`` answer) before downloading it; ``None``: download it.

    An SSE-KMS object the manifest does not vouch for cannot be verified by its
    metadata; it is downloaded and verified by its content (step 3).
    """
    verdict = check_object(response, entry)
    if verdict.ok or verdict.kind is VerdictKind.CANNOT_VERIFY:
        return None
    return verdict.problem


def _temp_path(final: Path) -> Path:
    return final.with_name(f".{final.name}{TEMP_SUFFIX}")


def _matches(path: Path, entry: ExpectedObject, part_size: int) -> tuple[bool, str]:
    """Whether the existing file ``path`` holds ``entry``; and a description of what it holds."""
    size = path.stat().st_size
    if size != entry.size:
        return False, f"{size} bytes"
    digests = digest_file(path, part_size)
    return (digests.md5, digests.etag) == (entry.md5, entry.etag), f"{size} bytes, MD5 {digests.md5}"


def _check_target(target_root: Path, entry: ExpectedObject, part_size: int) -> tuple[bool, str | None]:
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


def _verify_download(temp: Path, entry: ExpectedObject, part_size: int, kms: bool, where: str) -> str:
    """Raise :class:`RestoreVerificationError` unless ``temp`` holds ``entry``; return what was verified."""
    with_sha = kms and bool(entry.checksum_sha256)
    digests = digest_file(temp, part_size, sha256=with_sha)
    problems = []
    if digests.size != entry.size:
        problems.append(f"size {digests.size} bytes, recorded {entry.size}")
    if digests.md5 != entry.md5:
        problems.append(f"MD5 {digests.md5}, recorded {entry.md5}")
    if digests.etag != entry.etag:
        problems.append(f"ETag {digests.etag}, recorded {entry.etag}")
    if with_sha:
        # S3 writes a multipart object's composite checksum as "<base64>-<parts>".
        recorded_sha, recorded_parts = split_checksum(entry.checksum_sha256)
        if digests.sha256 != recorded_sha or (recorded_parts is not None and recorded_parts != (digests.parts or 1)):
            problems.append(f"SHA-256 {digests.sha256}, recorded {entry.checksum_sha256}")
    if problems:
        raise RestoreVerificationError(
            f"{where} does not hold {entry.path}: the downloaded data has {'; '.join(problems)}. The object in S3 "
            "is corrupted or was replaced; nothing was written under its name. Check the object's older versions "
            "(versioned bucket) or the local backup"
        )
    return "size, MD5, ETag" + (", SHA-256" if with_sha else "")


def _publish(temp: Path, final: Path, entry: ExpectedObject, part_size: int) -> bool:
    """Give the verified ``temp`` its final name without ever replacing a file; False: an identical one appeared."""
    if place_no_overwrite(temp, final):
        return True
    identical, found = _matches(final, entry, part_size) if final.is_file() else (False, "not a file")
    if identical:
        return False
    raise RestoreConflictError(
        f"{final} appeared while {entry.path} was being restored and differs ({found}); it was not overwritten"
    )


def _pending_files(plan: RestorePlan, target_folder: Path, result: RestoreResult) -> list[ExpectedObject]:
    """The files still to download; identical ones go to ``result.skipped``, any conflict stops everything."""
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
    return pending


def _check_objects(client: S3Client, plan: RestorePlan, pending: list[ExpectedObject]) -> dict[str, dict[str, Any]]:
    """HEAD every pending object: their answers by path, or the error listing every problem or archived object."""
    heads: dict[str, dict[str, Any]] = {}
    problems = []
    archived = []
    for entry in pending:
        response = head(client, plan.bucket, entry.key)
        problem = object_problem(response, entry)
        if problem:
            problems.append(f"{s3_url(plan.bucket, entry.key)}: {problem}")
            continue
        assert response is not None
        heads[entry.path] = response
        tier = archive_tier(response)
        if tier:
            ongoing = 'ongoing-request="true"' in (response.get("Restore") or "")
            state = f"storage class {tier}, " + ("restore in progress" if ongoing else "not restored")
            archived.append((entry, state, response))
    if problems:
        raise RestoreVerificationError(
            f"the S3 backup of {plan.raw_file_id} ({plan.s3_backup_key}) does not match what the {plan.source} "
            f"records; nothing was downloaded:\n  "
            + "\n  ".join(problems)
            + "\nIn a versioned bucket an older version may still hold the backup (aws s3api list-object-versions); "
            "otherwise restore from the local backup"
        )
    if archived:
        raise archived_error(plan.raw_file_id, plan.bucket, plan.key_prefix, archived)
    return heads


def restore_plan(
    plan: RestorePlan,
    target_folder: Path,
    client: S3Client | None,
    *,
    max_concurrency: int = DEFAULT_MAX_CONCURRENCY,
    progress_interval: float = DEFAULT_PROGRESS_INTERVAL_SECONDS,
) -> RestoreResult:
    """Restore the files of ``plan`` into ``target_folder`` (see the module docstring)."""
    target_folder = Path(target_folder).expanduser().absolute()
    result = RestoreResult(plan.raw_file_id, plan.bucket, plan.key_prefix, target_folder, plan.source)
    if target_folder.exists() and not target_folder.is_dir():
        raise RestoreConflictError(f"the restore target {target_folder} exists and is not a folder")
    pending = _pending_files(plan, target_folder, result)
    assert client is not None or not pending, "a client is needed to download"
    heads = _check_objects(client, plan, pending) if pending else {}  # type: ignore[arg-type]
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
    progress = ProgressReporter(total, label=f"restoring {plan.raw_file_id}", interval=progress_interval, logger=log)
    config = transfer_config(plan.part_size, max_concurrency)
    for entry in pending:
        _download_one(client, plan, entry, heads[entry.path], target_folder, config, progress, result)  # type: ignore[arg-type]
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


def _download_one(
    client: S3Client,
    plan: RestorePlan,
    entry: ExpectedObject,
    response: dict[str, Any],
    target_folder: Path,
    config: TransferConfig,
    progress: ProgressReporter,
    result: RestoreResult,
) -> None:
    """Download one object (the version checked) to a temporary name, verify it, then give it its name."""
    where = s3_url(plan.bucket, entry.key)
    final = target_folder / entry.path
    final.parent.mkdir(parents=True, exist_ok=True)
    temp = _temp_path(final)
    version = version_of(response)
    extra_args = {"VersionId": version} if version else None  # exactly the version checked before
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
                raise archived_error(
                    plan.raw_file_id, plan.bucket, plan.key_prefix, refused, downloading=True
                ) from error
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
