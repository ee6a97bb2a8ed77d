"""compute_checksum stages the local copy while it reads the share once; copy_raw_file verifies and publishes it.

Real DAG runs (``dag.test()``) of ``acquisition_handler`` against the MongoDB wire server, with the
instrument folder on a loop-mounted ext4 of its own (its block-device counters show every byte read from
"the share", and that nothing is written to it) and, where a full disk is the point, a small tmpfs as the
backup root. Needs root for the mounts (skipped otherwise); every mount is undone in teardown.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import pytest

from devtools.block_devices import LoopFileSystem, can_mount, loop_filesystem, tmpfs
from rawvault import local_backup, pipeline
from rawvault.staging import STAGING_FOLDER, StagedCopy, staging_path
from rawvault.watcher import register_new_raw_files
from shared.db.interface import get_raw_file
from shared.settings import get_settings
from tests.airflow_harness import init_airflow_db, load_dags, run_dag
from tests.data_factory import KIB, MIB, make_bruker, make_thermo
from tests.pipeline_env import PipelineEnv, activate, write_pipeline_env

pytestmark = [
    pytest.mark.slow,
    pytest.mark.timeout(600),
    pytest.mark.skipif(not can_mount(), reason="needs root to mount a loop device and a tmpfs"),
]

# Directory, inode and extent blocks, the rest of a file's last block: what a run may read besides the data
# (a second read of the data would be MiBs).
METADATA_SLACK = 256 * KIB
ONLY_COPY = "monitor_acquisition|compute_checksum"  # re-run copy_raw_file alone, as clearing it in the UI does


@pytest.fixture
def env(tmp_path: Path, mongo_uri: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[PipelineEnv]:
    init_airflow_db()
    # No file mover: these tests look at the share and the backup right after the copy.
    environment = write_pipeline_env(tmp_path, file_mover={"delay_minutes": -1})
    activate(environment, monkeypatch)
    yield environment
    get_settings.cache_clear()


@pytest.fixture
def thermo_share(env: PipelineEnv, tmp_path: Path) -> Iterator[LoopFileSystem]:
    """thermo1's instrument folder on an ext4 of its own."""
    with loop_filesystem(env.instrument_path("thermo1"), 64 * MIB, tmp_path) as share:
        yield share


def _handler(env: PipelineEnv, raw_file_id: str, mark_success: str | None = None) -> dict[str, Any]:
    instrument_id = get_raw_file(raw_file_id).instrument_id
    dag = load_dags()[f"acquisition_handler.{instrument_id}"]
    return run_dag(dag, {"raw_file_id": raw_file_id}, mark_success=mark_success)


def _evict_before_copy(monkeypatch: pytest.MonkeyPatch, shares: Iterable[LoopFileSystem]) -> None:
    """Drop the share's pages from the cache between the steps: a worker with less RAM than a 50 GB
    acquisition has none of it cached by the time copy_raw_file runs, so any read of the share reaches it."""
    copy = pipeline.copy_to_local_backup

    def copy_with_a_cold_cache(raw_file_id: str, settings: Any) -> Path:
        for share in shares:
            share.settle()
        return copy(raw_file_id, settings)

    monkeypatch.setattr(pipeline, "copy_to_local_backup", copy_with_a_cold_cache)


def _md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes(), usedforsecurity=False).hexdigest()


def _files(folder: Path) -> list[Path]:
    return sorted(path for path in folder.rglob("*") if path.is_file())


def _share_state(folder: Path) -> dict[str, tuple[int, int, str]]:
    return {p.relative_to(folder).as_posix(): (p.stat().st_size, p.stat().st_mtime_ns, _md5(p)) for p in _files(folder)}


def _staged(backup_root: Path) -> list[Path]:
    """Every file in the staging area of the backup root (``<root>/.rawvault-staging/<token>/...``)."""
    area = backup_root / STAGING_FOLDER
    return _files(area) if area.exists() else []


