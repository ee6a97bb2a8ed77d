"""Deleting a checked set (rawvault.purge_fs) and the set check it relies on (rawvault.recorded_set), on real folders.

Tests run as root, which ignores file permissions; the read-only folder tests drop
that bypass for the calling thread (tests.purge_data.without_root_bypass).
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from rawvault import purge_fs
from rawvault.checksum import FileChangedError
from rawvault.purge_fs import PurgeDeleteError, delete_set
from rawvault.recorded_set import Record, Verify, check_recorded_set, hash_no_follow, identity_of, record_of
from shared.instrument_types import INSTRUMENT_TYPES
from tests.purge_data import without_root_bypass

BRUKER = INSTRUMENT_TYPES["bruker"]
SCIEX = INSTRUMENT_TYPES["sciex"]


def _bruker(month: Path, name: str = "x.d") -> dict[str, list]:
    files = {f"{name}/analysis.tdf_bin": b"a" * 5000, f"{name}/analysis.tdf": b"b" * 300, f"{name}/1.m/m.method": b"c"}
    files[f"{name}/1.m/sub/p.xml"] = b""
    info = {}
    for relative, data in files.items():
        (month / relative).parent.mkdir(parents=True, exist_ok=True)
        (month / relative).write_bytes(data)
        info[relative] = [len(data), hashlib.md5(data).hexdigest(), hashlib.md5(data).hexdigest()]
    return info


@pytest.fixture
def instrument(tmp_path: Path) -> Path:
    (tmp_path / "tims1" / "Backup" / "2026_11").mkdir(parents=True)
    return tmp_path / "tims1"


def _checked(month: Path, info: dict[str, list]) -> dict[str, tuple[int, int, int, int, int]]:
    check = check_recorded_set(month, Record(info), verify=Verify.REHASH, instrument_type=BRUKER, raw_file_name="x.d")
    assert check.ok, check.problems
    return {path: facts.identity for path, facts in check.files.items()}


def test_files_first_then_the_emptied_folders_and_nothing_outside_the_set(instrument: Path) -> None:
    month = instrument / "Backup" / "2026_11"
    info = _bruker(month)
    (month / "other.d").mkdir()
    (month / "other.d" / "keep").write_bytes(b"k")
    result = delete_set(instrument, ("Backup", "2026_11"), ["x.d"], _checked(month, info), target_folder="Backup")
    assert sorted(result.files) == sorted(info)
    assert result.folders == ["x.d/1.m/sub", "x.d/1.m", "x.d"]
    assert not (month / "x.d").exists()
    assert (month / "other.d" / "keep").read_bytes() == b"k" and month.is_dir()


def test_only_inside_the_target_folder(instrument: Path) -> None:
    info = _bruker(instrument)  # a set right in the instrument folder, not moved
    checked = _checked(instrument, info)
    for within in ((), ("2026_11",), ("Other", "2026_11")):
        with pytest.raises(PurgeDeleteError, match=r"the purge deletes only inside .*tims1/Backup"):
            delete_set(instrument, within, ["x.d"], checked, target_folder="Backup")
    with pytest.raises(PurgeDeleteError, match=r"'\.\.' is not a plain folder entry name"):
        delete_set(instrument, ("Backup", ".."), ["x.d"], checked, target_folder="Backup")
    assert (instrument / "x.d" / "analysis.tdf_bin").exists()


def test_a_symlink_on_the_way_is_never_followed(instrument: Path, tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    info = _bruker(elsewhere)
    checked = _checked(elsewhere, info)
    (instrument / "Backup" / "2026_12").symlink_to(elsewhere)  # the month folder is a link out of the share
    with pytest.raises(PurgeDeleteError, match=r"2026_12 is a symbolic link or not a folder"):
        delete_set(instrument, ("Backup", "2026_12"), ["x.d"], checked, target_folder="Backup")
    (instrument / "Backup" / "2026_11" / "x.d").symlink_to(elsewhere / "x.d")  # the set itself is a link
    with pytest.raises(PurgeDeleteError, match=r"x\.d is a symbolic link or not a regular file"):
        delete_set(instrument, ("Backup", "2026_11"), ["x.d"], checked, target_folder="Backup")
    assert sorted(p.relative_to(elsewhere).as_posix() for p in elsewhere.rglob("*") if p.is_file()) == sorted(info)


def test_a_file_changed_after_the_check_stops_the_deletion(instrument: Path) -> None:
    month = instrument / "Backup" / "2026_11"
    info = _bruker(month)
    checked = _checked(month, info)
    (month / "x.d" / "analysis.tdf").write_bytes(b"B" * 300)  # rewritten in place after the check
    with pytest.raises(PurgeDeleteError, match=r"analysis\.tdf changed after it was checked .*deleting stopped"):
        delete_set(instrument, ("Backup", "2026_11"), ["x.d"], checked, target_folder="Backup")
    assert (month / "x.d" / "analysis.tdf").read_bytes() == b"B" * 300
    assert (month / "x.d" / "analysis.tdf_bin").exists()  # sorted after it: never reached


def test_an_unchecked_file_is_never_deleted(instrument: Path) -> None:
    month = instrument / "Backup" / "2026_11"
    info = _bruker(month)
    checked = _checked(month, info)
    (month / "x.d" / "1.m" / "late.txt").write_bytes(b"appeared after the check")
    with pytest.raises(PurgeDeleteError, match=r"late\.txt appeared after the set was checked: left in place"):
        delete_set(instrument, ("Backup", "2026_11"), ["x.d"], checked, target_folder="Backup")
    assert (month / "x.d" / "1.m" / "late.txt").read_bytes() == b"appeared after the check"


def test_a_resumed_deletion_skips_what_is_gone_and_removes_the_raw_files_own_folder(instrument: Path) -> None:
    own = instrument / "Backup" / "2026_11" / "x.d-tims1-20261101T000000"
    own.mkdir()
    info = _bruker(own)
    checked = _checked(own, info)
    (own / "x.d" / "analysis.tdf_bin").unlink()  # a run before deleted it, then died
    del checked["x.d/analysis.tdf_bin"]
    within = ("Backup", "2026_11", own.name)
    result = delete_set(instrument, within, ["x.d"], checked, target_folder="Backup", remove_empty_parent=True)
    assert len(result.files) == 3
    assert not own.exists() and own.parent.is_dir()


def test_a_sciex_set_deletes_its_siblings_only(instrument: Path) -> None:
    month = instrument / "Backup" / "2026_11"
    info = {}
    for name in ("s.wiff", "s.wiff2", "s.wiff.scan", "t.wiff"):
        (month / name).write_bytes(name.encode())
        info[name] = [len(name), hashlib.md5(name.encode()).hexdigest(), ""]
    del info["t.wiff"]
    check = check_recorded_set(month, Record(info), verify=Verify.REHASH, instrument_type=SCIEX, raw_file_name="s.wiff")
    assert check.ok, check.problems
    checked = {path: facts.identity for path, facts in check.files.items()}
    delete_set(instrument, ("Backup", "2026_11"), sorted(info), checked, target_folder="Backup")
    assert sorted(p.name for p in month.iterdir()) == ["t.wiff"]


def test_read_only_method_folders_are_made_writable_inside_the_set_only(instrument: Path) -> None:
    month = instrument / "Backup" / "2026_11"
    info = _bruker(month)
    checked = _checked(month, info)
    for folder in (month / "x.d" / "1.m" / "sub", month / "x.d" / "1.m"):
        folder.chmod(0o555)
    month.chmod(0o755)
    with without_root_bypass(), pytest.MonkeyPatch.context() as patch:
        patch.setattr(purge_fs._SetDeletion, "make_writable", lambda *args: None)
        with pytest.raises(PermissionError):  # the control: an owner without write permission cannot delete
            delete_set(instrument, ("Backup", "2026_11"), ["x.d"], checked, target_folder="Backup")
    with without_root_bypass():
        result = delete_set(instrument, ("Backup", "2026_11"), ["x.d"], checked, target_folder="Backup")
    assert sorted(result.made_writable) == ["x.d/1.m", "x.d/1.m/sub"]
    assert not (month / "x.d").exists()
    assert month.stat().st_mode & 0o777 == 0o755


# --- the set check -------------------------------------------------------------------------------------------


def test_the_set_check_finds_extra_missing_symlinked_and_special_entries(tmp_path: Path) -> None:
    info = _bruker(tmp_path)
    (tmp_path / "x.d" / "extra.bin").write_bytes(b"x")
    (tmp_path / "x.d" / "1.m" / "m.method").unlink()
    (tmp_path / "x.d" / "link").symlink_to("/etc/hostname")
    os.mkfifo(tmp_path / "x.d" / "pipe")
    check = check_recorded_set(tmp_path, Record(info), verify=Verify.REHASH, instrument_type=BRUKER)
    text = "\n".join(check.problems)
    assert "x.d/extra.bin is not a recorded file of the set" in text
    assert "x.d/1.m/m.method is missing" in text
    assert "x.d/link is a symbolic link (to /etc/hostname): rawvault never follows one" in text
    assert "x.d/pipe is not a regular file or folder" in text
    assert check.files["x.d/analysis.tdf"].md5 is None  # structural problems: nothing was read
    missing_ok = check_recorded_set(tmp_path, Record(info), verify=Verify.SIZE, missing_ok=True)
    assert missing_ok.missing == ["x.d/1.m/m.method"]
    assert "is missing" not in "\n".join(missing_ok.problems)


def test_size_mtime_and_rehash(tmp_path: Path) -> None:
    info = _bruker(tmp_path)
    mtimes = {path: (tmp_path / path).stat().st_mtime_ns for path in info}
    record = Record(info, mtimes)
    assert check_recorded_set(tmp_path, record, verify=Verify.SIZE_MTIME).ok
    os.utime(tmp_path / "x.d" / "analysis.tdf", ns=(1, 1))
    touched = check_recorded_set(tmp_path, record, verify=Verify.SIZE_MTIME)
    assert touched.summary().endswith("so it may not be the file that was backed up")
    assert check_recorded_set(tmp_path, record, verify=Verify.REHASH).ok  # same content
    (tmp_path / "x.d" / "analysis.tdf").write_bytes(b"c" * 300)
    changed = check_recorded_set(tmp_path, record, verify=Verify.REHASH)
    assert "x.d/analysis.tdf has MD5" in changed.summary() and "its content changed" in changed.summary()
    old_record = Record(info, None, "x.d/analysis.tdf_bin", mtimes["x.d/analysis.tdf_bin"])
    assert check_recorded_set(tmp_path, old_record, verify=Verify.SIZE_MTIME).ok  # sizes and the main file only
    (tmp_path / "x.d" / "analysis.tdf_bin").write_bytes(b"z" * 5000)
    assert not check_recorded_set(tmp_path, old_record, verify=Verify.SIZE_MTIME).ok


def test_a_recorded_path_that_leaves_the_folder_is_a_problem_not_a_read(tmp_path: Path) -> None:
    check = check_recorded_set(tmp_path, Record({"../etc/passwd": [1, "m", "e"]}), verify=Verify.REHASH)
    assert check.problems == ["recorded path '../etc/passwd' is not a plain relative path: refused"]


def test_hashing_never_opens_a_symlink_and_notices_a_swapped_file(tmp_path: Path) -> None:
    (tmp_path / "real").write_bytes(b"data")
    (tmp_path / "link").symlink_to(tmp_path / "real")
    with pytest.raises(OSError, match="Too many levels of symbolic links"):
        hash_no_follow(tmp_path / "link")
    listed = (tmp_path / "real").lstat()
    (tmp_path / "real").unlink()
    (tmp_path / "real").write_bytes(b"data")  # another inode under the same name
    with pytest.raises(FileChangedError, match="was replaced or changed while the set was being checked"):
        hash_no_follow(tmp_path / "real", listed)
    md5, after = hash_no_follow(tmp_path / "real")
    assert md5 == hashlib.md5(b"data").hexdigest() and identity_of(after)[2] == 4


def test_record_of_keeps_only_the_given_top_level_entries() -> None:
    class Doc:
        file_info = {"a.wiff": [1, "m", "e"], "a.wiff2": [2, "n", "f"]}
        source_mtimes = {"a.wiff": 5, "a.wiff2": 6}
        source_mtime_ns = 5

    record = record_of(Doc(), "a.wiff", only_top=["a.wiff2"])
    assert list(record.file_info) == ["a.wiff2"] and record.mtimes == Doc.source_mtimes
