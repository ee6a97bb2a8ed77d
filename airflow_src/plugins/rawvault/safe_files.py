"""Putting a verified file in place without ever replacing one: an atomic no-overwrite link, a durable rename.

Used by the local copy (:mod:`rawvault.local_backup`) and the restore
(:mod:`rawvault.s3.download`): both write a temporary file, verify it, then
give it its name here. The restore writes into a folder others may write
too, so its half works on folder descriptors: folders are walked and created
without following symbolic links (:func:`open_folder`), temporary files get
random names and are created ``O_EXCL | O_NOFOLLOW`` (:func:`create_temporary`),
and a verified file is published by a no-overwrite link in the same folder
(:func:`place_no_overwrite_at`) before its temporary name is removed, so no
two names share its inode afterwards. No database, no boto3.
"""

from __future__ import annotations

import errno
import os
import secrets
import stat
from contextlib import suppress
from pathlib import Path


def place_no_overwrite(temporary: Path, final: Path) -> bool:
    """Give ``temporary`` the name ``final`` unless something is there already; return whether it did.

    A hard link never replaces a file, so there is no window in which a file
    that appears meanwhile could be overwritten. On a file system without hard
    links (some network shares) it checks, then renames. The folder is fsynced
    so the new name survives a crash; ``temporary`` stays for the caller to remove.
    """
    try:
        os.link(temporary, final, follow_symlinks=False)  # a symlink at ``temporary`` is linked, never its target
    except FileExistsError:
        return False
    except OSError:
        if final.exists() or final.is_symlink():
            return False
        temporary.rename(final)
    fsync_dir(final.parent)
    return True


def fsync_dir(folder: Path) -> None:
    """Make a rename or new file in ``folder`` durable (fsync the directory)."""
    descriptor = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


# --- folders walked without following symbolic links (the restore target) -----------------------------------

_OPEN_FOLDER = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_CREATE_TEMPORARY = os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
TEMPORARY_MODE = 0o600  # a temporary file is readable by its owner only until it is verified and published
MAX_NAME_BYTES = 255  # NAME_MAX of the common Linux file systems
_TEMPORARY_ATTEMPTS = 16


class UnsafeFolderError(RuntimeError):
    """A folder on the way to a file is a symbolic link or not a folder: nothing is written through it."""


def _describe_link(parent_fd: int, name: str, path: Path, root: Path) -> str:
    """``path is a symbolic link to X (outside/inside the target folder ROOT)``."""
    try:
        destination = Path(os.readlink(name, dir_fd=parent_fd))
    except OSError:
        return f"{path} is a symbolic link"
    resolved = (path.parent / destination).resolve()
    where = "inside" if resolved == root or resolved.is_relative_to(root) else "outside"
    return f"{path} is a symbolic link to {destination} ({where} the target folder {root})"


def open_folder(root_fd: int, root: Path, parts: list[str], *, create: bool) -> int | None:
    """A descriptor of the folder ``root/parts...``, walked from ``root_fd`` without following any symbolic link.

    Missing folders are created when ``create`` (else ``None`` is returned).
    A symbolic link or a file on the way raises :class:`UnsafeFolderError`
    naming it: a link planted by anyone who can write the tree could point
    anywhere, so nothing below it is ever written. The caller closes the
    descriptor.
    """
    fd = os.dup(root_fd)
    here = root
    try:
        for part in parts:
            if part in ("", ".", "..") or "/" in part:
                raise UnsafeFolderError(f"{here / part} is not a plain folder name below {root}")
            here = here / part
            parent, fd = fd, -1  # _enter closes the parent, whatever happens
            fd = _enter(parent, part, here, root, create=create)
            if fd < 0:
                return None
        return fd
    except BaseException:
        if fd >= 0:
            os.close(fd)
        raise


