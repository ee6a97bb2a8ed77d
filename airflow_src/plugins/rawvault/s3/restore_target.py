"""The folder a restore writes into: what is already there, a new temporary file, publishing a verified one.

Anyone who can write the target folder (often a shared one, the restore
often run as root) could plant a symbolic link, so nothing below the folder
the user named is trusted. Every path is walked from a descriptor of that
folder without following symbolic links (:func:`rawvault.safe_files.open_folder`):
a link on the way stops the restore with an error naming it. A temporary file
is new, random-named and ``O_EXCL | O_NOFOLLOW`` (mode 0o600), written and read
back through its own descriptor; a verified one is published by a no-overwrite
link in the same folder and loses its temporary name. No boto3, no database.
"""

from __future__ import annotations

import io
import os
from dataclasses import dataclass
from pathlib import Path

from rawvault.digests import Digests, advise_sequential, digest_stream
from rawvault.s3.archive import RestoreError
from rawvault.s3.objects import ExpectedObject
from rawvault.safe_files import (
    UnsafeFolderError,
    create_temporary,
    entry_kind,
    open_folder,
    open_regular_file,
    place_no_overwrite_at,
    publish_mode,
    remove_if_same,
)

TEMP_SUFFIX = ".rawvault-restore"


class RestoreConflictError(RestoreError):
    """A different file, or a symbolic link, is where a restored file should go; it is never overwritten."""


def split_path(path: str) -> tuple[list[str], str]:
    """``"a/b/c.x"`` -> ``(["a", "b"], "c.x")``: the folders below the target folder, and the file name."""
    *folders, name = path.split("/")
    return folders, name


def digest_descriptor(descriptor: int, part_size: int, *, sha256: bool = False) -> Digests:
    """The digests of the whole file open as ``descriptor`` (read from its start, through the digest engine)."""
    os.lseek(descriptor, 0, os.SEEK_SET)
    with io.FileIO(descriptor, "r", closefd=False) as stream:
        advise_sequential(stream)
        return digest_stream(stream, part_size, size=os.fstat(descriptor).st_size, sha256=sha256)


@dataclass
class TemporaryFile:
    """A new temporary file in ``folder_fd`` (the folder of ``final``), open read-write as ``descriptor``."""

    folder_fd: int
    descriptor: int
    name: str
    final: Path

    @property
    def path(self) -> Path:
        """Where it is, for messages."""
        return self.final.parent / self.name

    def close(self) -> None:
        """Remove its temporary name (if still ours) and close both descriptors."""
        try:
            remove_if_same(self.folder_fd, self.name, self.descriptor)
        finally:
            os.close(self.descriptor)
            os.close(self.folder_fd)


class RestoreTarget:
    """The target folder of one restore, open as a descriptor; use as a context manager."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.root_fd: int | None = None

    def __enter__(self) -> RestoreTarget:
        self._open(create=False)
        return self

    def __exit__(self, *exc: object) -> None:
        if self.root_fd is not None:
            os.close(self.root_fd)
            self.root_fd = None

    def _open(self, *, create: bool) -> None:
        # The folder the user named is theirs: a link there is followed; below it, none is.
        if create:
            self.root.mkdir(parents=True, exist_ok=True)
        try:
            self.root_fd = os.open(self.root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except FileNotFoundError:
            self.root_fd = None
        except NotADirectoryError:
            raise RestoreConflictError(f"the restore target {self.root} exists and is not a folder") from None

    def check(self, entry: ExpectedObject, part_size: int) -> tuple[bool, str | None]:
        """``(already identical, conflict description)`` for the final place of ``entry``; creates nothing."""
        if self.root_fd is None:  # the target folder does not exist yet
            return False, None
        folders, name = split_path(entry.path)
        try:
            folder_fd = open_folder(self.root_fd, self.root, folders, create=False)
        except UnsafeFolderError as error:
            return False, f"{error} (needed for {entry.path})"
        if folder_fd is None:
            return False, None
        try:
            if entry_kind(folder_fd, name) is None:
                return False, None
            conflict = self._conflict(folder_fd, name, entry, part_size)
        finally:
            os.close(folder_fd)
        return conflict is None, conflict

    def new_temporary(self, entry: ExpectedObject) -> TemporaryFile:
        """A new temporary file next to ``entry``'s final place; its folders are created, never through a link."""
        if self.root_fd is None:
            self._open(create=True)
        assert self.root_fd is not None
        final = self.root / entry.path
        folders, name = split_path(entry.path)
        try:
            folder_fd = open_folder(self.root_fd, self.root, folders, create=True)
        except UnsafeFolderError as error:
            raise RestoreConflictError(
                f"{error}: {entry.path} was not restored (rawvault never writes through a symbolic link); files "
                "restored before it are verified and stay. Remove the link (check who made it), then run the "
                "restore again"
            ) from None
        except OSError as error:
            raise RestoreError(f"cannot create the folder of {final} while restoring {entry.path}: {error}") from error
        assert folder_fd is not None
        try:
            descriptor, temporary = create_temporary(folder_fd, name, TEMP_SUFFIX)
        except OSError as error:
            os.close(folder_fd)
            raise RestoreError(f"cannot create a temporary file next to {final}: {error}") from error
        return TemporaryFile(folder_fd, descriptor, temporary, final)

    def publish(self, temporary: TemporaryFile, entry: ExpectedObject, part_size: int) -> bool:
        """Give the verified ``temporary`` its final name, never replacing a file; False: an identical one is there."""
        os.fchmod(temporary.descriptor, publish_mode())
        if place_no_overwrite_at(temporary.folder_fd, temporary.name, temporary.final.name):
            return True
        conflict = self._conflict(temporary.folder_fd, temporary.final.name, entry, part_size)
        if conflict is None:
            return False
        raise RestoreConflictError(
            f"{conflict}: it appeared while {entry.path} was being restored and was not overwritten"
        )

    def _conflict(self, folder_fd: int, name: str, entry: ExpectedObject, part_size: int) -> str | None:
        """``None`` when the existing entry ``name`` holds ``entry``; else what is wrong with it."""
        final = self.root / entry.path
        kind = entry_kind(folder_fd, name)
        if kind == "link":
            return f"{final} is a symbolic link: rawvault never writes through one or replaces it"
        if kind != "file":
            return f"{final} exists and is not a regular file"
        descriptor = open_regular_file(folder_fd, name)
        try:
            size = os.fstat(descriptor).st_size
            digests = digest_descriptor(descriptor, part_size) if size == entry.size else None
        finally:
            os.close(descriptor)
        if digests is not None and (digests.md5, digests.etag) == (entry.md5, entry.etag):
            return None
        found = f"{size} bytes" + (f", MD5 {digests.md5}" if digests else "")
        return f"{final} exists and differs ({found}; the backup has {entry.size} bytes, MD5 {entry.md5})"
