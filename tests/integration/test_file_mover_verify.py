"""The file mover moves a set only while every file is still the one checksummed (issue 13, item 5).

Default (``file_mover.verify: size_mtime``): every file keeps its size and the
modification time recorded at checksum time. ``rehash``: every file's MD5 is
computed again, so a touch alone passes and a content change is refused.
Through the real pipeline steps and the MongoDB wire server; the refusal is
checked on the Backups page's rows.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from rawvault import pipeline
from rawvault.file_mover import MoveRefusedError
from rawvault.ui.queries import RawFileFilter, list_raw_files
from rawvault.watcher import register_new_raw_files
from shared.db.interface import get_raw_file
from shared.settings import get_settings
from tests.data_factory import make_bruker, make_thermo, write_bytes
from tests.pipeline_env import PipelineEnv, activate, write_pipeline_env


def _env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, **file_mover: Any) -> PipelineEnv:
    env = write_pipeline_env(tmp_path, file_mover=file_mover)
    activate(env, monkeypatch)
    return env


@pytest.fixture
def env(tmp_path: Path, mongo_uri: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[PipelineEnv]:
    yield _env(tmp_path, monkeypatch)
    get_settings.cache_clear()


@pytest.fixture
def rehash_env(tmp_path: Path, mongo_uri: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[PipelineEnv]:
    yield _env(tmp_path, monkeypatch, verify="rehash")
    get_settings.cache_clear()


def _backed_up_bruker(env: PipelineEnv, name: str) -> tuple[str, Path]:
    folder = make_bruker(env.instrument_path("tims1"), name=name)
    (raw_file_id,) = register_new_raw_files("tims1", env.settings)
    pipeline.checksum_raw_file(raw_file_id, env.settings)
    pipeline.copy_to_local_backup(raw_file_id, env.settings)
    time.sleep(0.05)  # so that a rewrite gets a later modification time than the checksum saw
    return raw_file_id, folder


def _rewrite_in_place(path: Path, seed: int) -> None:
    """New content at the same size, through the same inode (as an instrument rewriting a side file)."""
    size = path.stat().st_size
    with path.open("r+b") as handle:
        handle.write(os.urandom(16) + bytes(seed % 256 for _ in range(min(size, 64) - 16)))


def _page_row(raw_file_id: str) -> dict[str, Any]:
    (row,) = [row for row in list_raw_files(RawFileFilter(search=raw_file_id)).items if row["id"] == raw_file_id]
    return row


def test_checksum_records_every_files_modification_time(env: PipelineEnv) -> None:
    raw_file_id, _folder = _backed_up_bruker(env, "mtimes.d")
    raw_file = get_raw_file(raw_file_id)
    assert sorted(raw_file.source_mtimes) == sorted(raw_file.file_info)
    for relative_path, mtime_ns in raw_file.source_mtimes.items():
        assert (env.instrument_path("tims1") / relative_path).stat().st_mtime_ns == mtime_ns
    assert all(len(entry) == 3 for entry in raw_file.file_info.values())  # the contract stays [size, md5, etag]


def test_side_file_rewritten_at_the_same_size_is_refused_and_shown_on_the_backups_page(env: PipelineEnv) -> None:
    raw_file_id, folder = _backed_up_bruker(env, "sidefile.d")
    side_file = folder / "analysis.tdf"
    size = side_file.stat().st_size
    _rewrite_in_place(side_file, seed=5)
    assert side_file.stat().st_size == size

    with pytest.raises(MoveRefusedError, match=r"sidefile\.d/analysis\.tdf was modified after it was checksummed"):
        pipeline.move_on_share(raw_file_id, env.settings)

    assert side_file.exists()  # nothing moved
    assert not (env.instrument_path("tims1") / "Backup").exists()
    raw_file = get_raw_file(raw_file_id)
    assert raw_file.status == "error"
    assert raw_file.status_details.startswith("file mover: ")
    row = _page_row(raw_file_id)
    assert row["status"] == "error" and row["pipeline_error"] and row["failed"]
    assert "sidefile.d/analysis.tdf was modified after it was checksummed" in row["status_details"]


def test_an_extra_file_or_a_symlink_in_the_set_is_refused_naming_it(env: PipelineEnv) -> None:
    raw_file_id, folder = _backed_up_bruker(env, "extra.d")
    (folder / "late.txt").write_bytes(b"written after the checksum")
    with pytest.raises(MoveRefusedError, match=r"extra\.d/late\.txt is not a recorded file of the set"):
        pipeline.move_on_share(raw_file_id, env.settings)
    (folder / "late.txt").unlink()
    (folder / "link").symlink_to("/etc/hostname")
    with pytest.raises(MoveRefusedError, match=r"extra\.d/link is a symbolic link \(to /etc/hostname\)"):
        pipeline.move_on_share(raw_file_id, env.settings)
    assert folder.is_dir()


def test_a_raw_file_checksummed_before_mtimes_were_recorded_falls_back_to_sizes_and_the_main_file(
    env: PipelineEnv,
) -> None:
    raw_file_id, folder = _backed_up_bruker(env, "old.d")
    pipeline.update_raw_file(raw_file_id, source_mtimes={})  # as written by an earlier rawvault
    _rewrite_in_place(folder / "analysis.tdf_bin", seed=3)
    with pytest.raises(MoveRefusedError, match=r"is not the file that was registered and backed up"):
        pipeline.move_on_share(raw_file_id, env.settings)
    assert folder.is_dir()


def test_rehash_lets_a_touched_file_pass(rehash_env: PipelineEnv) -> None:
    raw_file_id, folder = _backed_up_bruker(rehash_env, "touched.d")
    later = time.time() + 60
    for path in (folder / "analysis.tdf", folder / "analysis.tdf_bin"):
        os.utime(path, (later, later))  # a backup tool or an antivirus touched them: same content
    pipeline.move_on_share(raw_file_id, rehash_env.settings)
    assert get_raw_file(raw_file_id).status == "moved"
    assert not folder.exists()


def test_rehash_refuses_a_content_change_at_the_same_size(rehash_env: PipelineEnv) -> None:
    raw_file_id, folder = _backed_up_bruker(rehash_env, "rewritten.d")
    side_file = folder / "analysis.tdf"
    stat = side_file.stat()
    _rewrite_in_place(side_file, seed=9)
    os.utime(side_file, ns=(stat.st_atime_ns, stat.st_mtime_ns))  # even with its old modification time
    with pytest.raises(MoveRefusedError, match=r"rewritten\.d/analysis\.tdf has MD5 [0-9a-f]{32}, but [0-9a-f]{32} "):
        pipeline.move_on_share(raw_file_id, rehash_env.settings)
    assert side_file.exists()
    assert "file mover: " in _page_row(raw_file_id)["status_details"]


def test_a_thermo_file_touched_after_checksumming_is_refused_by_default(env: PipelineEnv) -> None:
    path = make_thermo(env.instrument_path("thermo1"), name="touch.raw", size=64 * 1024)
    (raw_file_id,) = register_new_raw_files("thermo1", env.settings)
    pipeline.checksum_raw_file(raw_file_id, env.settings)
    pipeline.copy_to_local_backup(raw_file_id, env.settings)
    later = time.time() + 60
    os.utime(path, (later, later))
    with pytest.raises(MoveRefusedError):
        pipeline.move_on_share(raw_file_id, env.settings)
    assert path.exists()
    write_bytes(path, 64 * 1024, seed=1)  # unchanged content, but the record cannot tell: still refused
    with pytest.raises(MoveRefusedError):
        pipeline.move_on_share(raw_file_id, env.settings)
