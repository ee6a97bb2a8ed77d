"""The verified local copy of a raw file set, made from one read of the instrument share.

Two halves, one per task:

- :func:`stage_raw_file_set` (``compute_checksum``): reads each file of the set
  once and, from the same buffers, computes its size, MD5 and S3 ETag and
  writes a staged copy into the run's private staging folder of the local
  backup (:mod:`rawvault.staging`: ``<backup root>/.rawvault-staging/<token>/``,
  ``O_EXCL``, fsynced), never beside a published file. A file whose final
  name is already in the backup is only hashed (one read all the same); the
  copy step compares the two.
- :func:`publish_raw_file_set` (``copy_raw_file``): verifies every staged copy
  of the recorded run (size, and MD5 read back from the backup disk) before
  publishing any, then gives each its final name with the no-overwrite link
  of :mod:`rawvault.safe_files`. A staged copy that does not verify is deleted
  and the step fails. A file without a staged copy of the recorded run (a
  document checksummed by an older rawvault, a staged copy deleted meanwhile)
  is copied from the share as before: read again, verified, renamed into place.

Nothing unverified ever gets a final name, an existing different file is never
overwritten, and the share is only read. Published copies get
:data:`~rawvault.staging.PUBLISHED_MODE` (never the share's permission bits)
and the share's modification time. Nothing in the published tree is ever
deleted here: every temporary file lives in the staging area.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable
from contextlib import suppress
from dataclasses import dataclass, field
from pathlib import Path

from rawvault.checksum import checksum_file, safe_join
from rawvault.digests import DEFAULT_PROGRESS_INTERVAL_SECONDS, ProgressCallback, digest_file, digest_stream
from rawvault.safe_files import place_no_overwrite
from rawvault.staging import (
    PUBLISHED_MODE,
    StagedCopy,
    check_free_space,
    discard_staging,
    locked_for_reading,
    make_staging_folder,
    new_staging_token,
    remove_empty_run_folders,
    staging_path,
    sync_folders,
)
from shared.s3_limits import MIB

log = logging.getLogger(__name__)

__all__ = [
    "BackupConflictError",
    "CopyResult",
    "CopyVerificationError",
    "StagedSet",
    "discard_staged_set",
    "publish_raw_file_set",
    "stage_raw_file_set",
]


class BackupConflictError(RuntimeError):
    """A different file already exists where the backup copy should go."""


class CopyVerificationError(RuntimeError):
    """A copy or its source does not match the recorded size and MD5."""


@dataclass
class StagedSet:
    """What :func:`stage_raw_file_set` did: the set's file info and which files it staged or only hashed."""

    file_info: dict[str, list] = field(default_factory=dict)
    staged: list[str] = field(default_factory=list)
    hashed_only: list[str] = field(default_factory=list)  # already in the backup under their final name

    @property
    def bytes_read(self) -> int:
        """Bytes read from the share: each file exactly once."""
        return sum(entry[0] for entry in self.file_info.values())


@dataclass
class CopyResult:
    """What one publishing run did."""

    copied: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    from_share: list[str] = field(default_factory=list)  # no staged copy: read from the share again
    bytes_copied: int = 0


# --- compute_checksum: one read of the share, the staged copy from the same buffers ------------------------


def stage_raw_file_set(
    source_root: Path,
    relative_paths: Iterable[str],
    target_root: Path,
    part_size: int,
    token: str,
    *,
    backup_root: Path | None = None,
    progress_interval: float = DEFAULT_PROGRESS_INTERVAL_SECONDS,
) -> StagedSet:
    """Checksum every ``source_root/<path>`` in one read and stage its copy for ``target_root/<path>``.

    The staging area is below ``backup_root`` (``locations.backup``; default
    ``target_root``), which holds ``target_root``. Staged copies left by
    earlier runs are deleted first. On any error every
    staged copy of this run is deleted again and the error propagates
    (:class:`~rawvault.checksum.FileChangedError`,
    :class:`~rawvault.staging.BackupDiskFullError`, ``OSError``, ...).
    """
    paths = list(relative_paths)
    root = backup_root or target_root
    finals = {path: safe_join(target_root, path) for path in paths}
    for final in finals.values():
        discard_staging(final, root)
    to_stage = {path for path, final in finals.items() if not final.exists()}
    needed = sum(safe_join(source_root, path).stat().st_size for path in to_stage)
    check_free_space(target_root, needed, f"staging {len(to_stage)} file{'' if len(to_stage) == 1 else 's'}")
    result = StagedSet()
    try:
        for path in paths:
            source = safe_join(source_root, path)
            if path in to_stage:
                staged = StagedCopy(finals[path], token, source.stat().st_size, root)
                result.file_info[path] = _checksum_and_stage(source, staged, part_size, progress_interval)
                result.staged.append(path)
            else:
                log.info("%s is in the backup already: checksummed only (copy_raw_file compares them)", path)
                result.file_info[path] = checksum_file(source, part_size, progress=_progress_logger(path)).as_list()
                result.hashed_only.append(path)
        sync_folders([staging_path(finals[path], token, root) for path in result.staged])
    except BaseException:
        discard_staged_set(target_root, paths, token, backup_root=root)
        raise
    return result


