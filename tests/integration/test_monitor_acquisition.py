"""monitor_acquisition's rule through the real MongoDB server: a stable size, or a newer acquisition, ends the wait."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from rawvault.acquisition import AcquisitionGoneError, acquisition_finished
from rawvault.watcher import register_new_raw_files
from shared.db.interface import get_raw_file
from tests.data_factory import write_bytes
from tests.pipeline_env import PipelineEnv, active, write_pipeline_env


@pytest.fixture
def env(tmp_path: Path, mongo_uri: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[PipelineEnv]:
    with active(write_pipeline_env(tmp_path, acquisition={"size_stable_seconds": 1.0}), monkeypatch) as environment:
        yield environment


def test_growing_file_is_not_finished_until_its_size_is_stable(env: PipelineEnv) -> None:
    path = write_bytes(env.instrument_path("thermo1") / "run.raw", 1000, seed=1)
    (raw_file_id,) = register_new_raw_files("thermo1", env.settings)

    assert not acquisition_finished(raw_file_id, env.settings)  # first look: records the size
    assert get_raw_file(raw_file_id).status == "monitoring_acquisition"
    with path.open("ab") as handle:
        handle.write(b"more data")
    time.sleep(1.1)
    assert not acquisition_finished(raw_file_id, env.settings)  # grew: the clock starts again
    assert get_raw_file(raw_file_id).monitor_size == 1009
    assert not acquisition_finished(raw_file_id, env.settings)  # stable, but not for long enough yet
    time.sleep(1.1)
    assert acquisition_finished(raw_file_id, env.settings)
    assert get_raw_file(raw_file_id).status == "monitoring_done"


def test_a_newer_acquisition_ends_the_wait(env: PipelineEnv) -> None:
    folder = env.instrument_path("tims1")
    older = folder / "older.d"
    write_bytes(older / "analysis.tdf_bin", 500, seed=1)
    os.utime(older, (time.time() - 60, time.time() - 60))
    (older_id,) = register_new_raw_files("tims1", env.settings)
    assert not acquisition_finished(older_id, env.settings)

    write_bytes(folder / "newer.d" / "analysis.tdf_bin", 10, seed=2)
    (newer_id,) = register_new_raw_files("tims1", env.settings)
    assert acquisition_finished(older_id, env.settings)  # at once, without waiting for a stable size
    assert not acquisition_finished(newer_id, env.settings)


def test_bruker_folder_without_its_main_file_yet_keeps_waiting(env: PipelineEnv) -> None:
    (env.instrument_path("tims1") / "starting.d").mkdir()
    (raw_file_id,) = register_new_raw_files("tims1", env.settings)
    for _ in range(2):
        assert not acquisition_finished(raw_file_id, env.settings)
        time.sleep(1.1)
    assert get_raw_file(raw_file_id).monitor_size in (None, 0)


def test_acquisition_deleted_while_watched_fails_clearly(env: PipelineEnv) -> None:
    path = write_bytes(env.instrument_path("thermo1") / "gone.raw", 10, seed=1)
    (raw_file_id,) = register_new_raw_files("thermo1", env.settings)
    path.unlink()
    with pytest.raises(AcquisitionGoneError, match=r"'gone\.raw' is no longer at .*gone\.raw: it was deleted or moved"):
        acquisition_finished(raw_file_id, env.settings)


def test_raw_file_of_another_instrument_is_refused(env: PipelineEnv) -> None:
    from rawvault.acquisition import WrongInstrumentError

    write_bytes(env.instrument_path("thermo1") / "t.raw", 10, seed=1)
    (raw_file_id,) = register_new_raw_files("thermo1", env.settings)
    with pytest.raises(WrongInstrumentError, match=r"belongs to instrument 'thermo1', not 'tims1'.*thermo1 for it"):
        acquisition_finished(raw_file_id, env.settings, instrument_id="tims1")
    assert not acquisition_finished(raw_file_id, env.settings, instrument_id="thermo1")
