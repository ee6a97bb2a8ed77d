"""Copy a raw file set to the local backup and verify every copy.

Files are written under a hidden temporary name and renamed only after the
copy's size and MD5 match the recorded ones, so a crash never leaves a
truncated file that looks complete. An existing different file at the target
is never overwritten.
"""

from __future__ import annotations

import logging
import os
import shutil
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from rawvault.digests import digest_file
from rawvault.safe_files import place_no_overwrite

log = logging.getLogger(__name__)

__all__ = ["BackupConflictError", "CopyResult", "CopyVerificationError", "copy_raw_file_set"]

TEMP_SUFFIX = ".rawvault-partial"


class BackupConflictError(RuntimeError):
    """A different file already exists where the backup copy should go."""


class CopyVerificationError(RuntimeError):
    """A copy or its source does not match the recorded size and MD5."""


@dataclass
class CopyResult:
    """What one backup run did."""

    copied: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    bytes_copied: int = 0


def md5_of_file(path: Path) -> str:
    """Hex MD5 of a file's content."""
    return digest_file(path, None).md5


def copy_raw_file_set(source_root: Path, file_info: dict[str, list], target_root: Path) -> CopyResult:
    """Copy every file of ``file_info`` from ``source_root`` to ``target_root``, verified.

    ``file_info`` maps relative paths to ``[size, md5, etag]``. A target that
    already holds an identical file is skipped; a different one raises
    :class:`BackupConflictError` and is left as it is.
    """
    result = CopyResult()
    # Check every target before writing anything, so a conflict stops the set untouched.
    pending = []
    for relative_path, (size, md5, _etag) in sorted(file_info.items()):
        target = target_root / relative_path
        if target.exists():
            _check_existing_target(target, size, md5, relative_path)
            result.skipped.append(relative_path)
        else:
            pending.append((relative_path, size, md5))
    for relative_path, size, md5 in pending:
        _copy_verified(source_root / relative_path, target_root / relative_path, size, md5)
        result.copied.append(relative_path)
        result.bytes_copied += size
    return result


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


def _copy_verified(source: Path, target: Path, size: int, md5: str) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    # A name of its own per copy: two runs for one raw file (a double trigger) never share a temporary file.
    temporary = target.with_name(f".{target.name}.{uuid.uuid4().hex[:8]}{TEMP_SUFFIX}")
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
        shutil.copystat(source, temporary)
        if not place_no_overwrite(temporary, target):
            # Another run put the file in place meanwhile: fine if identical, never overwritten if not.
            _check_existing_target(target, size, md5, target.name)
            return
    finally:
        temporary.unlink(missing_ok=True)
    log.info("copied %s -> %s (%d bytes, MD5 %s verified)", source, target, size, md5)


def _copy_and_hash(source: Path, target: Path) -> str:
    """Copy ``source`` to ``target`` from the buffers its MD5 is computed from (one read); return the MD5."""
    with target.open("wb") as writer:
        digests = digest_file(source, None, sink=writer.write)
        writer.flush()
        os.fsync(writer.fileno())
    return digests.md5
