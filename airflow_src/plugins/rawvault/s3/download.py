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
   pinned to the object version checked in step 1, into a new temporary file
   next to its final place, fsynced. The target folder may be writable by
   others, so nothing there is trusted (:mod:`rawvault.safe_files`): folders
   are walked and created from a descriptor of the target folder without
   following symbolic links (a link anywhere below the target folder stops
   the restore, naming it); the temporary file has a random name
   (``.NAME.<random>.rawvault-restore``) and is created ``O_CREAT | O_EXCL |
   O_NOFOLLOW`` with mode 0o600, and is written and read back through its own
   descriptor only.
3. Verify the temporary file (:func:`rawvault.s3.objects.check_content`): size,
   MD5 and the S3 ETag recomputed with the recorded part size must equal the
   recorded ones; for a KMS object whose SHA-256 is in the manifest, S3's
   SHA-256 (composite for multipart) must match too. Only then does it get
   its final name, by a hard link that never replaces an entry, and lose its
   temporary name, so no other name shares its inode: a later or concurrent
   restore writes only into files of its own. A file that appeared meanwhile
   is kept if identical, else it is a conflict.

Files restored before a failure are verified and stay; running the restore
again skips them as identical. No database.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from boto3.s3.transfer import TransferConfig

from rawvault.s3.archive import RestoreArchivedError, RestoreError, archive_tier, archived_error
from rawvault.s3.client import S3Client
from rawvault.s3.errors import botocore_cause, classify, error_code
from rawvault.s3.keys import s3_url
from rawvault.s3.objects import ExpectedObject, VerdictKind, check_content, check_object, head, is_kms, version_of
from rawvault.s3.progress import ProgressReporter, format_bytes
from rawvault.s3.restore_target import (
    TEMP_SUFFIX,
    RestoreConflictError,
    RestoreTarget,
    TemporaryFile,
    digest_descriptor,
)

__all__ = [
    "TEMP_SUFFIX",
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

DEFAULT_MAX_CONCURRENCY = 4
DEFAULT_PROGRESS_INTERVAL_SECONDS = 5.0


class RestoreSourceError(RestoreError):
    """What to restore cannot be determined (unknown raw file, no S3 backup, no database, bad manifest)."""


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


def _verify_download(descriptor: int, entry: ExpectedObject, part_size: int, kms: bool, where: str) -> str:
    """Raise :class:`RestoreVerificationError` unless the file ``descriptor`` holds ``entry``; say what was checked."""
    with_sha = kms and bool(entry.checksum_sha256)
    verdict = check_content(digest_descriptor(descriptor, part_size, sha256=with_sha), entry, sha256=with_sha)
    if not verdict.ok:
        raise RestoreVerificationError(
            f"{where} does not hold {entry.path}: {verdict.problem}. The object in S3 is corrupted or was replaced; "
            "nothing was written under its name. Check the object's older versions (versioned bucket) or the local "
            "backup"
        )
    return "size, MD5, ETag" + (", SHA-256" if with_sha else "")


def _pending_files(plan: RestorePlan, target: RestoreTarget, result: RestoreResult) -> list[ExpectedObject]:
    """The files still to download; identical ones go to ``result.skipped``, any conflict stops everything."""
    conflicts, pending = [], []
    for entry in plan.files.values():
        identical, conflict = target.check(entry, plan.part_size)
        if conflict:
            conflicts.append(conflict)
        elif identical:
            result.skipped.append(entry.path)
        else:
            pending.append(entry)
    if conflicts:
        raise RestoreConflictError(
            f"restoring {plan.raw_file_id} into {target.root} would overwrite {len(conflicts)} different "
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
    with RestoreTarget(target_folder) as target:
        pending = _pending_files(plan, target, result)
        assert client is not None or not pending, "a client is needed to download"
        heads = _check_objects(client, plan, pending) if pending else {}  # type: ignore[arg-type]
        total = sum(entry.size for entry in pending)
        log.info(
            "restoring %s from %s (file list from the %s) into %s: %d file(s) to download (%s), %d already there "
            "and identical",
            plan.raw_file_id, plan.s3_backup_key, plan.source, target_folder, len(pending), format_bytes(total),
            len(result.skipped),
        )  # fmt: skip
        progress = ProgressReporter(
            total, label=f"restoring {plan.raw_file_id}", interval=progress_interval, logger=log
        )
        config = transfer_config(plan.part_size, max_concurrency)
        for entry in pending:
            _download_one(client, plan, entry, heads[entry.path], target, config, progress, result)  # type: ignore[arg-type]
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
    target: RestoreTarget,
    config: TransferConfig,
    progress: ProgressReporter,
    result: RestoreResult,
) -> None:
    """Download one object (the version checked) to a new temporary file, verify it, then give it its name."""
    temporary = target.new_temporary(entry)
    try:
        _fetch(client, plan, entry, response, temporary, config, progress)
        where = s3_url(plan.bucket, entry.key)
        verified = _verify_download(temporary.descriptor, entry, plan.part_size, is_kms(response), where)
        published = target.publish(temporary, entry, plan.part_size)
    finally:
        temporary.close()
    if published:
        result.restored.append(entry.path)
        result.bytes_downloaded += entry.size
        result.verified[entry.path] = verified
        log.info("restored %s (%s), verified: %s", entry.path, format_bytes(entry.size), verified)
    else:
        result.skipped.append(entry.path)
        log.info("%s appeared meanwhile and is identical: kept", entry.path)


def _fetch(
    client: S3Client,
    plan: RestorePlan,
    entry: ExpectedObject,
    response: dict[str, Any],
    temporary: TemporaryFile,
    config: TransferConfig,
    progress: ProgressReporter,
) -> None:
    """Download the checked version of ``entry``'s object into the temporary file and fsync it."""
    version = version_of(response)
    extra_args = {"VersionId": version} if version else None  # exactly the version checked before
    try:
        with open(temporary.descriptor, "r+b", closefd=False) as handle:
            client.download_fileobj(
                plan.bucket, entry.key, handle, ExtraArgs=extra_args, Config=config, Callback=progress
            )
            handle.flush()
            os.fsync(temporary.descriptor)
    except OSError as error:
        raise RestoreError(f"cannot write {temporary.path} while restoring {entry.path}: {error}") from error
    except Exception as error:
        if error_code(botocore_cause(error) or error) == "InvalidObjectState":
            # Moved to an archive tier after it was checked (a lifecycle rule), or HEAD did not say.
            refused = [(entry, "S3 refused to read it (InvalidObjectState)", response)]
            raise archived_error(plan.raw_file_id, plan.bucket, plan.key_prefix, refused, downloading=True) from error
        raise classify(error, f"downloading {s3_url(plan.bucket, entry.key)}") from error
