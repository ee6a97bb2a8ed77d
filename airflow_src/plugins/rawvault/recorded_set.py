"""THE check "the set on disk is exactly the recorded one", and the modification times it relies on.

A set passes when, below ``root``, it has exactly the recorded files (none
missing, none extra, no symbolic link and nothing but regular files and
folders anywhere in it), each with its recorded size and

- ``size_mtime``: the modification time it had when it was checksummed
  (``RawFile.source_mtimes``; a raw file checksummed before those were
  recorded: the main file's ``source_mtime_ns``), or
- ``rehash``: a fresh MD5 equal to the recorded one.

The file mover asks it before moving a set (``file_mover.verify``), the purge
before deleting one (always ``rehash``). Cheap checks come first: a set with a
structural problem or a wrong size is refused before any file is read.

Nothing here follows a symbolic link: entries are read with ``lstat`` and
``scandir``, files are opened with ``O_NOFOLLOW`` and must be the inode that
was listed. Each file found is described by :class:`FileFacts`, whose
``identity`` lets a caller make sure that what it acts on later is still the
file that was checked. No database, no Airflow.
"""

from __future__ import annotations

import io
import os
import stat
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path, PurePosixPath
from typing import Any

from rawvault.checksum import FileChangedError
from rawvault.digests import advise_sequential, digest_stream
from shared.instrument_types import InstrumentType, RawFileSetError, shown

MAX_PROBLEMS_SHOWN = 5
_OPEN_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)


class Verify(StrEnum):
    """How each file is compared with its record (besides its size)."""

    SIZE = "size"  # sizes only: a cheap first look, nothing is read
    SIZE_MTIME = "size_mtime"
    REHASH = "rehash"


@dataclass(frozen=True)
class Record:
    """What was recorded for a set: ``file_info`` and the modification times of checksum time."""

    file_info: Mapping[str, Sequence[Any]]  # path -> [size, md5, etag], relative to the folder checked
    mtimes: Mapping[str, int] | None = None  # RawFile.source_mtimes
    main_file: str | None = None  # the main file's path, for records without per-file mtimes
    main_mtime_ns: int | None = None  # RawFile.source_mtime_ns


def record_of(raw_file: Any, main_file: str | None, only_top: Iterable[str] | None = None) -> Record:
    """The :class:`Record` of a ``RawFile`` (``file_info``, ``source_mtimes``, ``source_mtime_ns``).

    ``main_file``: the main file's path relative to the set's folder (``NAME.d/analysis.tdf_bin``).
    ``only_top``: keep only the files below these top-level names (part of a set that was moved).
    """
    file_info = dict(raw_file.file_info or {})
    if only_top is not None:
        keep = set(only_top)
        file_info = {path: entry for path, entry in file_info.items() if path.split("/", 1)[0] in keep}
    mtimes = dict(raw_file.source_mtimes or {}) or None
    return Record(file_info, mtimes, main_file, raw_file.source_mtime_ns)


@dataclass(frozen=True)
class FileFacts:
    """One file of the set as found (and, with ``rehash``, read)."""

    size: int
    mtime_ns: int
    allocated: int  # bytes the file system allocated for it (what deleting it frees)
    identity: tuple[int, int, int, int, int]  # dev, inode, size, mtime, ctime when last looked at
    md5: str | None = None


@dataclass
class SetCheck:
    """What :func:`check_recorded_set` found: the recorded files present, the missing ones, the problems."""

    root: Path
    files: dict[str, FileFacts] = field(default_factory=dict)
    missing: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def summary(self, limit: int = MAX_PROBLEMS_SHOWN) -> str:
        """The first ``limit`` problems, and how many more there are."""
        text = "; ".join(self.problems[:limit])
        more = len(self.problems) - limit
        return text + (f" (and {more} more)" if more > 0 else "")


def identity_of(info: os.stat_result) -> tuple[int, int, int, int, int]:
    """What must be unchanged for a file to still be the one that was checked."""
    return (info.st_dev, info.st_ino, info.st_size, info.st_mtime_ns, info.st_ctime_ns)


