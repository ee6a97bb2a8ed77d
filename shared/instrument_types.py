"""What a raw file is on each instrument type.

Adding an instrument type means adding one subclass of :class:`InstrumentType`
here, decorated with :func:`register`; settings validation, the watcher, the
checksum and copy steps and the file mover all find it through
:data:`INSTRUMENT_TYPES`.

Symbolic links on an instrument share are never followed: anyone who can write
the share could otherwise plant ``x.raw -> /etc/shadow`` and have every file the
worker can read copied into the backup and into S3. A symlink that looks like a
raw file is not one (:meth:`InstrumentType.is_raw_file` says no and logs why), and
a set with a symlink anywhere in it (a sibling, the ``NAME.d`` folder, anything
inside it) is refused with :class:`RawFileSetError`. Use :func:`plain_entry` and
:func:`walk_regular_files` in a new instrument type to keep that rule.
"""

from __future__ import annotations

import errno
import logging
import os
import stat
from abc import ABC, abstractmethod
from collections.abc import Callable
from pathlib import Path
from typing import ClassVar

log = logging.getLogger(__name__)

INSTRUMENT_TYPES: dict[str, InstrumentType] = {}

# Names instrument software and operating systems use for scratch files that are
# never acquisitions (checked in addition to a leading dot).
IGNORED_NAME_PREFIXES = ("~$", "~", "._")
IGNORED_NAME_SUFFIXES = (".tmp", ".temp", ".part", ".lock", ".crdownload")
_ABSENT_ERRNOS = frozenset({errno.ENOENT, errno.ENOTDIR, errno.ENAMETOOLONG})


class RawFileSetError(ValueError):
    """A raw file on disk does not form a valid set (e.g. an empty Bruker folder, a symbolic link)."""


def register(cls: type[InstrumentType]) -> type[InstrumentType]:
    """Class decorator: make an instrument type known under its ``name``."""
    if cls.name in INSTRUMENT_TYPES:
        raise ValueError(f"instrument type {cls.name!r} is registered twice")
    INSTRUMENT_TYPES[cls.name] = cls()
    return cls


def is_ignored_name(name: str) -> bool:
    """True for hidden and temporary files or folders that are never acquisitions."""
    lower = name.lower()
    return name.startswith(".") or lower.startswith(IGNORED_NAME_PREFIXES) or lower.endswith(IGNORED_NAME_SUFFIXES)


def _undecodable_name(name: str) -> bool:
    """True for a name that is not valid UTF-8 on disk (Python keeps its bytes as lone surrogates)."""
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def shown(path: object) -> str:
    r"""``path`` as valid UTF-8 text, undecodable bytes shown as ``\xNN``: messages are stored in MongoDB and logged."""
    return os.fsencode(str(path)).decode("utf-8", "backslashreplace")


def _symlink_error(path: Path, consequence: str = "nothing of this raw file was read") -> RawFileSetError:
    try:
        target = f" (to {shown(path.readlink())})"
    except OSError:
        target = ""
    return RawFileSetError(
        f"{shown(path)} is a symbolic link{target}: rawvault never follows symbolic links on an instrument share, "
        f"so {consequence}. Replace it with the real file or folder, or remove it if it is not an acquisition"
    )


def plain_entry(path: Path) -> os.stat_result | None:
    """``lstat`` of a folder entry that may be an acquisition; None for symlinks, unusable names and gone entries.

    Never follows a symbolic link. A symlink, or a name that is not valid UTF-8
    (it cannot be stored in the database or used as an S3 key), is logged as a
    warning naming the entry and the fix, so it is visible in the watcher's log.
    """
    try:
        info = path.lstat()
    except FileNotFoundError:
        return None
    if stat.S_ISLNK(info.st_mode):
        log.warning("%s", _symlink_error(path, "it is not registered as a raw file"))
        return None
    if _undecodable_name(path.name):
        log.warning(
            "%s in %s is not a valid UTF-8 name, so it cannot be registered or uploaded: rename it on the share "
            "(e.g. with convmv) and the watcher picks it up",
            shown(path.name),
            shown(path.parent),
        )
        return None
    return info


def plain_entry_of_type(path: Path, suffix: str, is_type: Callable[[int], bool]) -> bool:
    """Whether ``path`` ends in ``suffix`` (any case) and is a :func:`plain_entry` of type ``is_type``.

    ``is_type``: ``stat.S_ISREG`` or ``stat.S_ISDIR``; what :meth:`InstrumentType.is_raw_file` asks of most vendors.
    """
    if path.suffix.lower() != suffix:
        return False
    info = plain_entry(path)
    return info is not None and is_type(info.st_mode)


def check_no_symlink(path: Path) -> bool:
    """Whether ``path`` exists (without following it); raise :class:`RawFileSetError` if it is a symlink."""
    try:
        info = path.lstat()
    except OSError as error:
        # A sibling name longer than the file system allows (NAME.wiff near 255 bytes) cannot exist either.
        if error.errno in _ABSENT_ERRNOS:
            return False
        raise
    if stat.S_ISLNK(info.st_mode):
        raise _symlink_error(path)
    return True


