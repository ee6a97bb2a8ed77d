"""Instrument types, project detection and the acquisition-finished rule, without servers."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from rawvault.acquisition import Observation, size_stable_long_enough
from rawvault.watcher import detect_project_id, list_raw_files
from shared.instrument_types import INSTRUMENT_TYPES, RawFileSetError, is_ignored_name

T0 = datetime(2026, 11, 22, 8, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("20261122_PRJ1_sample.raw", "PRJ1"),
        ("20261122_prj1_sample.raw", "PRJ1"),
        ("20261122 PRJ1-sample.d", "PRJ1"),
        ("20261122_PRJ10_sample.raw", "_FALLBACK"),  # tokens, not substrings
        ("20261122_PRJ1_PRJ2.raw", "_FALLBACK"),  # ambiguous
        ("plain.raw", "_FALLBACK"),
    ],
)
def test_detect_project_id(name: str, expected: str) -> None:
    assert detect_project_id(name, ["PRJ1", "PRJ2"], "_FALLBACK") == expected


@pytest.mark.parametrize(
    ("name", "ignored"),
    [(".hidden.raw", True), ("~$temp.raw", True), ("x.raw.tmp", True), ("x.part", True), ("run 1.raw", False)],
)
def test_ignored_names(name: str, ignored: bool) -> None:
    assert is_ignored_name(name) is ignored


def test_list_raw_files_per_type(tmp_path: Path) -> None:
    (tmp_path / "a.raw").write_bytes(b"1")
    (tmp_path / "b.RAW").write_bytes(b"1")
    (tmp_path / "c.d").mkdir()
    (tmp_path / "not_a_set.d").write_bytes(b"file named .d")
    (tmp_path / "Backup").mkdir()
    (tmp_path / "s.wiff").write_bytes(b"1")
    (tmp_path / "s.wiff2").write_bytes(b"1")
    (tmp_path / "s.wiff.scan").write_bytes(b"1")
    names = {
        t: [p.name for p in list_raw_files("i", tmp_path, INSTRUMENT_TYPES[t], skip=["Backup"])]
        for t in INSTRUMENT_TYPES
    }
    assert sorted(names["thermo"]) == ["a.raw", "b.RAW"]
    assert names["bruker"] == ["c.d"]
    assert names["sciex"] == ["s.wiff"]


def test_sets_and_main_files(tmp_path: Path) -> None:
    bruker = INSTRUMENT_TYPES["bruker"]
    run = tmp_path / "run.d"
    (run / "sub").mkdir(parents=True)
    (run / "analysis.tdf_bin").write_bytes(b"x")
    (run / "sub" / "f").write_bytes(b"x")
    assert bruker.main_file(run) == run / "analysis.tdf_bin"
    assert bruker.files_in_set(run) == [run / "analysis.tdf_bin", run / "sub" / "f"]
    (tmp_path / "empty.d").mkdir()
    with pytest.raises(RawFileSetError, match="contains no files"):
        bruker.files_in_set(tmp_path / "empty.d")
    with pytest.raises(RawFileSetError, match="does not exist"):
        INSTRUMENT_TYPES["thermo"].files_in_set(tmp_path / "gone.raw")
    sciex = INSTRUMENT_TYPES["sciex"]
    (tmp_path / "s.wiff").write_bytes(b"1")
    (tmp_path / "s.timeseries.data").write_bytes(b"1")
    assert sciex.files_in_set(tmp_path / "s.wiff") == [tmp_path / "s.wiff", tmp_path / "s.timeseries.data"]


@pytest.mark.parametrize(
    ("size", "previous", "since", "finished"),
    [
        (100, None, None, False),  # first look
        (100, 50, T0 - timedelta(hours=1), False),  # grew
        (100, 100, T0 - timedelta(seconds=10), False),  # stable, not long enough
        (100, 100, T0 - timedelta(seconds=30), True),
        (0, 0, T0 - timedelta(hours=1), False),  # main file not written yet
    ],
)
def test_size_stable_long_enough(size: int, previous: int | None, since: datetime | None, finished: bool) -> None:
    assert size_stable_long_enough(Observation(size, previous, since), T0, stable_seconds=30) is finished


def test_run_ids_are_valid_distinct_and_stable() -> None:
    import re

    from rawvault.keys import run_id_for

    ids = ["plain.raw", "Probe 1 – Größe.raw", "Probe 1 _ Größe.raw", "x" * 400]
    run_ids = [run_id_for(raw_file_id) for raw_file_id in ids]
    assert all(re.fullmatch(r"[A-Za-z0-9_.~:+-]+", run_id) and len(run_id) <= 250 for run_id in run_ids)
    assert len(set(run_ids)) == len(ids)
    assert run_id_for("plain.raw") == run_ids[0]
    assert run_ids[0].startswith("rawvault__plain.raw__")
