"""What a raw file is on each instrument type.

Adding an instrument type means adding one subclass of :class:`InstrumentType`
here, decorated with :func:`register`; settings validation, the watcher, the
checksum and copy steps and the file mover all find it through
:data:`INSTRUMENT_TYPES`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path
from typing import ClassVar

INSTRUMENT_TYPES: dict[str, InstrumentType] = {}

# Names instrument software and operating systems use for scratch files that are
# never acquisitions (checked in addition to a leading dot).
IGNORED_NAME_PREFIXES = ("~$", "~", "._")
IGNORED_NAME_SUFFIXES = (".tmp", ".temp", ".part", ".lock", ".crdownload")


class RawFileSetError(ValueError):
    """A raw file on disk does not form a valid set (e.g. an empty Bruker folder)."""


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
        """Whether this entry of the instrument folder names a raw file."""

    @abstractmethod
    def main_file(self, raw_file_path: Path) -> Path:
        """The file whose size is watched to decide that an acquisition has finished."""

    @abstractmethod
    def set_members(self, raw_file_path: Path) -> list[Path]:
        """Absolute paths of every file of the set that exists now, sorted."""

    def files_in_set(self, raw_file_path: Path) -> list[Path]:
        """Like :meth:`set_members`, but fail clearly when the set is empty or missing."""
        if not raw_file_path.exists():
            raise RawFileSetError(
                f"raw file {raw_file_path} does not exist (was it moved or deleted on the instrument share?)"
            )
        members = self.set_members(raw_file_path)
        if not members:
            raise RawFileSetError(
                f"raw file {raw_file_path} contains no files: nothing to back up. "
                "Check the acquisition on the instrument; remove the empty entry if it is not a measurement."
            )
        return members


@register
class Thermo(InstrumentType):
    """Thermo Orbitrap and friends: one ``NAME.raw`` file."""

    name = "thermo"

    def is_raw_file(self, path: Path) -> bool:
        return path.suffix.lower() == ".raw" and path.is_file()

    def main_file(self, raw_file_path: Path) -> Path:
        return raw_file_path

    def set_members(self, raw_file_path: Path) -> list[Path]:
        return [raw_file_path] if raw_file_path.is_file() else []


@register
class Bruker(InstrumentType):
    """Bruker timsTOF: a ``NAME.d`` folder; every file below it belongs to the set."""

    name = "bruker"
    main_file_name = "analysis.tdf_bin"

    def is_raw_file(self, path: Path) -> bool:
        return path.suffix.lower() == ".d" and path.is_dir()

    def main_file(self, raw_file_path: Path) -> Path:
        return raw_file_path / self.main_file_name

    def set_members(self, raw_file_path: Path) -> list[Path]:
        if not raw_file_path.is_dir():
            return []
        return sorted(p for p in raw_file_path.rglob("*") if p.is_file() and not p.is_symlink())


@register
class Sciex(InstrumentType):
    """Sciex: ``NAME.wiff`` plus the sibling files the acquisition writes next to it."""

    name = "sciex"
    sibling_suffixes = (".wiff2", ".wiff.scan", ".timeseries.data")

    def is_raw_file(self, path: Path) -> bool:
        return path.suffix.lower() == ".wiff" and path.is_file()

    def main_file(self, raw_file_path: Path) -> Path:
        return raw_file_path

    def set_members(self, raw_file_path: Path) -> list[Path]:
        stem = raw_file_path.name[: -len(raw_file_path.suffix)]
        candidates = [raw_file_path] + [raw_file_path.with_name(stem + s) for s in self.sibling_suffixes]
        return [p for p in candidates if p.is_file()]
