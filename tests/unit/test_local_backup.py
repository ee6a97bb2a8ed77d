"""Staging while checksumming, then verifying and publishing: one read of the share, nothing unverified published."""

from __future__ import annotations

import errno
import fcntl
import hashlib
import os
import random
import stat
from pathlib import Path
from typing import Any

import pytest

from rawvault import staging
from rawvault.checksum import FileChangedError, checksum_file
from rawvault.local_backup import (
    BackupConflictError,
    CopyVerificationError,
    publish_raw_file_set,
    stage_raw_file_set,
)
from rawvault.safe_files import place_no_overwrite
from rawvault.staging import (
    PUBLISHED_MODE,
    STAGING_FOLDER,
    BackupDiskFullError,
    StagedCopy,
    UnsafeStagingError,
    discard_staging,
    staged_copies,
    staging_path,
)
from shared.s3_limits import MIB

PART = 5 * MIB
TOKEN = "00112233445566ff"
OTHER_TOKEN = "ffeeddccbbaa9988"


class _CountedReads:
    """A file opened for reading whose reads are added to a shared count."""

    def __init__(self, handle: Any, counts: dict[str, int]) -> None:
        self._handle, self._counts = handle, counts

    def readinto(self, buffer: Any) -> int | None:
        count = self._handle.readinto(buffer)
        self._counts["bytes"] += count or 0
        return count

    def read(self, *args: Any) -> bytes:
        data = self._handle.read(*args)
        self._counts["bytes"] += len(data)
        return data

    def __getattr__(self, name: str) -> Any:
        return getattr(self._handle, name)

    def __enter__(self) -> _CountedReads:
        return self

    def __exit__(self, *args: object) -> None:
        self._handle.close()


