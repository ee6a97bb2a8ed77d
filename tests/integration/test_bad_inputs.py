"""Bad input on the instrument share or in the backup: clear failures, nothing overwritten or lost."""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from rawvault import pipeline
from rawvault.checksum import FileChangedError
from rawvault.local_backup import BackupConflictError
from rawvault.watcher import InstrumentFolderError, register_new_raw_files
from shared.db.interface import get_raw_file
from shared.db.models import RawFile
from shared.instrument_types import RawFileSetError
from tests.data_factory import MIB, make_bruker, make_thermo, write_bytes
from tests.pipeline_env import PipelineEnv, active, write_pipeline_env


@pytest.fixture
def env(tmp_path: Path, mongo_uri: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[PipelineEnv]:
    with active(write_pipeline_env(tmp_path), monkeypatch) as environment:
        yield environment


def _register_one(env: PipelineEnv, instrument_id: str) -> str:
    (raw_file_id,) = register_new_raw_files(instrument_id, env.settings)
    return raw_file_id


def _md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes(), usedforsecurity=False).hexdigest()


def test_file_growing_during_checksum_fails_and_records_nothing(env: PipelineEnv) -> None:
    path = make_thermo(env.instrument_path("thermo1"), size=20 * MIB)
    raw_file_id = _register_one(env, "thermo1")
    stop = threading.Event()

    def keep_writing() -> None:
        with path.open("ab") as handle:
            while not stop.is_set():
                handle.write(b"\0" * 65536)
                handle.flush()
                time.sleep(0.001)

    writer = threading.Thread(target=keep_writing)
    writer.start()
    try:
        with pytest.raises(FileChangedError, match=r"changed while it was being checksummed"):
            pipeline.checksum_raw_file(raw_file_id, env.settings)
    finally:
        stop.set()
        writer.join()
    raw_file = get_raw_file(raw_file_id)
    assert raw_file.file_info == {}
    assert raw_file.status == "error"
    assert "changed while it was being checksummed" in raw_file.status_details


def test_changed_file_after_checksum_is_not_overwritten_in_file_info(env: PipelineEnv) -> None:
    path = make_thermo(env.instrument_path("thermo1"), size=1 * MIB)
    raw_file_id = _register_one(env, "thermo1")
    first = pipeline.checksum_raw_file(raw_file_id, env.settings)
    assert pipeline.checksum_raw_file(raw_file_id, env.settings) == first  # a retry is a no-op
    write_bytes(path, 2 * MIB, seed=99)
    with pytest.raises(
        pipeline.FileInfoMismatchError, match=r"differ from the ones checksummed before .*1048576 bytes"
    ):
        pipeline.checksum_raw_file(raw_file_id, env.settings)
    assert get_raw_file(raw_file_id).file_info == first


def test_different_file_at_copy_target_is_never_overwritten(env: PipelineEnv) -> None:
    source = make_thermo(env.instrument_path("thermo1"), size=1 * MIB)
    raw_file_id = _register_one(env, "thermo1")
    pipeline.checksum_raw_file(raw_file_id, env.settings)
    raw_file = get_raw_file(raw_file_id)
    squatter = env.backup_root / raw_file.backup_base_path / source.name
    squatter.parent.mkdir(parents=True, exist_ok=True)  # compute_checksum staged its copy there already
    squatter.write_bytes(b"an older acquisition with the same name")

    with pytest.raises(BackupConflictError, match=r"a different file is already in the backup at .* not overwritten"):
        pipeline.copy_to_local_backup(raw_file_id, env.settings)

    assert squatter.read_bytes() == b"an older acquisition with the same name"
    assert source.exists()
    raw_file = get_raw_file(raw_file_id)
    assert raw_file.backup_status == "copying_failed"
    assert "not overwritten" in raw_file.backup_status_details
    assert not list(squatter.parent.glob(".*partial"))


