"""Deleting one checked set from the instrument share: inside the target folder only, never through a symlink.

The purge (:mod:`rawvault.purge`) hands over where the set lives (the
instrument folder and the folders below it, starting with
``file_mover.target_folder``) and the files it has just checked, each with its
identity (device, inode, size, modification and change time). Here:

- every folder is opened relative to its parent's descriptor with
  ``O_NOFOLLOW | O_DIRECTORY``, starting at the instrument folder, so a
  symlink anywhere below the instrument folder stops the deletion before
  anything is removed through it;
- a file is removed (``unlinkat`` on its folder's descriptor) only when it is
  a checked file whose identity is unchanged; anything else is left in place,
  and a changed file stops the deletion at once;
- folders of the set without write permission for their owner (Bruker's
  read-only ``.m`` method folders) are made writable, by descriptor and only
  inside the set;
- files first, then the set's folders from the bottom up with ``rmdir``,
  which removes only empty folders.

No database, no Airflow.
"""

from __future__ import annotations

import errno
import logging
import os
import stat
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from rawvault.recorded_set import identity_of
from shared.instrument_types import shown

log = logging.getLogger(__name__)

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)
_OWNER_RWX = stat.S_IRUSR | stat.S_IWUSR | stat.S_IXUSR
MAX_DEPTH = 100  # folders inside a set; far more than any instrument writes

Identity = tuple[int, int, int, int, int]


class PurgeDeleteError(RuntimeError):
    """Deleting a set stopped: the message names what and why; what was deleted before stays deleted."""


@dataclass
class DeleteResult:
    """What :func:`delete_set` removed, and what it made writable to do so."""

    files: list[str] = field(default_factory=list)
    folders: list[str] = field(default_factory=list)
    made_writable: list[str] = field(default_factory=list)
    left: list[str] = field(default_factory=list)  # present but not checked: never deleted


def _plain_name(name: str, what: str) -> str:
    if not name or name in (".", "..") or "/" in name or "\0" in name:
        raise PurgeDeleteError(f"{what} {name!r} is not a plain folder entry name: refused")
    return name


@contextmanager
def _folder(parent: int, name: str, path: Path) -> Iterator[int]:
    """The descriptor of folder ``name`` in ``parent``; refuses a symlink or anything but a folder."""
    try:
        descriptor = os.open(_plain_name(name, "folder"), _DIR_FLAGS, dir_fd=parent)
    except OSError as error:
        if error.errno in (errno.ELOOP, errno.ENOTDIR):
            raise PurgeDeleteError(
                f"{shown(path)} is a symbolic link or not a folder: the purge never deletes through one; nothing "
                "below it was deleted"
            ) from None
        raise
    try:
        yield descriptor
    finally:
        os.close(descriptor)


@contextmanager
def _chain(instrument_folder: Path, within: Sequence[str]) -> Iterator[int]:
    """The descriptor of ``instrument_folder/within[0]/...``, each step opened without following a symlink."""
    descriptors = [os.open(instrument_folder, os.O_RDONLY | os.O_DIRECTORY | getattr(os, "O_CLOEXEC", 0))]
    try:
        path = instrument_folder
        for name in within:
            path = path / name
            try:
                descriptors.append(os.open(_plain_name(name, "folder"), _DIR_FLAGS, dir_fd=descriptors[-1]))
            except OSError as error:
                if error.errno in (errno.ELOOP, errno.ENOTDIR):
                    raise PurgeDeleteError(
                        f"{shown(path)} is a symbolic link or not a folder: the purge never deletes through one"
                    ) from None
                raise
        yield descriptors[-1]
    finally:
        for descriptor in reversed(descriptors):
            os.close(descriptor)


