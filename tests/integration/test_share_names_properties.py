"""Property-based tests: any file and folder names an outsider can write on an instrument share.

Names are generated as bytes, as the share holds them: any Unicode, control characters,
bytes that are not UTF-8, names up to the 255-byte limit, ``..``-like and ignored names,
plus symlinks to files and folders outside the instrument folder. Whatever the share
holds, the watcher's listing, ``files_in_set``, the checksum step's ``safe_join`` and the
S3 key check ``validate_relative_path`` give a correct result or a clear error (one that
names the path and can itself be stored and logged), never a crash and never a path
outside the folder. Registration goes through the real MongoDB wire server.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from hypothesis import example, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from rawvault.checksum import safe_join
from rawvault.s3.errors import UnsafePathError
from rawvault.s3.keys import validate_relative_path
from rawvault.watcher import list_raw_files, register_new_raw_files
from shared.db.models import RawFile
from shared.instrument_types import INSTRUMENT_TYPES, InstrumentType, RawFileSetError, is_ignored_name, shown
from tests.pipeline_env import PipelineEnv, write_pipeline_env
from tests.properties import examples

NAME_MAX = 255  # bytes per name on ext4, xfs, btrfs and SMB/CIFS mounts
SUFFIXES = {"thermo": b".raw", "bruker": b".d", "sciex": b".wiff"}
SCIEX_SIBLINGS = (b".wiff2", b".wiff.scan", b".timeseries.data")
TRICKY_NAMES = [
    b"..",
    b"...",
    b".hidden",
    b"~$lock",
    b"x.tmp",
    b"x.part",
    b"Backup",
    b" ",
    b"\n",
    b"a\x7fb",
    b"\xff\xfe",
    "é".encode("latin-1"),  # a Windows instrument writing through a share with the wrong character set
    "Größe – Probe 1".encode(),
    b"-rf",
    b"a\\b",
    b"%2e%2e",
    b"x" * NAME_MAX,
]

TRICKY_TEXT_PATHS = [
    "..", "a/../b", "./a", "a/./b", "a//b", "a/", "/a", "\\a", "a\\b", "a\x00b", "a\nb", "a\x7f", "~/x",
    "%2e%2e/x", "\u2025/x", "\uff0e\uff0e/x", "a" * 1025, "é" * 600, "NAME.d/analysis.tdf",
]  # fmt: skip


def _fs_safe(name: bytes) -> bytes:
    """What a POSIX file system accepts as one name: no ``/``, no NUL, at most 255 bytes."""
    return name.replace(b"/", b"_").replace(b"\0", b"_")[:NAME_MAX]


name_bytes = st.one_of(
    st.text(st.characters(codec="utf-8", exclude_characters="/\0"), min_size=1, max_size=40).map(str.encode),
    st.binary(min_size=1, max_size=40),
    st.integers(min_value=NAME_MAX - 8, max_value=NAME_MAX + 20).map(lambda n: b"L" * n),
    st.sampled_from(TRICKY_NAMES),
).map(_fs_safe)


@dataclass(frozen=True)
class Entry:
    """One thing an outsider puts into the instrument folder (or into a ``.d`` of it)."""

    name: bytes
    kind: str  # file, folder, link-out-file, link-out-folder, link-in


entry_kinds = st.sampled_from(["file", "file", "file", "folder", "link-out-file", "link-out-folder", "link-in"])
entries = st.lists(st.builds(Entry, name_bytes, entry_kinds), min_size=1, max_size=8)
# Paths inside a Bruker .d: one to three names deep.
inner_paths = st.lists(st.tuples(st.lists(name_bytes, min_size=1, max_size=3), entry_kinds), min_size=0, max_size=6)


def _with_suffix(name: bytes, suffix: bytes, use_suffix: bool) -> bytes:
    return name[: NAME_MAX - len(suffix)] + suffix if use_suffix else name


def _path(folder: Path, *names: bytes) -> Path:
    """``folder/names``; undecodable bytes round-trip through Python's surrogate escapes."""
    return folder.joinpath(*(os.fsdecode(name) for name in names))