def _enter(parent_fd: int, name: str, path: Path, root: Path, *, create: bool) -> int:
    """Open ``name`` below ``parent_fd`` as a folder (creating it when ``create``); close ``parent_fd``; -1: missing."""
    try:
        for _ in range(2):
            try:
                return os.open(name, _OPEN_FOLDER, dir_fd=parent_fd)
            except FileNotFoundError:
                if not create:
                    return -1
                with suppress(FileExistsError):  # created meanwhile by another restore: opened next
                    os.mkdir(name, dir_fd=parent_fd)
            except OSError as error:
                if error.errno not in (errno.ELOOP, errno.ENOTDIR):
                    raise
                if stat.S_ISLNK(os.lstat(name, dir_fd=parent_fd).st_mode):
                    raise UnsafeFolderError(_describe_link(parent_fd, name, path, root)) from None
                raise UnsafeFolderError(f"{path} is a file, but a restored file needs it to be a folder") from None
        raise UnsafeFolderError(f"{path} keeps changing between being created and being opened")
    finally:
        os.close(parent_fd)


def entry_kind(folder_fd: int, name: str) -> str | None:
    """What ``name`` is in the folder, never following a link: file, link, folder, other; None: absent."""
    try:
        mode = os.lstat(name, dir_fd=folder_fd).st_mode
    except FileNotFoundError:
        return None
    if stat.S_ISREG(mode):
        return "file"
    if stat.S_ISLNK(mode):
        return "link"
    return "folder" if stat.S_ISDIR(mode) else "other"


def open_regular_file(folder_fd: int, name: str) -> int:
    """A read-only descriptor of the regular file ``name`` (``OSError`` for a link or anything else)."""
    fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=folder_fd)
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise IsADirectoryError(errno.EISDIR, "not a regular file", name)
    return fd


def temporary_name(final_name: str, suffix: str) -> str:
    """A hidden, random, unpredictable name for a temporary file next to ``final_name`` (within NAME_MAX)."""
    random_part = f".{secrets.token_hex(8)}{suffix}"
    room = MAX_NAME_BYTES - 1 - len(random_part.encode())
    stem = final_name.encode()[:room].decode(errors="ignore")
    return f".{stem}{random_part}"


def create_temporary(folder_fd: int, final_name: str, suffix: str) -> tuple[int, str]:
    """Create a new temporary file next to ``final_name``: ``(read-write descriptor, its name)``.

    The name is random and the file is created with ``O_CREAT | O_EXCL |
    O_NOFOLLOW`` and mode 0o600, so it is always a new file of our own: never
    an existing file, a hard link or a symbolic link someone planted.
    """
    for _ in range(_TEMPORARY_ATTEMPTS):
        name = temporary_name(final_name, suffix)
        try:
            return os.open(name, _CREATE_TEMPORARY, TEMPORARY_MODE, dir_fd=folder_fd), name
        except FileExistsError:
            continue
    raise FileExistsError(errno.EEXIST, f"no free temporary name after {_TEMPORARY_ATTEMPTS} attempts", final_name)


def publish_mode() -> int:
    """The mode a published file gets: what a new file gets under the process's umask (0o666 & ~umask)."""
    return 0o666 & ~_umask()


def _umask() -> int:
    # Linux shows it in /proc; os.umask() can only read it by setting it, which races with other threads.
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    current = os.umask(0o022)
    os.umask(current)
    return current


def place_no_overwrite_at(folder_fd: int, temporary: str, final: str) -> bool:
    """Give the file ``temporary`` the name ``final`` in the same folder unless ``final`` exists; whether it did.

    A hard link never replaces an entry; on a file system without hard links
    it checks, then renames. The folder is fsynced. The caller removes
    ``temporary`` afterwards, so the published file has one name only.
    """
    try:
        os.link(temporary, final, src_dir_fd=folder_fd, dst_dir_fd=folder_fd, follow_symlinks=False)
    except FileExistsError:
        return False
    except OSError:
        if entry_kind(folder_fd, final) is not None:
            return False
        os.rename(temporary, final, src_dir_fd=folder_fd, dst_dir_fd=folder_fd)
    os.fsync(folder_fd)
    return True


def remove_if_same(folder_fd: int, name: str, descriptor: int) -> None:
    """Remove the entry ``name`` if it still is the file open as ``descriptor`` (never someone else's file)."""
    try:
        entry = os.lstat(name, dir_fd=folder_fd)
    except FileNotFoundError:
        return
    mine = os.fstat(descriptor)
    if (entry.st_dev, entry.st_ino) == (mine.st_dev, mine.st_ino):
        with suppress(FileNotFoundError):
            os.unlink(name, dir_fd=folder_fd)