class _SetDeletion:
    """One set's deletion below its parent folder's descriptor."""

    def __init__(self, set_folder: Path, checked: Mapping[str, Identity]) -> None:
        self.set_folder = set_folder
        self.checked = checked
        self.result = DeleteResult()

    def unlink_checked(self, folder: int, name: str, relative: str) -> None:
        if relative not in self.checked:
            self.result.left.append(relative)  # never touch a file the checks did not vouch for
            return
        path = self.set_folder / relative
        info = os.stat(name, dir_fd=folder, follow_symlinks=False)
        if not stat.S_ISREG(info.st_mode) or identity_of(info) != self.checked[relative]:
            raise PurgeDeleteError(
                f"{shown(path)} changed after it was checked (another file, or modified): deleting stopped, "
                f"{len(self.result.files)} file(s) of the set were deleted before; the next run checks what is left"
            )
        os.unlink(name, dir_fd=folder)
        self.result.files.append(relative)

    def delete_tops(self, parent: int, top_names: Sequence[str]) -> list[str]:
        """Delete the checked files below each top-level entry of the set; return the entries that are folders."""
        folders = []
        for top in sorted(set(top_names)):
            try:
                info = os.stat(_plain_name(top, "entry"), dir_fd=parent, follow_symlinks=False)
            except FileNotFoundError:
                continue  # deleted by a run that stopped midway
            if stat.S_ISDIR(info.st_mode):
                self.delete_files(parent, top, top)
                folders.append(top)
            elif stat.S_ISREG(info.st_mode):
                self.unlink_checked(parent, top, top)
            else:
                raise PurgeDeleteError(
                    f"{shown(self.set_folder / top)} is a symbolic link or not a regular file: the purge never "
                    "deletes through one, nor one"
                )
        return folders

    def make_writable(self, folder: int, relative: str) -> None:
        info = os.fstat(folder)
        if info.st_mode & _OWNER_RWX == _OWNER_RWX:
            return
        try:
            os.fchmod(folder, stat.S_IMODE(info.st_mode) | _OWNER_RWX)
        except PermissionError:
            return  # not its owner: deleting works if the group may write, else it fails naming the folder
        self.result.made_writable.append(relative)
        log.info("made %s writable to delete its files (it is part of the set)", self.set_folder / relative)

    def delete_files(self, parent: int, name: str, relative: str, depth: int = 0) -> None:
        if depth > MAX_DEPTH:
            raise PurgeDeleteError(f"{shown(self.set_folder / relative)} is nested too deeply: not deleted")
        with _folder(parent, name, self.set_folder / relative) as folder:
            self.make_writable(folder, relative)
            with os.scandir(folder) as listing:
                entries = [(entry.name, entry.is_dir(follow_symlinks=False)) for entry in listing]
            for child, is_dir in sorted(entries):
                if is_dir:
                    self.delete_files(folder, child, f"{relative}/{child}", depth + 1)
                else:
                    self.unlink_checked(folder, child, f"{relative}/{child}")

    def remove_folders(self, parent: int, name: str, relative: str, depth: int = 0) -> None:
        if depth > MAX_DEPTH:
            return
        with _folder(parent, name, self.set_folder / relative) as folder:
            with os.scandir(folder) as listing:
                subfolders = [entry.name for entry in listing if entry.is_dir(follow_symlinks=False)]
            for child in sorted(subfolders):
                self.remove_folders(folder, child, f"{relative}/{child}", depth + 1)
        try:
            os.rmdir(name, dir_fd=parent)
        except OSError as error:
            if error.errno not in (errno.ENOTEMPTY, errno.EEXIST):
                raise
            with _folder(parent, name, self.set_folder / relative) as folder, os.scandir(folder) as listing:
                left = sorted(entry.name for entry in listing)
            raise PurgeDeleteError(
                f"{shown(self.set_folder / relative)} is not empty after its checked files were deleted "
                f"({', '.join(map(shown, left[:5]))}{' ...' if len(left) > 5 else ''} appeared meanwhile): left in "
                "place, never deleted unchecked; look at it, then remove or move it by hand"
            ) from None
        self.result.folders.append(relative)


def delete_set(
    instrument_folder: Path,
    within: Sequence[str],
    top_names: Sequence[str],
    checked: Mapping[str, Identity],
    *,
    target_folder: str,
    remove_empty_parent: bool = False,
) -> DeleteResult:
    """Delete the checked files of one set in ``instrument_folder/within``, then its emptied folders.

    ``within`` must start with ``target_folder`` (``file_mover.target_folder``):
    nothing outside it is ever deleted. ``top_names`` are the set's entries in
    that folder (``NAME.d``; ``NAME.wiff`` and its siblings). ``checked`` maps
    each file's path relative to the folder (a ``file_info`` path) to its
    identity when it was checked; files no longer there (a run that stopped
    midway) are skipped. ``remove_empty_parent``: also remove ``within``'s last
    folder when the set leaves it empty (the raw file's own ``<raw_file_id>``
    folder). Raises :class:`PurgeDeleteError` (a symlink on the way, a file
    changed since the check, a file present that was not checked) or
    ``OSError`` (permissions).
    """
    if not within or within[0] != target_folder:
        raise PurgeDeleteError(
            f"refusing to delete in {shown(instrument_folder.joinpath(*within))}: the purge deletes only inside "
            f"{shown(instrument_folder / target_folder)} (file_mover.target_folder)"
        )
    set_folder = instrument_folder.joinpath(*within)
    deletion = _SetDeletion(set_folder, checked)
    with _chain(instrument_folder, within) as parent:
        folders = deletion.delete_tops(parent, top_names)
        if deletion.result.left:
            raise PurgeDeleteError(
                f"{', '.join(shown(set_folder / p) for p in deletion.result.left[:5])} appeared after the set was "
                "checked: left in place, never deleted unchecked; the next run checks the set again"
            )
        for top in folders:
            deletion.remove_folders(parent, top, top)
    if remove_empty_parent:
        with _chain(instrument_folder, within[:-1]) as grandparent:
            try:
                os.rmdir(_plain_name(within[-1], "folder"), dir_fd=grandparent)
            except OSError as error:
                if error.errno not in (errno.ENOTEMPTY, errno.EEXIST, errno.ENOENT):
                    raise
    return deletion.result