def _create(path: Path, kind: str, outside: Path) -> None:
    """Create one entry; names the file system refuses (taken, '.', '..') are skipped like a failed copy would be."""
    try:
        if kind == "file":
            with path.open("xb") as handle:
                handle.write(b"data")
        elif kind == "folder":
            path.mkdir(parents=True, exist_ok=True)
            with (path / "analysis.tdf_bin").open("xb") as handle:
                handle.write(b"tdf")
        elif kind == "link-out-file":
            path.symlink_to(outside / "secret.txt")
        elif kind == "link-out-folder":
            path.symlink_to(outside / "secret_dir", target_is_directory=True)
        else:  # a link to a sibling inside the folder: never followed either
            path.symlink_to("data-target")
    except (FileExistsError, IsADirectoryError, NotADirectoryError):
        pass


def _populate(folder: Path, outside: Path, itype: str, top: list[Entry], flags: list[bool], inner: list) -> None:
    suffix = SUFFIXES[itype]
    for entry, use_suffix in zip(top, flags + [True] * len(top), strict=False):
        name = _with_suffix(entry.name, suffix, use_suffix)
        if name in (b".", b".."):
            continue
        _create(_path(folder, name), entry.kind, outside)
        if itype == "sciex" and use_suffix:
            stem = name[: -len(suffix)]
            sibling_kind = "file" if entry.kind == "folder" else entry.kind
            for sibling in SCIEX_SIBLINGS:
                if len(stem + sibling) <= NAME_MAX:
                    _create(_path(folder, stem + sibling), sibling_kind, outside)
        if itype == "bruker" and use_suffix and entry.kind == "folder":
            for parts, kind in inner:
                parts = [part for part in parts if part not in (b".", b"..")]
                if not parts:
                    continue
                parent = _path(folder, name, *parts[:-1])
                try:
                    parent.mkdir(parents=True, exist_ok=True)
                except (FileExistsError, NotADirectoryError):
                    continue
                _create(_path(parent, parts[-1]), kind, outside)


@pytest.fixture
def share_root() -> Iterator[Path]:
    root = Path(tempfile.mkdtemp(prefix="rawvault-share-props-"))
    yield root
    shutil.rmtree(root, ignore_errors=True)


def _fresh(root: Path) -> tuple[Path, Path]:
    """An empty instrument folder and an 'outside' folder holding a secret file and folder."""
    shutil.rmtree(root, ignore_errors=True)
    folder, outside = root / "instrument", root / "outside"
    folder.mkdir(parents=True)
    (outside / "secret_dir").mkdir(parents=True)
    (outside / "secret.txt").write_bytes(b"secret")
    (outside / "secret_dir" / "analysis.tdf_bin").write_bytes(b"secret")
    return folder, outside