def test_identical_file_at_copy_target_is_skipped_and_retry_is_idempotent(env: PipelineEnv) -> None:
    bruker = make_bruker(env.instrument_path("tims1"))
    raw_file_id = _register_one(env, "tims1")
    pipeline.checksum_raw_file(raw_file_id, env.settings)
    target = pipeline.copy_to_local_backup(raw_file_id, env.settings)
    first_mtimes = {p: p.stat().st_mtime_ns for p in target.rglob("*") if p.is_file()}
    assert pipeline.copy_to_local_backup(raw_file_id, env.settings) == target
    assert {p: p.stat().st_mtime_ns for p in target.rglob("*") if p.is_file()} == first_mtimes
    for original in bruker.rglob("*"):
        if original.is_file():
            copy = target / original.relative_to(env.instrument_path("tims1"))
            assert _md5(copy) == _md5(original)
    assert get_raw_file(raw_file_id).backup_status == "copying_done"


def test_empty_bruker_folder_fails_clearly(env: PipelineEnv) -> None:
    (env.instrument_path("tims1") / "empty_run.d").mkdir()
    raw_file_id = _register_one(env, "tims1")
    with pytest.raises(RawFileSetError, match=r"empty_run\.d contains no files: nothing to back up"):
        pipeline.checksum_raw_file(raw_file_id, env.settings)
    assert get_raw_file(raw_file_id).status == "error"


def test_zero_byte_file_is_checksummed_and_copied(env: PipelineEnv) -> None:
    (env.instrument_path("thermo1") / "blank.raw").write_bytes(b"")
    raw_file_id = _register_one(env, "thermo1")
    file_info = pipeline.checksum_raw_file(raw_file_id, env.settings)
    empty_md5 = hashlib.md5(b"", usedforsecurity=False).hexdigest()
    assert file_info == {"blank.raw": [0, empty_md5, empty_md5]}
    target = pipeline.copy_to_local_backup(raw_file_id, env.settings)
    assert (target / "blank.raw").read_bytes() == b""


def test_names_with_spaces_and_non_ascii(env: PipelineEnv) -> None:
    name = "Probe 1 – Größe ünd µ.raw"
    path = make_thermo(env.instrument_path("thermo1"), name=name, size=64 * 1024)
    raw_file_id = _register_one(env, "thermo1")
    assert raw_file_id == name
    pipeline.checksum_raw_file(raw_file_id, env.settings)
    target = pipeline.copy_to_local_backup(raw_file_id, env.settings)
    assert _md5(target / name) == _md5(path)
    assert list(get_raw_file(raw_file_id).file_info) == [name]


def test_missing_instrument_folder_fails_clearly(env: PipelineEnv) -> None:
    env.instrument_path("thermo1").rmdir()
    with pytest.raises(
        InstrumentFolderError,
        match=r"folder of instrument 'thermo1', .* does not exist: is the instrument share mounted",
    ):
        register_new_raw_files("thermo1", env.settings)
    assert RawFile.objects.count() == 0


def test_unreadable_instrument_folder_fails_clearly(env: PipelineEnv, monkeypatch: pytest.MonkeyPatch) -> None:
    # Tests run as root, which reads any folder: simulate the share refusing access.
    def denied(self: Path) -> None:
        raise PermissionError(13, "Permission denied", str(self))

    monkeypatch.setattr(Path, "iterdir", denied)
    with pytest.raises(InstrumentFolderError, match=r"cannot be read \(permission denied\)"):
        register_new_raw_files("thermo1", env.settings)