def _checksum_and_stage(source: Path, staged: StagedCopy, part_size: int, progress_interval: float) -> list:
    with staged:
        progress = _progress_logger(staged.final.name)
        checksum = checksum_file(
            source, part_size, sink=staged.write, progress=progress, progress_interval=progress_interval
        )
        # checksum_file proved the size and modification time did not change while it read.
        staged.finish(source.stat())
    return checksum.as_list()


def _progress_logger(name: str) -> ProgressCallback:
    def report(done: int, total: int) -> None:
        log.info("%s: %.0f of %.0f MiB read", name, done / MIB, total / MIB)

    return report


def discard_staged_set(
    target_root: Path, relative_paths: Iterable[str], token: str, *, backup_root: Path | None = None
) -> None:
    """Delete the staged copies of run ``token`` for these paths (nothing else; never a published file)."""
    root = backup_root or target_root
    for path in relative_paths:
        staged = staging_path(safe_join(target_root, path), token, root)
        staged.unlink(missing_ok=True)
        remove_empty_run_folders(staged.parent, root)


# --- copy_raw_file: verify the staged copies, then publish them ---------------------------------------------


def publish_raw_file_set(
    source_root: Path,
    file_info: dict[str, list],
    target_root: Path,
    staging_token: str | None,
    *,
    backup_root: Path | None = None,
) -> CopyResult:
    """Give every file of ``file_info`` its verified copy at ``target_root/<path>``.

    ``file_info`` maps relative paths to ``[size, md5, etag]``. A target that
    already holds an identical file is skipped; a different one raises
    :class:`BackupConflictError` and is left as it is. Staged copies of run
    ``staging_token`` are verified (all before any is published); a file
    without one is copied from ``source_root`` (see the module docstring).
    The staging area is below ``backup_root`` (default ``target_root``).
    """
    root = backup_root or target_root
    result = CopyResult()
    staged: list[tuple[str, int, str]] = []
    unstaged: list[tuple[str, int, str]] = []
    # Check every target before publishing anything, so a conflict stops the set untouched.
    for relative_path, (size, md5, _etag) in sorted(file_info.items()):
        target = safe_join(target_root, relative_path)
        if target.exists():
            _check_existing_target(target, size, md5, relative_path)
            result.skipped.append(relative_path)
        elif staging_token and staging_path(target, staging_token, root).is_file():
            staged.append((relative_path, size, md5))
        else:
            unstaged.append((relative_path, size, md5))
    # Verify every staged copy before publishing any: a bad one fails the set with nothing published.
    verified = [entry for entry in staged if _verify_staged(target_root, root, entry, str(staging_token), unstaged)]
    for relative_path, size, md5 in verified:
        target = target_root / relative_path
        _publish(staging_path(target, str(staging_token), root), target, size, md5, root)
    for relative_path, size, md5 in unstaged:
        log.warning(
            "%s has no staged copy of the last compute_checksum run: copying it from the instrument share (read again)",
            relative_path,
        )
        _copy_verified(safe_join(source_root, relative_path), target_root / relative_path, size, md5, root)
        result.from_share.append(relative_path)
    for entry in staged:
        if entry not in verified and entry not in unstaged:
            result.skipped.append(entry[0])  # published by another run of this raw file meanwhile
    for relative_path, size, _md5 in verified + unstaged:
        result.copied.append(relative_path)
        result.bytes_copied += size
    for relative_path in file_info:
        discard_staging(target_root / relative_path, root)  # leftovers of any run (staging area only)
    return result


