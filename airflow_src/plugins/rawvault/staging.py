"""Staged copies: a hidden file beside its final name in the local backup, written while the share is read.

``compute_checksum`` reads each file of a set from the instrument share once
and, from the same buffers, writes a staged copy into the local backup;
``copy_raw_file`` verifies it (size and MD5 read back from the backup disk)
and publishes it under its final name (:mod:`rawvault.local_backup` does both
halves). This module is the file side: names, the writer, finding and
discarding staged copies.

**Names.** ``.<final name>.<token>.rawvault-staging`` beside the final file.
The token is new for every ``compute_checksum`` run and recorded on the raw
file (``RawFile.staging_token``) only once the whole set is staged and
fsynced: ``copy_raw_file`` looks only at the staged copies of the recorded
token, and trusts none before verifying it. A staged copy of any other token
(a run that crashed, or was superseded) is never used; the next run of either
step deletes it.

**Locks.** The writer holds an exclusive ``flock`` on its staged copy while
writing it, the copy step a shared one while it verifies and publishes it;
the discard skips a locked staged copy (another run of the same raw file is
using it, e.g. after a double trigger), so it never pulls a file from under a
running step. Where ``flock`` is not supported the lock is skipped: every
staged copy is verified before it is published anyway.

No database, no hashing: plain files.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import io
import logging
import os
import re
import shutil
import uuid
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from types import TracebackType

from rawvault.safe_files import fsync_dir
from shared.s3_limits import MIB

log = logging.getLogger(__name__)

__all__ = [
    "STAGING_SUFFIX",
    "BackupDiskFullError",
    "StagedCopy",
    "check_free_space",
    "discard_staging",
    "locked_for_reading",
    "new_staging_token",
    "staged_copies",
    "staging_path",
    "sync_folders",
]

STAGING_SUFFIX = ".rawvault-staging"
_TOKEN = re.compile(r"[0-9a-f]{16}")
# A staged name must fit in NAME_MAX (255 bytes) with its dot, token and suffix: longer final names are shortened.
_MAX_NAME_BYTES = 200
_DISK_FULL = (errno.ENOSPC, errno.EDQUOT)


class BackupDiskFullError(RuntimeError):
    """The local backup has no room for a staged copy (checked before reading, or the disk filled up while writing)."""


def new_staging_token() -> str:
    """A token for one ``compute_checksum`` run: 16 hex digits, new each time."""
    return uuid.uuid4().hex[:16]


def _name_part(final_name: str) -> str:
    if len(final_name.encode()) <= _MAX_NAME_BYTES:
        return final_name
    digest = hashlib.sha256(final_name.encode(errors="surrogateescape")).hexdigest()[:12]
    shortened = final_name.encode(errors="surrogateescape")[: _MAX_NAME_BYTES - 13].decode(errors="ignore")
    return f"{shortened}~{digest}"


def staging_path(final: Path, token: str) -> Path:
    """Where the staged copy of ``final`` written by the run ``token`` lives (hidden, beside it)."""
    if not _TOKEN.fullmatch(token):
        raise ValueError(f"{token!r} is not a staging token (16 hex digits)")
    return final.with_name(f".{_name_part(final.name)}.{token}{STAGING_SUFFIX}")


def staged_copies(final: Path) -> list[Path]:
    """Every staged copy of ``final`` in its folder, of any run (none when the folder does not exist)."""
    prefix = f".{_name_part(final.name)}."
    try:
        names = [entry.name for entry in final.parent.iterdir()]
    except (FileNotFoundError, NotADirectoryError):
        return []
    return sorted(
        final.parent / name
        for name in names
        if name.startswith(prefix)
        and name.endswith(STAGING_SUFFIX)
        and _TOKEN.fullmatch(name[len(prefix) : -len(STAGING_SUFFIX)])
    )


def _try_lock(descriptor: int, operation: int) -> bool:
    """``flock`` without waiting; False when another process holds it, True when taken or not supported."""
    try:
        fcntl.flock(descriptor, operation | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    except OSError:  # a file system without flock: rely on verification alone
        return True
    return True


def discard_staging(final: Path, *, keep: str | None = None) -> list[Path]:
    """Delete the staged copies of ``final`` (all but those of run ``keep``) that no running step uses.

    Returns the paths deleted. A staged copy locked by another process is left
    alone (its run deletes or publishes it).
    """
    deleted = []
    for path in staged_copies(final):
        if keep is not None and path == staging_path(final, keep):
            continue
        try:
            descriptor = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            continue
        try:
            if not _try_lock(descriptor, fcntl.LOCK_EX):
                log.info("%s is in use by another run of this raw file: left alone", path)
                continue
            path.unlink(missing_ok=True)
            deleted.append(path)
        finally:
            os.close(descriptor)
    if deleted:
        log.info("discarded %d staged copies of %s that were never published", len(deleted), final)
    return deleted


def check_free_space(folder: Path, needed: int, what: str) -> None:
    """Raise :class:`BackupDiskFullError` unless ``folder``'s file system has ``needed`` bytes free."""
    free = _free_bytes(folder)
    if free is not None and needed > free:
        raise BackupDiskFullError(
            f"the local backup has no room for {what}: {folder} has {_mib(free)} free but {_mib(needed)} are needed. "
            "Nothing was read from the instrument share and nothing was written; free space on the backup disk "
            "(locations.backup), then clear compute_checksum"
        )


