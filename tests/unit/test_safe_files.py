"""The restore's half of safe_files: folders walked without following links, random O_EXCL temporary files."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from rawvault.safe_files import (
    TEMPORARY_MODE,
    UnsafeFolderError,
    create_temporary,
    entry_kind,
    open_folder,
    place_no_overwrite_at,
    remove_if_same,
    temporary_name,
)


@pytest.fixture
def root(tmp_path: Path):
    folder = tmp_path / "target"
    folder.mkdir()
    descriptor = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    yield folder, descriptor
    os.close(descriptor)


def test_open_folder_creates_missing_folders_and_finds_them_again(root) -> None:
    folder, fd = root
    assert open_folder(fd, folder, ["a", "b"], create=False) is None
    created = open_folder(fd, folder, ["a", "b"], create=True)
    assert created is not None and (folder / "a" / "b").is_dir()
    os.close(created)
    again = open_folder(fd, folder, ["a", "b"], create=False)
    assert again is not None
    os.close(again)


@pytest.mark.parametrize("create", [True, False])
def test_a_symlink_on_the_way_is_refused_with_where_it_points(root, tmp_path: Path, create: bool) -> None:
    folder, fd = root
    outside = tmp_path / "outside"
    outside.mkdir()
    (folder / "a").mkdir()
    (folder / "a" / "b").symlink_to(outside)
    with pytest.raises(UnsafeFolderError) as raised:
        open_folder(fd, folder, ["a", "b", "c"], create=create)
    assert str(raised.value) == (f"{folder}/a/b is a symbolic link to {outside} (outside the target folder {folder})")
    assert list(outside.iterdir()) == []
    (folder / "inside").mkdir()
    (folder / "a" / "b").unlink()
    (folder / "a" / "b").symlink_to("../inside")
    with pytest.raises(UnsafeFolderError, match=r"is a symbolic link to \.\./inside \(inside the target folder"):
        open_folder(fd, folder, ["a", "b"], create=create)


def test_a_file_on_the_way_and_unsafe_names_are_refused(root) -> None:
    folder, fd = root
    (folder / "a").write_text("a file")
    with pytest.raises(UnsafeFolderError, match="a is a file, but a restored file needs it to be a folder"):
        open_folder(fd, folder, ["a", "b"], create=True)
    for bad in ("..", ".", ""):
        with pytest.raises(UnsafeFolderError, match="is not a plain folder name"):
            open_folder(fd, folder, ["x", bad], create=True)


def test_descriptors_are_not_leaked(root, tmp_path: Path) -> None:
    folder, fd = root
    (folder / "link").symlink_to(tmp_path)
    before = len(list(Path("/proc/self/fd").iterdir()))
    for _ in range(20):
        with pytest.raises(UnsafeFolderError):
            open_folder(fd, folder, ["link"], create=True)
        created = open_folder(fd, folder, ["p", "q"], create=True)
        os.close(created)
    assert len(list(Path("/proc/self/fd").iterdir())) == before


def test_temporary_files_are_new_private_random_and_never_follow_a_link(root, tmp_path: Path) -> None:
    folder, fd = root
    (folder / ".NAME.raw.rawvault-restore").symlink_to(tmp_path / "victim")  # the old, predictable name
    victim = tmp_path / "victim"
    victim.write_text("keep")
    names = set()
    for _ in range(5):
        descriptor, name = create_temporary(fd, "NAME.raw", ".rawvault-restore")
        names.add(name)
        assert name.startswith(".NAME.raw.") and name.endswith(".rawvault-restore")
        assert stat.S_IMODE(os.fstat(descriptor).st_mode) == TEMPORARY_MODE
        os.close(descriptor)
    assert len(names) == 5
    assert victim.read_text() == "keep"


def test_a_temporary_name_fits_a_long_final_name() -> None:
    name = temporary_name("ä" * 127, ".rawvault-restore")  # 254 bytes of UTF-8
    assert len(name.encode()) <= 255 and name.endswith(".rawvault-restore")


def test_publish_never_replaces_and_leaves_one_name_per_inode(root) -> None:
    folder, fd = root
    descriptor, name = create_temporary(fd, "f", ".tmp")
    os.write(descriptor, b"verified")
    assert place_no_overwrite_at(fd, name, "f")
    remove_if_same(fd, name, descriptor)
    assert (folder / "f").read_bytes() == b"verified" and (folder / "f").stat().st_nlink == 1
    assert sorted(p.name for p in folder.iterdir()) == ["f"]
    second, other = create_temporary(fd, "f", ".tmp")
    os.write(second, b"another")
    assert not place_no_overwrite_at(fd, other, "f")  # something is there: never replaced
    remove_if_same(fd, other, second)
    os.close(second)
    os.close(descriptor)
    assert (folder / "f").read_bytes() == b"verified" and sorted(p.name for p in folder.iterdir()) == ["f"]


def test_remove_if_same_never_removes_someone_elses_file(root) -> None:
    folder, fd = root
    descriptor, name = create_temporary(fd, "f", ".tmp")
    (folder / name).unlink()
    (folder / name).write_text("planted after our file was removed")
    remove_if_same(fd, name, descriptor)
    os.close(descriptor)
    assert (folder / name).read_text() == "planted after our file was removed"
    assert entry_kind(fd, name) == "file" and entry_kind(fd, "missing") is None