def _facts(info: os.stat_result, md5: str | None = None) -> FileFacts:
    return FileFacts(info.st_size, info.st_mtime_ns, info.st_blocks * 512, identity_of(info), md5)


def safe_relative(path: str) -> PurePosixPath:
    """``path`` as a relative POSIX path that stays below its folder; ``ValueError`` otherwise."""
    relative = PurePosixPath(path)
    if not path or relative.is_absolute() or "\\" in path or any(p in ("", ".", "..") for p in path.split("/")):
        raise ValueError(f"recorded path {path!r} is not a plain relative path: refused")
    return relative


def hash_no_follow(path: Path, listed: os.stat_result | None = None) -> tuple[str, os.stat_result]:
    """MD5 of regular file ``path`` (never through a symlink) and its ``fstat`` after the read.

    ``listed``: the ``lstat`` the file was listed with; the file opened must be
    that file, unchanged (the same inode number alone proves nothing: a file
    deleted and written again often gets it back). Raises
    :class:`~rawvault.checksum.FileChangedError` when it is another file or
    changes while it is read, ``OSError`` when it cannot be read.
    """
    descriptor = os.open(path, _OPEN_FLAGS)
    with io.FileIO(descriptor, "rb", closefd=True) as stream:
        before = os.fstat(descriptor)
        if not stat.S_ISREG(before.st_mode) or (listed is not None and identity_of(before) != identity_of(listed)):
            raise FileChangedError(f"{shown(path)} was replaced or changed while the set was being checked")
        advise_sequential(stream)
        digests = digest_stream(stream, None, size=before.st_size, limit=before.st_size + 1)
        after = os.fstat(descriptor)
    if digests.size != before.st_size or identity_of(after)[2:4] != identity_of(before)[2:4]:
        raise FileChangedError(f"{shown(path)} changed while it was being read (it is still being written?)")
    return digests.md5, after


def mtimes_of(root: Path, relative_paths: Iterable[str]) -> dict[str, int]:
    """``{path: modification time in ns}`` of files below ``root``, read without following symlinks."""
    return {path: (root / safe_relative(path)).lstat().st_mtime_ns for path in relative_paths}


def confirm_mtimes(root: Path, before: Mapping[str, int]) -> dict[str, int]:
    """``before`` again, after the files were read; :class:`FileChangedError` naming a file whose time moved."""
    after = mtimes_of(root, before)
    for path, mtime_ns in before.items():
        if after[path] != mtime_ns:
            raise FileChangedError(
                f"{shown(root / path)} was modified while it was being checksummed: the acquisition may still be "
                "running; retry the task once the instrument has finished writing"
            )
    return after