def _assert_storable(text: str, what: str) -> None:
    """A message or name must be valid UTF-8: it is stored in MongoDB and written to logs."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as error:
        raise AssertionError(f"{what} is not valid UTF-8 text ({error}): {text!r}") from None


def _check_set(itype: InstrumentType, folder: Path, entry: Path) -> None:
    """files_in_set of one listed entry: only regular files inside the folder, or a clear RawFileSetError."""
    real_folder = os.path.realpath(folder)
    try:
        members = itype.files_in_set(entry)
    except RawFileSetError as error:
        message = str(error)
        _assert_storable(message, "the RawFileSetError message")
        assert shown(folder) in message, message
        return
    assert len(set(members)) == len(members), members
    for member in members:
        assert os.path.commonpath([real_folder, os.path.realpath(member)]) == real_folder, member
        assert member.is_file() and not member.is_symlink(), member
        relative = member.relative_to(folder).as_posix()
        _assert_storable(relative, "a file_info path")
        try:
            assert safe_join(folder, relative) == member
        except ValueError as error:  # a backslash: compute_checksum fails naming the path (never reads elsewhere)
            assert repr(relative) in str(error) and "\\" in relative, error
        try:
            assert validate_relative_path(relative) == relative
        except UnsafePathError as error:  # e.g. a control character: the upload refuses it, naming the path
            assert repr(relative) in str(error)


@pytest.mark.parametrize("itype_name", sorted(INSTRUMENT_TYPES))
@hypothesis_settings(max_examples=examples(40))
@given(top=entries, flags=st.lists(st.booleans(), max_size=8), inner=inner_paths)
@example(top=[Entry(b"bad\xff", "file"), Entry(b"good", "file")], flags=[], inner=[])
@example(top=[Entry(b"x", "link-out-file"), Entry(b"y", "link-out-folder")], flags=[], inner=[])
@example(top=[Entry(b"run", "folder")], flags=[], inner=[([b"sub\xff", b"f"], "file"), ([b"lnk"], "link-out-folder")])
def test_listing_and_sets_never_leave_the_folder_or_crash(
    share_root: Path, itype_name: str, top: list[Entry], flags: list[bool], inner: list
) -> None:
    folder, outside = _fresh(share_root)
    _populate(folder, outside, itype_name, top, flags, inner)
    itype = INSTRUMENT_TYPES[itype_name]

    listed = list_raw_files("inst", folder, itype, skip=["Backup"])

    for entry in listed:
        assert entry.parent == folder and not entry.is_symlink(), entry
        assert not is_ignored_name(entry.name) and entry.name != "Backup", entry
        _assert_storable(entry.name, "a listed raw file name")  # it becomes a MongoDB _id
        assert itype.is_raw_file(entry)
        _check_set(itype, folder, entry)


@pytest.fixture
def env(tmp_path: Path, mongo_uri: str) -> PipelineEnv:
    return write_pipeline_env(tmp_path / "env")


@hypothesis_settings(max_examples=examples(25))
@given(top=entries, flags=st.lists(st.booleans(), max_size=8))
@example(top=[Entry(b"bad\xff", "file"), Entry(b"good", "file")], flags=[])
@example(top=[Entry(b"line\nbreak", "file"), Entry(b"x" * NAME_MAX, "file")], flags=[])
def test_the_watcher_registers_every_usable_name_and_never_crashes(
    env: PipelineEnv, top: list[Entry], flags: list[bool]
) -> None:
    RawFile.objects.delete()
    folder = env.instrument_path("thermo1")
    shutil.rmtree(folder)
    folder.mkdir()
    outside = env.root / "outside"
    shutil.rmtree(outside, ignore_errors=True)
    (outside / "secret_dir").mkdir(parents=True)
    (outside / "secret.txt").write_bytes(b"secret")
    _populate(folder, outside, "thermo", top, flags, [])
    expected = {entry.name for entry in list_raw_files("thermo1", folder, INSTRUMENT_TYPES["thermo"], ["Backup"])}

    registered = register_new_raw_files("thermo1", env.settings)

    assert set(registered) == expected
    assert {raw_file.original_name for raw_file in RawFile.objects(instrument_id="thermo1")} == expected


def test_a_name_that_is_not_utf8_no_longer_stops_the_watcher(
    env: PipelineEnv, caplog: pytest.LogCaptureFixture
) -> None:
    """The finding behind the example above: on main, pymongo's UnicodeEncodeError failed every watcher run."""
    folder = env.instrument_path("thermo1")
    _path(folder, "probe_é.raw".encode("latin-1")).write_bytes(b"data")  # from a share with another character set
    (folder / "later.raw").write_bytes(b"data")

    assert register_new_raw_files("thermo1", env.settings) == ["later.raw"]
    assert r"probe_\xe9.raw in" in caplog.text and "is not a valid UTF-8 name" in caplog.text, caplog.text


@hypothesis_settings(max_examples=examples(300))
@given(st.text(st.characters(exclude_categories=["Cs"]), max_size=60) | st.sampled_from(TRICKY_TEXT_PATHS))
def test_validate_relative_path_accepts_only_paths_inside_the_prefix(path: str) -> None:
    """Any text a manifest or file_info may carry: the path itself when safe, else UnsafePathError naming it."""
    try:
        assert validate_relative_path(path) == path
    except UnsafePathError as error:
        assert repr(path) in str(error)
        return
    parts = path.split("/")
    assert not path.startswith("/") and "\\" not in path and all(part not in ("", ".", "..") for part in parts)
    assert Path("/prefix", path).resolve().is_relative_to("/prefix")


def test_validate_relative_path_refuses_text_that_is_not_utf8() -> None:
    with pytest.raises(UnsafePathError):
        validate_relative_path("NAME.d/a\udcffb")