def test_each_byte_is_read_once_from_the_share_and_nothing_is_written_to_it(
    env: PipelineEnv, thermo_share: LoopFileSystem, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with loop_filesystem(env.instrument_path("tims1"), 64 * MIB, tmp_path) as bruker_share:
        thermo = make_thermo(thermo_share.mount_point, name="oneread_thermo.raw", size=12 * MIB + 5)
        make_bruker(bruker_share.mount_point, name="oneread_tims.d")
        raw_file_ids = register_new_raw_files("thermo1", env.settings) + register_new_raw_files("tims1", env.settings)
        shares = {"thermo1": thermo_share, "tims1": bruker_share}
        _evict_before_copy(monkeypatch, shares.values())
        originals = {iid: _share_state(share.mount_point) for iid, share in shares.items()}
        for share in shares.values():
            share.settle()  # nothing cached: every read of the steps reaches the device
        before = {iid: share.counters() for iid, share in shares.items()}

        for raw_file_id in raw_file_ids:
            states = _handler(env, raw_file_id)
            assert states["compute_checksum"] == states["copy_raw_file"] == "success", states

        for instrument_id, share in shares.items():
            moved = share.counters() - before[instrument_id]
            data = sum(size for size, _mtime, _md5 in originals[instrument_id].values())
            assert data <= moved.read_bytes <= data + METADATA_SLACK, (instrument_id, moved, data)
            assert moved.written_bytes == 0
            assert _share_state(share.mount_point) == originals[instrument_id]
    for raw_file_id in raw_file_ids:
        raw_file = get_raw_file(raw_file_id)
        assert raw_file.backup_status == "copying_done"
        backup = env.backup_root / raw_file.backup_base_path
        for relative_path, (size, md5, _etag) in raw_file.file_info.items():
            assert (backup / relative_path).stat().st_size == size
            assert _md5(backup / relative_path) == md5
    assert _staged(env.backup_root) == []
    thermo_copy = env.backup_root / get_raw_file(thermo.name).backup_base_path / thermo.name
    assert thermo_copy.stat().st_mtime_ns == originals["thermo1"][thermo.name][1]  # the source's time


def test_backup_disk_too_small_fails_before_reading_the_share(env: PipelineEnv, thermo_share: LoopFileSystem) -> None:
    make_thermo(thermo_share.mount_point, name="nospace.raw", size=12 * MIB)
    (raw_file_id,) = register_new_raw_files("thermo1", env.settings)
    original = _share_state(thermo_share.mount_point)
    with tmpfs(env.backup_root, 4 * MIB):
        thermo_share.settle()
        before = thermo_share.counters()
        states = _handler(env, raw_file_id)
        moved = thermo_share.counters() - before
        published = _files(env.backup_root)

    assert states["compute_checksum"] == "failed" and states["copy_raw_file"] == "upstream_failed", states
    raw_file = get_raw_file(raw_file_id)
    assert raw_file.status == "error"
    assert "the local backup has no room for staging 1 file: " in raw_file.status_details
    assert str(env.backup_root / raw_file.backup_base_path) in raw_file.status_details
    needed = r"has 4\.0 MiB \(\d+ bytes\) free but 12\.0 MiB \(12582912 bytes\) are needed"
    assert re.search(needed, raw_file.status_details)
    assert "Nothing was read from the instrument share" in raw_file.status_details
    assert raw_file.file_info == {}
    assert published == []
    assert moved.read_bytes < 12 * MIB // 4 and moved.written_bytes == 0  # metadata only
    assert _share_state(thermo_share.mount_point) == original


def test_backup_disk_filling_up_while_staging_fails_clearly_and_leaves_nothing(
    env: PipelineEnv, thermo_share: LoopFileSystem, monkeypatch: pytest.MonkeyPatch
) -> None:
    make_thermo(thermo_share.mount_point, name="fills.raw", size=12 * MIB)
    (raw_file_id,) = register_new_raw_files("thermo1", env.settings)
    original = _share_state(thermo_share.mount_point)
    # Another writer takes the space after the free-space check: the disk fills up during the copy.
    monkeypatch.setattr(local_backup, "check_free_space", lambda *args: None)
    with tmpfs(env.backup_root, 8 * MIB):
        states = _handler(env, raw_file_id)
        left = _files(env.backup_root)

    assert states["compute_checksum"] == "failed", states
    details = get_raw_file(raw_file_id).status_details
    assert "the local backup disk is full: writing the staged copy of fills.raw in" in details
    assert str(env.backup_root / get_raw_file(raw_file_id).backup_base_path) in details
    assert "MiB (" in details and "free)" in details
    assert "nothing was published and the instrument share is untouched" in details
    assert left == []  # the partial staged copy was deleted
    assert get_raw_file(raw_file_id).file_info == {}
    assert _share_state(thermo_share.mount_point) == original


def test_file_growing_while_read_fails_and_stages_nothing(env: PipelineEnv, monkeypatch: pytest.MonkeyPatch) -> None:
    path = make_thermo(env.instrument_path("thermo1"), name="growing.raw", size=12 * MIB)
    (raw_file_id,) = register_new_raw_files("thermo1", env.settings)
    write = StagedCopy.write

    def write_while_the_instrument_appends(self: StagedCopy, chunk: memoryview) -> None:
        if self.written == 0:
            with path.open("ab") as share_file:  # the acquisition is still running
                share_file.write(b"\0" * MIB)
        write(self, chunk)

    monkeypatch.setattr(StagedCopy, "write", write_while_the_instrument_appends)
    states = _handler(env, raw_file_id)

    assert states["compute_checksum"] == "failed", states
    raw_file = get_raw_file(raw_file_id)
    assert "growing.raw changed while it was being checksummed" in raw_file.status_details
    assert raw_file.file_info == {} and raw_file.staging_token is None
    assert _files(env.backup_root) == []


def test_staged_copy_corrupted_before_publishing_is_deleted_and_nothing_is_published(
    env: PipelineEnv, thermo_share: LoopFileSystem, monkeypatch: pytest.MonkeyPatch
) -> None:
    make_thermo(thermo_share.mount_point, name="rot.raw", size=6 * MIB)
    (raw_file_id,) = register_new_raw_files("thermo1", env.settings)
    publish = pipeline.publish_raw_file_set

    def corrupt_then_publish(
        source_root: Path, file_info: dict, target_root: Path, token: str | None, *, backup_root: Path
    ) -> Any:
        with staging_path(target_root / "rot.raw", str(token), backup_root).open("r+b") as staged:  # one bit flips
            staged.seek(3 * MIB)
            byte = staged.read(1)
            staged.seek(3 * MIB)
            staged.write(bytes([byte[0] ^ 1]))
        return publish(source_root, file_info, target_root, token, backup_root=backup_root)

    monkeypatch.setattr(pipeline, "publish_raw_file_set", corrupt_then_publish)
    states = _handler(env, raw_file_id)

    assert states["compute_checksum"] == "success" and states["copy_raw_file"] == "failed", states
    raw_file = get_raw_file(raw_file_id)
    backup = env.backup_root / raw_file.backup_base_path
    assert raw_file.backup_status == "copying_failed"
    assert "the staged copy" in raw_file.backup_status_details
    assert "does not match what compute_checksum read from the instrument share" in raw_file.backup_status_details
    assert "it was deleted and nothing of this raw file was published" in raw_file.backup_status_details
    assert _files(backup) == []

    # Clearing copy_raw_file copies the file from the share again, verified against the recorded MD5.
    monkeypatch.setattr(pipeline, "publish_raw_file_set", publish)
    states = _handler(env, raw_file_id, mark_success=ONLY_COPY)
    assert states["copy_raw_file"] == "success", states
    assert _md5(backup / "rot.raw") == raw_file.file_info["rot.raw"][1]
    assert get_raw_file(raw_file_id).backup_status == "copying_done"


def test_rerun_after_a_crash_between_the_steps_publishes_the_recorded_run_and_never_a_stale_one(
    env: PipelineEnv, thermo_share: LoopFileSystem, monkeypatch: pytest.MonkeyPatch
) -> None:
    make_thermo(thermo_share.mount_point, name="crash.raw", size=6 * MIB)
    (raw_file_id,) = register_new_raw_files("thermo1", env.settings)
    backup = env.backup_root / get_raw_file(raw_file_id).backup_base_path
    # A compute_checksum killed while staging left a partial staged copy behind.
    crashed_checksum = staging_path(backup / "crash.raw", "0123456789abcdef", env.backup_root)
    crashed_checksum.parent.mkdir(parents=True)
    crashed_checksum.write_bytes(b"partial")

    publish = pipeline.publish_raw_file_set

    def worker_lost(*args: object) -> None:
        raise RuntimeError("the worker died before copy_raw_file did anything")

    monkeypatch.setattr(pipeline, "publish_raw_file_set", worker_lost)
    states = _handler(env, raw_file_id)
    assert states["compute_checksum"] == "success" and states["copy_raw_file"] == "failed", states
    token = get_raw_file(raw_file_id).staging_token
    assert _staged(env.backup_root) == [staging_path(backup / "crash.raw", token, env.backup_root)]  # stale one gone
    # A stale staged copy with the right content still is never trusted (another run's, e.g. a zombie's).
    stale = staging_path(backup / "crash.raw", "fedcba9876543210", env.backup_root)
    stale.parent.mkdir(parents=True)
    stale.write_bytes(staging_path(backup / "crash.raw", token, env.backup_root).read_bytes())

    monkeypatch.setattr(pipeline, "publish_raw_file_set", publish)
    _evict_before_copy(monkeypatch, [thermo_share])
    before = thermo_share.counters()
    states = _handler(env, raw_file_id, mark_success=ONLY_COPY)
    assert states["copy_raw_file"] == "success", states
    assert (thermo_share.counters() - before).read_bytes < MIB  # published from the staged copy, not the share
    assert _md5(backup / "crash.raw") == get_raw_file(raw_file_id).file_info["crash.raw"][1]
    assert _staged(env.backup_root) == []
    assert (backup / "crash.raw").stat().st_nlink == 1  # the staged name is gone, only the final one is left


def test_share_files_named_like_staged_copies_are_backed_up_and_stay_in_the_backup(env: PipelineEnv) -> None:
    """Review finding 1: ``.analysis.tdf.<token>.rawvault-staging`` in a ``.d`` was unlinked after publishing."""
    bruker = make_bruker(env.instrument_path("tims1"), name="twin_names.d")
    twins = {
        "analysis.tdf": b"the real analysis.tdf",
        ".analysis.tdf.0123456789abcdef.rawvault-staging": b"a member that looks staged",
        ".analysis.tdf.0a1b2c3d.rawvault-partial": b"a member that looks partial",
    }
    for name, data in twins.items():
        (bruker / name).write_bytes(data)
    (raw_file_id,) = register_new_raw_files("tims1", env.settings)
    assert _handler(env, raw_file_id)["copy_raw_file"] == "success"
    # Clearing compute_checksum runs both steps again (the second run used to discard the published twin too).
    assert _handler(env, raw_file_id)["copy_raw_file"] == "success"

    raw_file = get_raw_file(raw_file_id)
    backup = env.backup_root / raw_file.backup_base_path
    assert raw_file.backup_status == "copying_done"
    for name, data in twins.items():
        assert f"twin_names.d/{name}" in raw_file.file_info
        assert (backup / "twin_names.d" / name).read_bytes() == data
    for relative_path, (size, md5, _etag) in raw_file.file_info.items():
        assert _md5(backup / relative_path) == md5 and (backup / relative_path).stat().st_size == size
    assert _staged(env.backup_root) == []