class _Listing:
    """Every entry below the set's top-level names, without following a symlink; problems for what is not a file."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.files: dict[str, os.stat_result] = {}
        self.problems: list[str] = []

    def add(self, relative: str) -> None:
        path = self.root / relative
        try:
            info = path.lstat()
        except FileNotFoundError:
            return
        except OSError as error:
            self.problems.append(f"{shown(path)} cannot be read ({error.strerror})")
            return
        if stat.S_ISDIR(info.st_mode):
            self._walk(relative)
        else:
            self._entry(relative, info)

    def _entry(self, relative: str, info: os.stat_result) -> None:
        path = self.root / relative
        if stat.S_ISREG(info.st_mode):
            self.files[relative] = info
        elif stat.S_ISLNK(info.st_mode):
            try:
                target = f" (to {shown(path.readlink())})"
            except OSError:
                target = ""
            self.problems.append(f"{shown(path)} is a symbolic link{target}: rawvault never follows one")
        else:
            self.problems.append(f"{shown(path)} is not a regular file or folder")

    def _walk(self, top: str) -> None:
        pending = [top]
        while pending:  # no recursion: deep folders cannot exhaust the stack
            folder = pending.pop()
            try:
                with os.scandir(self.root / folder) as entries:
                    found = [(entry.name, entry.is_dir(follow_symlinks=False), entry) for entry in entries]
            except OSError as error:
                self.problems.append(f"folder {shown(self.root / folder)} cannot be read ({error.strerror})")
                continue
            for name, is_dir, entry in found:
                relative = f"{folder}/{name}"
                if is_dir:
                    pending.append(relative)
                else:
                    self._entry(relative, entry.stat(follow_symlinks=False))


def _list_set(root: Path, record: Record, instrument_type: InstrumentType | None, raw_file_name: str) -> _Listing:
    listing = _Listing(root)
    for top in sorted({safe_relative(path).parts[0] for path in record.file_info}):
        listing.add(top)
    if instrument_type is not None:
        # Files the instrument type counts as part of the set (e.g. a Sciex sibling written later).
        try:
            members = instrument_type.set_members(root / raw_file_name)
        except RawFileSetError as error:
            listing.problems.append(str(error))
            members = []
        for member in members:
            relative = member.relative_to(root).as_posix()
            if relative not in listing.files:
                listing.add(relative)
    return listing


def _compare_sizes(check: SetCheck, record: Record, listing: _Listing, missing_ok: bool) -> None:
    for relative in sorted(set(listing.files) - set(record.file_info)):
        check.problems.append(f"{shown(check.root / relative)} is not a recorded file of the set (not backed up)")
    for relative, entry in sorted(record.file_info.items()):
        info = listing.files.get(relative)
        if info is None:
            check.missing.append(relative)
            if not missing_ok:
                check.problems.append(f"{shown(check.root / relative)} is missing")
            continue
        size = int(entry[0])
        if info.st_size != size:
            check.problems.append(
                f"{shown(check.root / relative)} is {info.st_size} bytes on the share but {size} bytes were backed up"
            )
        check.files[relative] = _facts(info)


def _compare_mtimes(check: SetCheck, record: Record) -> None:
    for relative, facts in check.files.items():
        if record.mtimes:
            recorded = record.mtimes.get(relative)
        elif relative == record.main_file:
            recorded = record.main_mtime_ns
        else:
            continue  # recorded before per-file times existed: its size was checked
        if recorded is None:
            check.problems.append(f"{shown(check.root / relative)} has no modification time recorded")
        elif facts.mtime_ns != recorded:
            check.problems.append(
                f"{shown(check.root / relative)} was modified after it was checksummed (modification time "
                f"{facts.mtime_ns} ns, recorded {recorded} ns), so it may not be the file that was backed up"
            )


def _compare_md5s(check: SetCheck, record: Record, listing: _Listing) -> None:
    for relative in list(check.files):
        path = check.root / relative
        try:
            md5, after = hash_no_follow(path, listing.files[relative])
        except FileChangedError as error:
            check.problems.append(str(error))
            continue
        except OSError as error:
            check.problems.append(f"{shown(path)} cannot be read ({error.strerror})")
            continue
        recorded = str(record.file_info[relative][1])
        check.files[relative] = _facts(after, md5)
        if md5 != recorded:
            check.problems.append(f"{shown(path)} has MD5 {md5}, but {recorded} was backed up: its content changed")


def check_recorded_set(
    root: Path,
    record: Record,
    *,
    verify: Verify,
    instrument_type: InstrumentType | None = None,
    raw_file_name: str = "",
    missing_ok: bool = False,
) -> SetCheck:
    """Whether the set below ``root`` is exactly ``record`` (see the module doc); never raises for what it finds.

    ``instrument_type`` and ``raw_file_name`` let the instrument type name files
    that belong to the set but are not recorded (an extra Sciex sibling).
    ``missing_ok``: recorded files that are gone are listed in ``missing``
    instead of being problems (a purge that a crash interrupted).
    """
    check = SetCheck(root)
    try:
        listing = _list_set(root, record, instrument_type, raw_file_name)
    except ValueError as error:  # a recorded path that would leave root
        check.problems.append(str(error))
        return check
    check.problems.extend(listing.problems)
    _compare_sizes(check, record, listing, missing_ok)
    if check.problems or verify is Verify.SIZE:
        return check
    if verify is Verify.SIZE_MTIME:
        _compare_mtimes(check, record)
    else:
        _compare_md5s(check, record, listing)
    return check