@pytest.fixture
def share_reads(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> dict[str, int]:
    """Bytes read through ``Path.open`` from files under ``tmp_path/share``."""
    counts = {"bytes": 0}
    share = tmp_path / "share"
    original = Path.open

    def counting_open(self: Path, mode: str = "r", *args: Any, **kwargs: Any) -> Any:
        handle = original(self, mode, *args, **kwargs)
        return _CountedReads(handle, counts) if "r" in mode and self.is_relative_to(share) else handle

    monkeypatch.setattr(Path, "open", counting_open)
    return counts


def _write(path: Path, size: int, seed: int = 0) -> bytes:
    path.parent.mkdir(parents=True, exist_ok=True)
    data = random.Random(seed).randbytes(size)
    path.write_bytes(data)
    return data


def _set(tmp_path: Path) -> tuple[Path, Path, dict[str, bytes]]:
    share, backup = tmp_path / "share", tmp_path / "backup"
    files = {
        "run.d/analysis.tdf_bin": _write(share / "run.d/analysis.tdf_bin", 12 * MIB + 3, 1),
        "run.d/sub/ä method.xml": _write(share / "run.d/sub/ä method.xml", 2000, 2),
        "run.d/empty": _write(share / "run.d/empty", 0, 3),
    }
    return share, backup, files


def _staged(folder: Path) -> list[Path]:
    """Every file in the staging area below ``folder`` (the backup root)."""
    return sorted(path for path in (folder / STAGING_FOLDER).rglob("*") if not path.is_dir())


def test_one_read_of_the_share_stages_then_publishes_a_verified_copy(
    tmp_path: Path, share_reads: dict[str, int]
) -> None:
    share, backup, files = _set(tmp_path)
    (share / "run.d/analysis.tdf_bin").chmod(0o640)
    staged = stage_raw_file_set(share, list(files), backup, PART, TOKEN)

    assert share_reads["bytes"] == sum(len(data) for data in files.values())  # each byte once
    assert staged.file_info == {path: checksum_file(share / path, PART).as_list() for path in files}
    assert sorted(staged.staged) == sorted(files) and staged.hashed_only == []
    assert _staged(backup) == sorted(staging_path(backup / path, TOKEN, backup) for path in files)
    assert not (backup / "run.d/analysis.tdf_bin").exists()  # nothing published yet

    share_reads["bytes"] = 0
    result = publish_raw_file_set(share, staged.file_info, backup, TOKEN)
    assert share_reads["bytes"] == 0  # the copy step never reads the share
    assert sorted(result.copied) == sorted(files) and result.from_share == [] and result.skipped == []
    for path, data in files.items():
        assert (backup / path).read_bytes() == data
        assert (backup / path).stat().st_mtime_ns == (share / path).stat().st_mtime_ns
    assert (backup / "run.d/analysis.tdf_bin").stat().st_mode & 0o777 == 0o640
    assert _staged(backup) == []


def test_a_file_already_in_the_backup_is_hashed_once_and_not_staged(
    tmp_path: Path, share_reads: dict[str, int]
) -> None:
    share, backup, files = _set(tmp_path)
    _write(backup / "run.d/analysis.tdf_bin", 12 * MIB + 3, 1)  # an earlier run published it
    staged = stage_raw_file_set(share, list(files), backup, PART, TOKEN)
    assert staged.hashed_only == ["run.d/analysis.tdf_bin"]
    assert share_reads["bytes"] == sum(len(data) for data in files.values())
    result = publish_raw_file_set(share, staged.file_info, backup, TOKEN)
    assert result.skipped == ["run.d/analysis.tdf_bin"] and len(result.copied) == 2


def test_a_stale_staged_copy_is_never_used_even_with_the_right_content(tmp_path: Path) -> None:
    share, backup, files = _set(tmp_path)
    staged = stage_raw_file_set(share, list(files), backup, PART, TOKEN)
    # The recorded run's staged copy is gone; one of another run (same bytes) is there.
    recorded = staging_path(backup / "run.d/analysis.tdf_bin", TOKEN, backup)
    other = staging_path(backup / "run.d/analysis.tdf_bin", OTHER_TOKEN, backup)
    other.parent.mkdir(parents=True)
    recorded.rename(other)

    result = publish_raw_file_set(share, staged.file_info, backup, TOKEN)
    assert result.from_share == ["run.d/analysis.tdf_bin"]  # copied from the share, verified
    assert (backup / "run.d/analysis.tdf_bin").read_bytes() == files["run.d/analysis.tdf_bin"]
    assert _staged(backup) == []  # and the stale one was discarded


def test_a_rerun_of_the_checksum_discards_the_staged_copies_of_earlier_runs(tmp_path: Path) -> None:
    share, backup, files = _set(tmp_path)
    stage_raw_file_set(share, list(files), backup, PART, OTHER_TOKEN)
    stage_raw_file_set(share, list(files), backup, PART, TOKEN)
    assert _staged(backup) == sorted(staging_path(backup / path, TOKEN, backup) for path in files)


def test_a_corrupted_staged_copy_is_deleted_and_nothing_of_the_set_is_published(tmp_path: Path) -> None:
    share, backup, files = _set(tmp_path)
    staged = stage_raw_file_set(share, list(files), backup, PART, TOKEN)
    bad = staging_path(backup / "run.d/sub/ä method.xml", TOKEN, backup)
    bad.write_bytes(b"X" + bad.read_bytes()[1:])  # same size, other content

    with pytest.raises(CopyVerificationError, match=r"the staged copy .*ä method\.xml does not match what "):
        publish_raw_file_set(share, staged.file_info, backup, TOKEN)
    assert not bad.exists()
    assert [p for p in backup.rglob("*") if p.is_file() and STAGING_FOLDER not in p.parts] == []


def test_a_truncated_staged_copy_names_both_sizes(tmp_path: Path) -> None:
    share, backup, files = _set(tmp_path)
    staged = stage_raw_file_set(share, list(files), backup, PART, TOKEN)
    os.truncate(staging_path(backup / "run.d/analysis.tdf_bin", TOKEN, backup), 1000)
    with pytest.raises(CopyVerificationError, match=r"size 1000 bytes; recorded size 12582915 bytes"):
        publish_raw_file_set(share, staged.file_info, backup, TOKEN)


def test_a_conflict_keeps_the_staged_copy_for_when_it_is_resolved(tmp_path: Path) -> None:
    share, backup, files = _set(tmp_path)
    staged = stage_raw_file_set(share, list(files), backup, PART, TOKEN)
    squatter = backup / "run.d/empty"
    squatter.parent.mkdir(parents=True)
    squatter.write_bytes(b"another acquisition")
    with pytest.raises(BackupConflictError, match=r"a different file is already in the backup at .*not overwritten"):
        publish_raw_file_set(share, staged.file_info, backup, TOKEN)
    assert squatter.read_bytes() == b"another acquisition"
    squatter.rename(tmp_path / "moved-aside")
    result = publish_raw_file_set(share, staged.file_info, backup, TOKEN)
    assert result.from_share == [] and len(result.copied) == 3


def test_a_file_growing_while_read_leaves_no_staged_copy_of_the_set(tmp_path: Path) -> None:
    share, backup, _files = _set(tmp_path)
    grows = share / "run.d/sub/ä method.xml"  # read after analysis.tdf_bin was staged
    write = StagedCopy.write

    def append_while_reading(self: StagedCopy, chunk: memoryview) -> None:
        if self.final.name == grows.name and self.written == 0:
            with grows.open("ab") as handle:
                handle.write(b"more")
        write(self, chunk)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(StagedCopy, "write", append_while_reading)
        with pytest.raises(FileChangedError, match=r"ä method\.xml changed while it was being checksummed"):
            stage_raw_file_set(share, ["run.d/analysis.tdf_bin", "run.d/sub/ä method.xml"], backup, PART, TOKEN)
    assert _staged(backup) == []


def test_a_full_disk_while_writing_names_the_folder_and_deletes_the_staged_copy(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    share, backup, files = _set(tmp_path)
    real_write = os.write
    calls = {"n": 0}

    def write_until_full(descriptor: int, data: Any) -> int:
        if Path(f"/proc/self/fd/{descriptor}").readlink().is_relative_to(backup / STAGING_FOLDER):
            calls["n"] += 1
            if calls["n"] > 1:  # the disk fills up after the first chunk of a staged copy
                raise OSError(errno.ENOSPC, "No space left on device")
        return real_write(descriptor, data)

    monkeypatch.setattr(staging.os, "write", write_until_full)
    with pytest.raises(BackupDiskFullError, match=r"the local backup disk is full: .*analysis\.tdf_bin in .*run\.d"):
        stage_raw_file_set(share, list(files), backup, PART, TOKEN)
    assert _staged(backup) == []


def test_staged_copies_are_created_exclusively(tmp_path: Path) -> None:
    final = tmp_path / "x.raw"
    staging_path(final, TOKEN, tmp_path).parent.mkdir(parents=True)
    staging_path(final, TOKEN, tmp_path).write_bytes(b"someone else's")
    with pytest.raises(FileExistsError), StagedCopy(final, TOKEN, 0, tmp_path):
        pass
    assert staging_path(final, TOKEN, tmp_path).read_bytes() == b"someone else's"


def test_a_staged_copy_left_unfinished_is_removed(tmp_path: Path) -> None:
    final = tmp_path / "x.raw"
    with StagedCopy(final, TOKEN, 3, tmp_path) as staged:
        staged.write(memoryview(b"abc"))
    assert staged_copies(final, tmp_path) == []


def test_discard_leaves_a_staged_copy_another_run_is_using(tmp_path: Path) -> None:
    final = tmp_path / "x.raw"
    in_use, stale = staging_path(final, TOKEN, tmp_path), staging_path(final, OTHER_TOKEN, tmp_path)
    in_use.parent.mkdir(parents=True)
    stale.parent.mkdir(parents=True)
    in_use.write_bytes(b"being written")
    stale.write_bytes(b"left by a crash")
    descriptor = os.open(in_use, os.O_RDONLY)
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX)
        assert discard_staging(final, tmp_path) == [stale]
    finally:
        os.close(descriptor)
    assert in_use.exists()
    assert discard_staging(final, tmp_path, keep=TOKEN) == []
    assert discard_staging(final, tmp_path) == [in_use]


def test_staged_copies_live_in_a_private_per_run_folder_outside_the_published_tree(tmp_path: Path) -> None:
    for name in ["a.raw", "a.raw.0123456789abcdef", "ü" * 120 + ".raw", "x" * 250]:
        final = tmp_path / "inst/2026_11" / name
        path = staging_path(final, TOKEN, tmp_path)
        assert path == tmp_path / STAGING_FOLDER / TOKEN / "inst/2026_11" / name
        with StagedCopy(final, TOKEN, 0, tmp_path) as staged:
            staged.finish(tmp_path.stat())
        assert staged_copies(final, tmp_path) == [path]
    for folder in (tmp_path / STAGING_FOLDER, tmp_path / STAGING_FOLDER / TOKEN / "inst"):
        assert folder.stat().st_mode & 0o777 == 0o700
    with pytest.raises(ValueError, match="not a staging token"):
        staging_path(tmp_path / "a.raw", "../../etc", tmp_path)
    with pytest.raises(ValueError, match="not a published path"):
        staging_path(tmp_path / STAGING_FOLDER / "x", TOKEN, tmp_path)


def test_a_share_file_named_like_a_staged_copy_is_published_and_never_discarded(tmp_path: Path) -> None:
    """Review finding 1: a member named ``.analysis.tdf.<16 hex>.rawvault-staging`` was deleted after publishing."""
    share, backup = tmp_path / "share", tmp_path / "backup"
    twin = "run.d/.analysis.tdf.0123456789abcdef.rawvault-staging"
    partial = "run.d/.analysis.tdf.a1b2c3d4.rawvault-partial"
    files = {
        "run.d/analysis.tdf": _write(share / "run.d/analysis.tdf", 3000, 1),
        twin: _write(share / twin, 2000, 2),
        partial: _write(share / partial, 10, 3),
    }
    staged = stage_raw_file_set(share, list(files), backup, PART, TOKEN)
    publish_raw_file_set(share, staged.file_info, backup, TOKEN)
    # A second run (a cleared task) stages, discards and publishes again: nothing published may go.
    staged = stage_raw_file_set(share, list(files), backup, PART, OTHER_TOKEN)
    assert sorted(staged.hashed_only) == sorted(files)
    result = publish_raw_file_set(share, staged.file_info, backup, OTHER_TOKEN)
    assert sorted(result.skipped) == sorted(files)
    for path, data in files.items():
        assert (backup / path).read_bytes() == data
    assert discard_staging(backup / "run.d/analysis.tdf", backup) == []
    assert (backup / twin).read_bytes() == files[twin]
    assert _staged(backup) == []


def test_published_copies_never_get_the_shares_permission_bits(tmp_path: Path) -> None:
    """Review finding 2: a world-writable or setuid file on the share gave the backup copy the same bits."""
    share, backup, files = _set(tmp_path)
    for path in files:
        (share / path).chmod(0o6777)
    staged = stage_raw_file_set(share, list(files), backup, PART, TOKEN)
    # One file without a staged copy: copy_raw_file copies it from the share again (the other path).
    staging_path(backup / "run.d/empty", TOKEN, backup).unlink()
    result = publish_raw_file_set(share, staged.file_info, backup, TOKEN)
    assert result.from_share == ["run.d/empty"]
    for path in files:
        assert stat.S_IMODE((backup / path).stat().st_mode) == PUBLISHED_MODE == 0o640
        assert (backup / path).stat().st_mtime_ns == (share / path).stat().st_mtime_ns


def test_a_fifo_or_symlink_in_the_staging_area_is_never_opened_or_followed(tmp_path: Path) -> None:
    """Review finding 3: a FIFO named like a staged copy blocked the discard; a symlink was followed."""
    share, backup, files = _set(tmp_path)
    fifo = staging_path(backup / "run.d/analysis.tdf_bin", OTHER_TOKEN, backup)
    fifo.parent.mkdir(parents=True)
    os.mkfifo(fifo)
    outside = tmp_path / "outside"
    outside.write_bytes(files["run.d/sub/ä method.xml"])
    link = staging_path(backup / "run.d/sub/ä method.xml", OTHER_TOKEN, backup)
    link.parent.mkdir(parents=True)
    link.symlink_to(outside)

    staged = stage_raw_file_set(share, list(files), backup, PART, TOKEN)  # returned: the FIFO did not block it
    assert fifo.exists() and link.is_symlink() and outside.exists()
    # A symlink where the recorded run's staged copy should be is refused, never published through.
    recorded = staging_path(backup / "run.d/sub/ä method.xml", TOKEN, backup)
    recorded.unlink()
    recorded.symlink_to(outside)
    with pytest.raises(UnsafeStagingError, match="is a symbolic link, not a staged copy"):
        publish_raw_file_set(share, staged.file_info, backup, TOKEN)
    assert not (backup / "run.d/sub/ä method.xml").exists()


def test_place_no_overwrite_links_a_symlink_itself(tmp_path: Path) -> None:
    (tmp_path / "target").write_bytes(b"x")
    (tmp_path / "link").symlink_to(tmp_path / "target")
    assert place_no_overwrite(tmp_path / "link", tmp_path / "published")
    assert (tmp_path / "published").is_symlink()


def test_the_staging_area_is_never_a_symlink(tmp_path: Path) -> None:
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / STAGING_FOLDER).symlink_to(tmp_path / "elsewhere")
    with (
        pytest.raises(UnsafeStagingError, match=r"\.rawvault-staging is a symbolic link"),
        StagedCopy(tmp_path / "a.raw", TOKEN, 0, tmp_path),
    ):
        pass
    assert list((tmp_path / "elsewhere").iterdir()) == []


def test_staged_bytes_are_the_bytes_read(tmp_path: Path) -> None:
    share, backup, files = _set(tmp_path)
    stage_raw_file_set(share, list(files), backup, PART, TOKEN)
    for path, data in files.items():
        staged = staging_path(backup / path, TOKEN, backup).read_bytes()
        assert hashlib.md5(staged).digest() == hashlib.md5(data).digest()