def _verify_staged(target_root: Path, root: Path, entry: tuple[str, int, str], token: str, unstaged: list) -> bool:
    """Whether the staged copy of ``entry`` holds it (read back from the backup disk); a mismatch deletes it.

    A staged copy that vanished was published (or discarded) by another run of
    this raw file: fine when the identical file is in place now, else the file
    goes to ``unstaged`` (copied from the share).
    """
    relative_path, size, md5 = entry
    path = staging_path(target_root / relative_path, token, root)
    try:
        with locked_for_reading(path) as stream:
            actual_size = os.fstat(stream.fileno()).st_size
            # Drop cached pages first, so the MD5 is of what the disk holds (the writer fsynced them).
            with suppress(OSError, AttributeError):
                os.posix_fadvise(stream.fileno(), 0, 0, os.POSIX_FADV_DONTNEED)
            actual_md5 = digest_stream(stream, None, size=actual_size).md5 if actual_size == size else None
    except FileNotFoundError:
        target = target_root / relative_path
        if target.exists():
            _check_existing_target(target, size, md5, relative_path)
        else:
            unstaged.append(entry)
        return False
    if actual_size == size and actual_md5 == md5:
        return True
    path.unlink(missing_ok=True)
    found = f"size {actual_size} bytes" + (f", MD5 {actual_md5}" if actual_md5 else "")
    raise CopyVerificationError(
        f"the staged copy {path} of {relative_path} does not match what compute_checksum read from the instrument "
        f"share ({found}; recorded size {size} bytes, MD5 {md5}): it was deleted and nothing of this raw file was "
        f"published. The backup disk may be failing: check {path.parent}, then clear copy_raw_file (it copies the "
        "file from the share again, verified) or compute_checksum (stages the set again)"
    )


def _publish(staged: Path, target: Path, size: int, md5: str, root: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        with locked_for_reading(staged):
            placed = place_no_overwrite(staged, target)
            staged.unlink(missing_ok=True)
            remove_empty_run_folders(staged.parent, root)
    except FileNotFoundError:
        placed = False  # another run of this raw file published it meanwhile
    if not placed:
        # Another run put the file in place meanwhile: fine if identical, never overwritten if not.
        _check_existing_target(target, size, md5, target.name)
        return
    log.info("published %s (%d bytes, MD5 %s verified on the backup disk)", target, size, md5)


def md5_of_file(path: Path) -> str:
    """Hex MD5 of a file's content."""
    return digest_file(path, None).md5


def _check_existing_target(target: Path, size: int, md5: str, relative_path: str) -> None:
    actual_size = target.stat().st_size
    if actual_size == size and md5_of_file(target) == md5:
        log.info("%s is already in the backup and identical: skipped", relative_path)
        return
    raise BackupConflictError(
        f"a different file is already in the backup at {target} (size {actual_size} bytes, expected {size} bytes "
        f"with MD5 {md5}); it was not overwritten. It may belong to another acquisition with the same name: "
        "move it aside after checking it, then clear this task to retry"
    )


def _copy_verified(source: Path, target: Path, size: int, md5: str, root: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    # A staging folder of its own per copy: two runs for one raw file (a double trigger) never share a temporary
    # file, and no name of the published tree (where a share's file could be called anything) is ever used.
    temporary = staging_path(target, new_staging_token(), root)
    make_staging_folder(temporary.parent, root)
    try:
        source_md5 = _copy_and_hash(source, temporary)
        if source_md5 != md5:
            raise CopyVerificationError(
                f"{source} changed since it was checksummed (MD5 now {source_md5}, recorded {md5}): "
                "nothing was written to the backup. Check the acquisition, then clear compute_checksum to re-checksum"
            )
        copy_size = temporary.stat().st_size
        copy_md5 = md5_of_file(temporary)
        if copy_size != size or copy_md5 != md5:
            raise CopyVerificationError(
                f"the copy of {source} at {temporary} does not match (size {copy_size} vs {size}, MD5 {copy_md5} vs "
                f"{md5}): the backup disk may be failing or full; nothing was renamed into place"
            )
        source_stat = source.stat()
        temporary.chmod(PUBLISHED_MODE)  # never the share's bits (see PUBLISHED_MODE)
        os.utime(temporary, ns=(source_stat.st_atime_ns, source_stat.st_mtime_ns))
        if not place_no_overwrite(temporary, target):
            # Another run put the file in place meanwhile: fine if identical, never overwritten if not.
            _check_existing_target(target, size, md5, target.name)
            return
    finally:
        temporary.unlink(missing_ok=True)
        remove_empty_run_folders(temporary.parent, root)
    log.info("copied %s -> %s (%d bytes, MD5 %s verified)", source, target, size, md5)


def _copy_and_hash(source: Path, target: Path) -> str:
    """Copy ``source`` to the new file ``target`` from the buffers its MD5 is computed from (one read); its MD5."""
    descriptor = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    with os.fdopen(descriptor, "wb") as writer:
        digests = digest_file(source, None, sink=writer.write)
        writer.flush()
        os.fsync(writer.fileno())
    return digests.md5