def _free_bytes(folder: Path) -> int | None:
    for candidate in (folder, *folder.parents):
        with suppress(OSError):
            return shutil.disk_usage(candidate).free
    return None


def _mib(size: int) -> str:
    return f"{size / MIB:.1f} MiB ({size} bytes)"


class StagedCopy:
    """The staged copy of ``final`` for run ``token``: created ``O_CREAT|O_EXCL``, locked, written, fsynced.

    Use as a context manager: :meth:`write` every chunk in order, then
    :meth:`finish`. Leaving the block with an error (or without
    :meth:`finish`) deletes the staged copy.
    """

    def __init__(self, final: Path, token: str, expected_size: int) -> None:
        self.final = final
        self.path = staging_path(final, token)
        self.expected_size = expected_size
        self.written = 0
        self._descriptor = -1
        self._finished = False
        self._error: BaseException | None = None

    def __enter__(self) -> StagedCopy:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self._descriptor = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        except OSError as error:
            raise self._describe(error) from error
        _try_lock(self._descriptor, fcntl.LOCK_EX)
        return self

    def write(self, chunk: memoryview) -> None:
        """Append ``chunk`` (the next bytes read from the share); after a failed write every call fails."""
        if self._error is not None:
            raise self._error
        view = chunk
        try:
            while view:
                view = view[os.write(self._descriptor, view) :]
        except OSError as error:
            self._error = self._describe(error)
            raise self._error from error
        self.written += len(chunk)

    def finish(self, source: os.stat_result) -> None:
        """Give the copy the source's permissions and times, make it durable, drop it from the page cache."""
        try:
            os.fchmod(self._descriptor, source.st_mode & 0o7777)
            os.utime(self._descriptor, ns=(source.st_atime_ns, source.st_mtime_ns))
            os.fsync(self._descriptor)  # a full disk may show only here (delayed allocation)
        except OSError as error:
            raise self._describe(error) from error
        # Clean pages can go: copy_raw_file's verification then reads the disk, not the cache.
        with suppress(OSError, AttributeError):
            os.posix_fadvise(self._descriptor, 0, 0, os.POSIX_FADV_DONTNEED)
        self._finished = True

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._descriptor >= 0:
            os.close(self._descriptor)
        if exc_type is not None or not self._finished:
            self.path.unlink(missing_ok=True)

    def _describe(self, error: OSError) -> Exception:
        if error.errno not in _DISK_FULL:
            return error
        free = _free_bytes(self.path.parent)
        return BackupDiskFullError(
            f"the local backup disk is full: writing the staged copy of {self.final.name} in {self.path.parent} "
            f"failed after {_mib(self.written)} of {_mib(self.expected_size)} ({error.strerror}; "
            f"{_mib(free) if free is not None else 'unknown'} free). The staged files of this run were deleted, "
            "nothing was published and the instrument share is untouched; free space on the backup disk "
            "(locations.backup), then clear compute_checksum"
        )


@contextmanager
def locked_for_reading(path: Path) -> Iterator[io.FileIO]:
    """``path`` opened unbuffered for reading, under a shared lock (a concurrent discard leaves it alone)."""
    with path.open("rb", buffering=0) as stream:
        with suppress(OSError):
            fcntl.flock(stream.fileno(), fcntl.LOCK_SH)
        yield stream


def sync_folders(files: list[Path]) -> None:
    """Make the new names of ``files`` survive a crash (fsync their folders)."""
    for folder in sorted({path.parent for path in files}):
        fsync_dir(folder)