def test_same_name_again_after_move_is_a_new_raw_file_in_its_own_backup_folder(env: PipelineEnv) -> None:
    folder = env.instrument_path("thermo1")
    make_thermo(folder, name="qc.raw", size=64 * 1024, seed=1)
    first = _register_one(env, "thermo1")
    assert register_new_raw_files("thermo1", env.settings) == []  # already known
    pipeline.checksum_raw_file(first, env.settings)
    pipeline.copy_to_local_backup(first, env.settings)
    pipeline.move_on_share(first, env.settings)

    make_thermo(folder, name="qc.raw", size=64 * 1024, seed=2)
    second = _register_one(env, "thermo1")
    assert second != first
    pipeline.checksum_raw_file(second, env.settings)
    pipeline.copy_to_local_backup(second, env.settings)
    first_doc, second_doc = get_raw_file(first), get_raw_file(second)
    assert second_doc.backup_base_path.startswith(f"thermo1/{second_doc.created_at:%Y_%m}/")
    assert (env.backup_root / first_doc.backup_base_path / "qc.raw").read_bytes() != (
        env.backup_root / second_doc.backup_base_path / "qc.raw"
    ).read_bytes()
    pipeline.move_on_share(second, env.settings)
    assert get_raw_file(second).status == "moved"


def test_file_mover_refuses_a_recreated_file(env: PipelineEnv) -> None:
    path = make_thermo(env.instrument_path("thermo1"), name="re.raw", size=64 * 1024)
    raw_file_id = _register_one(env, "thermo1")
    pipeline.checksum_raw_file(raw_file_id, env.settings)
    pipeline.copy_to_local_backup(raw_file_id, env.settings)
    write_bytes(path, 100 * 1024, seed=7)  # a new acquisition overwrites the old one under the same name
    with pytest.raises(RuntimeError, match=r"is not the file that was registered and backed up as 're\.raw'"):
        pipeline.move_on_share(raw_file_id, env.settings)
    assert path.exists()
    # Without the recorded identity (documents from before it existed) the size check still refuses.
    pipeline.update_raw_file(raw_file_id, source_inode=None, source_mtime_ns=None, status="checksumming_done")
    with pytest.raises(RuntimeError, match=r"bytes on the share but 65536 bytes were backed up"):
        pipeline.move_on_share(raw_file_id, env.settings)
    assert get_raw_file(raw_file_id).status == "error"


def test_file_mover_is_idempotent(env: PipelineEnv) -> None:
    make_bruker(env.instrument_path("tims1"))
    raw_file_id = _register_one(env, "tims1")
    pipeline.checksum_raw_file(raw_file_id, env.settings)
    pipeline.copy_to_local_backup(raw_file_id, env.settings)
    pipeline.move_on_share(raw_file_id, env.settings)
    RawFile.objects(id=raw_file_id).update_one(set__status="moving")  # as if the task died after the rename
    pipeline.move_on_share(raw_file_id, env.settings)
    assert get_raw_file(raw_file_id).status == "moved"


def test_file_mover_refuses_without_verified_backup(env: PipelineEnv) -> None:
    make_thermo(env.instrument_path("thermo1"), name="nb.raw", size=1024)
    raw_file_id = _register_one(env, "thermo1")
    pipeline.checksum_raw_file(raw_file_id, env.settings)
    with pytest.raises(RuntimeError, match=r"has no verified local backup .* not moved"):
        pipeline.move_on_share(raw_file_id, env.settings)
    assert (env.instrument_path("thermo1") / "nb.raw").exists()


def test_created_at_is_utc(env: PipelineEnv) -> None:
    make_thermo(env.instrument_path("thermo1"), name="t.raw", size=10)
    raw_file_id = _register_one(env, "thermo1")
    assert get_raw_file(raw_file_id).created_at.tzinfo is not None
    assert get_raw_file(raw_file_id).created_at <= datetime.now(UTC)