def _check_inside(path: Path, folder: Path) -> None:
    """Refuse a path that resolves outside ``folder`` (a last line of defence behind the symlink checks)."""
    real_folder = os.path.realpath(folder)
    if os.path.commonpath([real_folder, os.path.realpath(path)]) != real_folder:
        raise RawFileSetError(
            f"{shown(path)} resolves to {shown(os.path.realpath(path))}, outside the instrument folder "
            f"{shown(folder)}: refused. Remove the link or the '..' that leads there"
        )


def walk_regular_files(root: Path) -> list[Path]:
    """Every regular file below folder ``root``, sorted; never follows a symlink, refuses one with an error.

    Other special files (FIFOs, sockets, devices) are not data and are left out. A
    subfolder that cannot be read is an error, never a silently incomplete set.
    """
    files: list[Path] = []
    pending = [root]
    while pending:  # no recursion: a deeply nested folder cannot exhaust the stack
        folder = pending.pop()
        try:
            with os.scandir(folder) as entries:
                found = list(entries)
        except OSError as error:
            raise RawFileSetError(
                f"folder {shown(folder)} of raw file {shown(root.name)} cannot be read ({error.strerror}): give the "
                "Airflow user read access to the whole acquisition, then retry"
            ) from None
        for entry in found:
            path = Path(entry.path)
            if entry.is_symlink():
                raise _symlink_error(path)
            if entry.is_dir(follow_symlinks=False):
                pending.append(path)
            elif entry.is_file(follow_symlinks=False):
                files.append(path)
    return sorted(files)


class InstrumentType(ABC):
    """How one vendor's acquisitions look on disk.

    A raw file is named by one entry in the instrument folder (``NAME.raw``,
    ``NAME.d``, ``NAME.wiff``); its *set* is every file that belongs to the
    acquisition, and its *main file* is the one that grows while the
    instrument is still acquiring.
    """

    name: ClassVar[str]

    @abstractmethod
    def is_raw_file(self, path: Path) -> bool:
        """Whether this entry of the instrument folder names a raw file (never true for a symlink)."""

    @abstractmethod
    def main_file(self, raw_file_path: Path) -> Path:
        """The file whose size is watched to decide that an acquisition has finished."""

    @abstractmethod
    def set_members(self, raw_file_path: Path) -> list[Path]:
        """Absolute paths of every file of the set that exists now, sorted.

        Never follows a symbolic link: a symlink anywhere in the set raises :class:`RawFileSetError`.
        """

    def files_in_set(self, raw_file_path: Path) -> list[Path]:
        """Like :meth:`set_members`, but fail clearly when the set is empty, missing or leaves its folder."""
        if ".." in raw_file_path.parts:
            raise RawFileSetError(
                f"raw file path {shown(raw_file_path)} contains '..': refused, it could leave its folder"
            )
        if not check_no_symlink(raw_file_path):
            raise RawFileSetError(
                f"raw file {shown(raw_file_path)} does not exist (was it moved or deleted on the instrument share?)"
            )
        members = self.set_members(raw_file_path)
        for member in members:
            _check_inside(member, raw_file_path.parent)
            if _undecodable_name(str(member)):
                raise RawFileSetError(
                    f"{shown(member)} in raw file {shown(raw_file_path)} has a name that is not valid UTF-8, so it "
                    "cannot be recorded or uploaded: rename it on the share (e.g. with convmv), then retry"
                )
        if not members:
            raise RawFileSetError(
                f"raw file {shown(raw_file_path)} contains no files: nothing to back up. "
                "Check the acquisition on the instrument; remove the empty entry if it is not a measurement."
            )
        return members


@register
class Thermo(InstrumentType):
    """Thermo Orbitrap and friends: one ``NAME.raw`` file."""

    name = "thermo"

    def is_raw_file(self, path: Path) -> bool:
        return plain_entry_of_type(path, ".raw", stat.S_ISREG)

    def main_file(self, raw_file_path: Path) -> Path:
        return raw_file_path

    def set_members(self, raw_file_path: Path) -> list[Path]:
        return [raw_file_path] if check_no_symlink(raw_file_path) and raw_file_path.is_file() else []


@register
class Bruker(InstrumentType):
    """Bruker timsTOF: a ``NAME.d`` folder; every file below it belongs to the set."""

    name = "bruker"
    main_file_name = "analysis.tdf_bin"

    def is_raw_file(self, path: Path) -> bool:
        return plain_entry_of_type(path, ".d", stat.S_ISDIR)

    def main_file(self, raw_file_path: Path) -> Path:
        return raw_file_path / self.main_file_name

    def set_members(self, raw_file_path: Path) -> list[Path]:
        if not check_no_symlink(raw_file_path) or not raw_file_path.is_dir():
            return []
        return walk_regular_files(raw_file_path)


@register
class Sciex(InstrumentType):
    """Sciex: ``NAME.wiff`` plus the sibling files the acquisition writes next to it."""

    name = "sciex"
    sibling_suffixes = (".wiff2", ".wiff.scan", ".timeseries.data")

    def is_raw_file(self, path: Path) -> bool:
        return plain_entry_of_type(path, ".wiff", stat.S_ISREG)

    def main_file(self, raw_file_path: Path) -> Path:
        return raw_file_path

    def set_members(self, raw_file_path: Path) -> list[Path]:
        stem = raw_file_path.name[: -len(raw_file_path.suffix)]
        candidates = [raw_file_path] + [raw_file_path.with_name(stem + s) for s in self.sibling_suffixes]
        return [p for p in candidates if check_no_symlink(p) and p.is_file()]
