"""Staged copies: written while the share is read, in a private per-run folder of the local backup.

``compute_checksum`` reads each file of a set from the instrument share once
and, from the same buffers, writes a staged copy into the local backup;
``copy_raw_file`` verifies it (size and MD5 read back from the backup disk)
and publishes it under its final name (:mod:`rawvault.local_backup` does both
halves). This module is the file side: paths, the writer, finding and
discarding staged copies.

**Where.** ``<backup root>/.rawvault-staging/<token>/<path below the backup
root>``: outside the published tree, on the same file system (publishing is a
hard link). A staged copy never sits beside a published file, so no name an
instrument writes (``.x.0123456789abcdef.rawvault-staging`` is a legitimate
member of a Bruker folder, and is backed up like any other) can ever be taken
for one. The folders are created 0700 and never followed through a symbolic
link; a staged file is opened ``O_NOFOLLOW | O_NONBLOCK`` and used only when
it is a regular file (a FIFO or link planted there is left alone, never read).

**Tokens.** The token is new for every ``compute_checksum`` run and recorded
on the raw file (``RawFile.staging_token``) only once the whole set is staged
and fsynced: ``copy_raw_file`` looks only at the staged copies of the recorded
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
import io
import logging
import os
import re
import shutil
import stat
import uuid
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from types import TracebackType

from rawvault.safe_files import fsync_dir
from shared.s3_limits import MIB

log = logging.getLogger(__name__)

__all__ = [
    "PUBLISHED_MODE",
    "STAGING_FOLDER",
    "BackupDiskFullError",
    "StagedCopy",
    "UnsafeStagingError",
    "check_free_space",
    "discard_staging",
    "locked_for_reading",
    "make_staging_folder",
    "new_staging_token",
    "open_staged",
    "remove_empty_run_folders",
    "staged_copies",
    "staging_path",
    "sync_folders",
]

STAGING_FOLDER = ".rawvault-staging"
# Every published copy gets this mode, whatever the share says: shares are often mounted 0777, and a backup copy
# anyone on the host could change (or a setuid bit carried over) would undermine the upload and the purge.
PUBLISHED_MODE = 0o640
_PRIVATE_FOLDER_MODE = 0o700
_TOKEN = re.compile(r"[0-9a-f]{16}")
_DISK_FULL = (errno.ENOSPC, errno.EDQUOT)
_OPEN_STAGED = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC


class BackupDiskFullError(RuntimeError):
    """The local backup has no room for a staged copy (checked before reading, or the disk filled up while writing)."""


class UnsafeStagingError(RuntimeError):
    """The staging area is not a plain private folder (a symbolic link, a file, ...): nothing is staged through it."""


def new_staging_token() -> str:
    """A token for one ``compute_checksum`` run: 16 hex digits, new each time."""
    return uuid.uuid4().hex[:16]


def _check_token(token: str) -> None:
    if not _TOKEN.fullmatch(token):
        raise ValueError(f"{token!r} is not a staging token (16 hex digits)")


def _below_root(final: Path, backup_root: Path) -> Path:
    """``final`` relative to ``backup_root``; never a path inside the staging area itself."""
    relative = final.relative_to(backup_root)
    if not relative.parts or relative.parts[0] == STAGING_FOLDER:
        raise ValueError(f"{final} is not a published path below the backup root {backup_root}")
    return relative


def staging_path(final: Path, token: str, backup_root: Path) -> Path:
    """Where the run ``token`` stages ``final`` (a path below ``backup_root``): its per-run staging folder."""
    _check_token(token)
    return backup_root / STAGING_FOLDER / token / _below_root(final, backup_root)


def staged_copies(final: Path, backup_root: Path) -> list[Path]:
    """Every staged copy of ``final`` in the staging area, of any run (entries of any kind, never followed)."""
    relative = _below_root(final, backup_root)
    area = backup_root / STAGING_FOLDER
    try:
        with os.scandir(area) as entries:
            tokens = [entry.name for entry in entries if _TOKEN.fullmatch(entry.name)]
    except (FileNotFoundError, NotADirectoryError):
        return []
    return sorted(area / token / relative for token in tokens if os.path.lexists(area / token / relative))


def make_staging_folder(path: Path, backup_root: Path) -> None:
    """Create the folders of the staging area down to ``path`` (0700), refusing any that is not a plain folder."""
    relative = path.relative_to(backup_root)
    if not relative.parts or relative.parts[0] != STAGING_FOLDER:
        raise ValueError(f"{path} is not in the staging area of {backup_root}")
    backup_root.mkdir(parents=True, exist_ok=True)
    here = backup_root
    for part in relative.parts:
        here = here / part
        with suppress(FileExistsError):
            here.mkdir(mode=_PRIVATE_FOLDER_MODE)
        mode = os.lstat(here).st_mode
        if not stat.S_ISDIR(mode):
            raise UnsafeStagingError(
                f"{here} is {'a symbolic link' if stat.S_ISLNK(mode) else 'not a folder'}: nothing is staged through "
                f"it. Remove it (it is rawvault's staging area, {backup_root / STAGING_FOLDER}), then retry"
            )
        if stat.S_IMODE(mode) & 0o077:
            here.chmod(_PRIVATE_FOLDER_MODE)  # a plain folder (checked just above)


def _try_lock(descriptor: int, operation: int) -> bool:
    """``flock`` without waiting; False when another process holds it, True when taken or not supported."""
    try:
        fcntl.flock(descriptor, operation | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    except OSError:  # a file system without flock: rely on verification alone
        return True
    return True


def open_staged(path: Path) -> int:
    """A read-only descriptor of the staged file ``path``: never through a link, never blocking, only a regular file.

    ``FileNotFoundError`` when absent; :class:`UnsafeStagingError` for a link, FIFO or anything but a regular file.
    """
    try:
        descriptor = os.open(path, _OPEN_STAGED)
    except OSError as error:
        if error.errno != errno.ELOOP:
            raise
        raise UnsafeStagingError(f"{path} is a symbolic link, not a staged copy: left alone, never read") from None
    if not stat.S_ISREG(os.fstat(descriptor).st_mode):
        os.close(descriptor)
        raise UnsafeStagingError(f"{path} is not a regular file, not a staged copy: left alone, never read")
    return descriptor


def discard_staging(final: Path, backup_root: Path, *, keep: str | None = None) -> list[Path]:
    """Delete the staged copies of ``final`` (all but those of run ``keep``) that no running step uses.

    Returns the paths deleted. Only entries of the staging area are ever
    candidates (never a published file). A staged copy locked by another
    process is left alone (its run deletes or publishes it), and so is
    anything that is not a regular file.
    """
    deleted = []
    for path in staged_copies(final, backup_root):
        if keep is not None and path == staging_path(final, keep, backup_root):
            continue
        try:
            descriptor = open_staged(path)
        except FileNotFoundError:
            continue
        except UnsafeStagingError as error:
            log.warning("%s", error)
            continue
        try:
            if not _try_lock(descriptor, fcntl.LOCK_EX):
                log.info("%s is in use by another run of this raw file: left alone", path)
                continue
            path.unlink(missing_ok=True)
            deleted.append(path)
        finally:
            os.close(descriptor)
    for path in deleted:
        remove_empty_run_folders(path.parent, backup_root)
    if deleted:
        log.info("discarded %d staged copies of %s that were never published", len(deleted), final)
    return deleted


def remove_empty_run_folders(folder: Path, backup_root: Path) -> None:
    """Remove ``folder`` and its parents up to (not including) the staging area while they are empty."""
    area = backup_root / STAGING_FOLDER
    while folder != area and folder.is_relative_to(area):
        try:
            folder.rmdir()
        except OSError:  # not empty (other files of the run), or gone: stop here
            return
        folder = folder.parent


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

    def __init__(self, final: Path, token: str, expected_size: int, backup_root: Path) -> None:
        self.final = final
        self.backup_root = backup_root
        self.path = staging_path(final, token, backup_root)
        self.expected_size = expected_size
        self.written = 0
        self._descriptor = -1
        self._finished = False
        self._error: BaseException | None = None

    def __enter__(self) -> StagedCopy:
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
        for attempt in range(2):
            make_staging_folder(self.path.parent, self.backup_root)
            try:
                self._descriptor = os.open(self.path, flags, 0o600)
                break
            except FileNotFoundError:
                # A concurrent run's discard removed the folder while it was empty: create it again, once.
                if attempt:
                    raise
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
        """Give the copy :data:`PUBLISHED_MODE` and the source's times, make it durable, drop it from the page cache."""
        try:
            os.fchmod(self._descriptor, PUBLISHED_MODE)  # never the share's bits (see PUBLISHED_MODE)
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
            remove_empty_run_folders(self.path.parent, self.backup_root)

    def _describe(self, error: OSError) -> Exception:
        if error.errno not in _DISK_FULL:
            return error
        free = _free_bytes(self.path.parent)
        return BackupDiskFullError(
            f"the local backup disk is full: writing the staged copy of {self.final.name} in {self.path.parent} "
            f"(for {self.final.parent}) "
            f"failed after {_mib(self.written)} of {_mib(self.expected_size)} ({error.strerror}; "
            f"{_mib(free) if free is not None else 'unknown'} free). The staged files of this run were deleted, "
            "nothing was published and the instrument share is untouched; free space on the backup disk "
            "(locations.backup), then clear compute_checksum"
        )


@contextmanager
def locked_for_reading(path: Path) -> Iterator[io.FileIO]:
    """Staged ``path`` opened unbuffered for reading (see :func:`open_staged`), under a shared lock.

    The lock makes a concurrent discard leave it alone.
    """
    with os.fdopen(open_staged(path), "rb", buffering=0) as stream:
        with suppress(OSError):
            fcntl.flock(stream.fileno(), fcntl.LOCK_SH)
        yield stream


def sync_folders(files: list[Path]) -> None:
    """Make the new names of ``files`` survive a crash (fsync their folders)."""
    for folder in sorted({path.parent for path in files}):
        fsync_dir(folder)