def test_two_concurrent_copies_of_one_raw_file_both_succeed_without_clobbering(env: PipelineEnv) -> None:
    # A double trigger of the handler: both runs copy at once, each under its own temporary name.
    bruker = make_bruker(env.instrument_path("tims1"))
    raw_file_id = _register_one(env, "tims1")
    pipeline.checksum_raw_file(raw_file_id, env.settings)
    barrier = threading.Barrier(2)
    results: list[object] = []

    def copy() -> None:
        barrier.wait()
        try:
            results.append(pipeline.copy_to_local_backup(raw_file_id, env.settings))
        except Exception as error:  # collected and asserted below
            results.append(error)

    threads = [threading.Thread(target=copy) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert all(isinstance(result, Path) for result in results), results
    target = results[0]
    for original in (p for p in bruker.rglob("*") if p.is_file()):
        assert _md5(target / original.relative_to(env.instrument_path("tims1"))) == _md5(original)
    assert not [p for p in target.rglob("*") if p.name.endswith(".rawvault-partial")]
    staging_area = env.backup_root / ".rawvault-staging"  # the temporary copies' folders (rawvault.staging)
    assert not [p for p in staging_area.rglob("*") if p.is_file()] if staging_area.exists() else True
    assert get_raw_file(raw_file_id).backup_status == "copying_done"


def test_name_reused_for_a_new_file_is_registered_again_and_the_old_one_is_not_moved(env: PipelineEnv) -> None:
    folder = env.instrument_path("thermo1")
    path = make_thermo(folder, name="rerun.raw", size=64 * 1024, seed=1)
    first = _register_one(env, "thermo1")
    pipeline.checksum_raw_file(first, env.settings)
    pipeline.copy_to_local_backup(first, env.settings)
    # The sample is acquired again under the same name (same size) before the mover ran.
    path.unlink()
    make_thermo(folder, name="rerun.raw", size=64 * 1024, seed=2)

    second = _register_one(env, "thermo1")
    assert second != first
    with pytest.raises(RuntimeError, match=r"is not the file that was registered and backed up as 'rerun\.raw'"):
        pipeline.move_on_share(first, env.settings)
    assert (folder / "rerun.raw").exists()
    assert register_new_raw_files("thermo1", env.settings) == []


def test_queued_raw_files_are_started_again_until_their_handler_looks_at_them(env: PipelineEnv) -> None:
    from rawvault.watcher import raw_files_to_start

    make_thermo(env.instrument_path("thermo1"), name="a.raw", size=10)
    assert raw_files_to_start("thermo1", env.settings) == ["a.raw"]
    assert raw_files_to_start("thermo1", env.settings) == ["a.raw"]  # still queued: its trigger may have failed
    pipeline.update_raw_file("a.raw", status="monitoring_acquisition")
    assert raw_files_to_start("thermo1", env.settings) == []


def test_monitor_fails_clearly_and_records_when_the_acquisition_is_deleted(env: PipelineEnv) -> None:
    from rawvault.acquisition import AcquisitionGoneError, acquisition_finished

    path = make_thermo(env.instrument_path("thermo1"), name="gone.raw", size=10)
    raw_file_id = _register_one(env, "thermo1")
    path.unlink()
    with pytest.raises(AcquisitionGoneError, match="deleted or moved while it was being acquired"):
        acquisition_finished(raw_file_id, env.settings)
    assert get_raw_file(raw_file_id).status == "error"
    env.instrument_path("thermo1").rmdir()  # the share itself is gone: transient, retried, not recorded
    with pytest.raises(FileNotFoundError, match="is the instrument share mounted"):
        acquisition_finished(raw_file_id, env.settings)


def test_checksum_refuses_a_changed_part_size_before_reading(env: PipelineEnv) -> None:
    make_thermo(env.instrument_path("thermo1"), name="ps.raw", size=1024)
    raw_file_id = _register_one(env, "thermo1")
    pipeline.checksum_raw_file(raw_file_id, env.settings)
    changed = env.settings.model_copy(
        update={
            "backup": env.settings.backup.model_copy(
                update={"s3": env.settings.backup.s3.model_copy(update={"part_size_mb": 8})}
            )
        }
    )
    with pytest.raises(pipeline.FileInfoMismatchError, match=r"5242880 byte parts .*part_size_mb back to 5"):
        pipeline.checksum_raw_file(raw_file_id, changed)
    assert get_raw_file(raw_file_id).status == "error"
