"""The purge's rules through the real pipeline steps and the MongoDB wire server, local backups only (fast).

Free space comes from a stand-in for ``shutil.disk_usage`` so each rule can be
driven exactly; the real file system that fills up is tests/integration/test_purge_dags.py.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from rawvault import purge as purge_module
from rawvault.alerts.raw_files import RuleContext, raw_file_alert_state
from rawvault.purge import PurgeNotPossibleError, purge_instrument
from rawvault.ui.queries import RawFileFilter, list_raw_files
from shared.db.interface import get_raw_file, list_raw_files_on_share, update_raw_file
from shared.db.models import utc_now
from shared.db.purge import purge_candidates
from tests.data_factory import make_thermo
from tests.pipeline_env import PipelineEnv, active, write_pipeline_env
from tests.purge_data import age_entry, backed_up_and_moved

MB = 10**6


def _env(root: Path, **purge: Any) -> PipelineEnv:
    keys = {"enabled": True, "min_free_gb": 1.0, "min_age_days": 1, "max_per_run": 10, "dry_run": False}
    return write_pipeline_env(root, purge={**keys, **purge})  # backup_type local: require [local]


@pytest.fixture
def env(tmp_path: Path, mongo_uri: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[PipelineEnv]:
    with active(_env(tmp_path), monkeypatch) as environment:
        yield environment


def _sets(env: PipelineEnv, ages: tuple[float, ...]) -> list[str]:
    ids = []
    for index, days in enumerate(ages):
        path = make_thermo(env.instrument_path("thermo1"), name=f"s{index}.raw", size=64 * 1024, seed=index)
        age_entry(path, days)
        ids.append(backed_up_and_moved(env.settings, "thermo1", None))
    return ids


def _disk(free: int) -> Any:
    return lambda folder: SimpleNamespace(free=free, total=10 * free, used=9 * free)


def _on_share(env: PipelineEnv, raw_file_id: str) -> Path:
    raw_file = get_raw_file(raw_file_id)
    return env.instrument_path("thermo1") / "Backup" / f"{raw_file.created_at:%Y_%m}" / raw_file.original_name


def test_candidates_are_moved_sets_interrupted_first_then_oldest(env: PipelineEnv) -> None:
    first, second, third = _sets(env, (30, 20, 10))
    update_raw_file(second, purge_started_at=utc_now())
    update_raw_file(third, status="purged")
    assert [raw_file.id for raw_file in purge_candidates("thermo1")] == [second, first]
    names = [get_raw_file(raw_file_id).original_name for raw_file_id in (first, second, third)]
    assert {raw_file.id for raw_file in list_raw_files_on_share("thermo1", names)} == set()  # moved, purged: off it


def test_max_per_run_min_age_and_enough_free_space(env: PipelineEnv, monkeypatch: pytest.MonkeyPatch) -> None:
    old1, old2, old3, young = _sets(env, (30, 20, 10, 0.2))
    capped = _env(env.root, max_per_run=2)
    report = purge_instrument("thermo1", capped.settings, disk_usage=_disk(1 * MB))
    decisions = [(outcome.raw_file_id, outcome.decision.value) for outcome in report.outcomes]
    assert decisions == [
        (old1, "deleted"),
        (old2, "deleted"),
        (old3, "kept: max_per_run reached"),
        (young, "kept: too young"),
    ]
    assert report.summary().endswith(
        "Still 999.0 MB short: 1 younger than purge.min_age_days (1); 1 left for the next run (max_per_run)"
    )
    enough = purge_instrument("thermo1", capped.settings, disk_usage=_disk(2 * 10**9))
    assert [outcome.decision.value for outcome in enough.outcomes] == ["kept: enough free space", "kept: too young"]
    assert get_raw_file(old3).status == "moved" and _on_share(env, old3).exists()


def test_a_dry_run_from_the_command_line_writes_nothing(env: PipelineEnv) -> None:
    (only,) = _sets(env, (30,))
    before = get_raw_file(only).to_mongo().to_dict()
    report = purge_instrument("thermo1", env.settings, dry_run=True, record=False, disk_usage=_disk(0))
    assert [outcome.decision.value for outcome in report.outcomes] == ["would delete"]
    assert get_raw_file(only).to_mongo().to_dict() == before
    with pytest.raises(ValueError, match="record=False is for dry runs only"):
        purge_instrument("thermo1", env.settings, dry_run=False, record=False)


def test_a_local_copy_that_is_the_shares_own_file_is_no_copy(env: PipelineEnv) -> None:
    (only,) = _sets(env, (30,))
    raw_file = get_raw_file(only)
    copy = env.backup_root / raw_file.backup_base_path / raw_file.original_name
    copy.unlink()
    os.link(_on_share(env, only), copy)  # a hard link: one file, two names
    report = purge_instrument("thermo1", env.settings, disk_usage=_disk(0))
    assert report.outcomes[0].decision.value == "kept: check failed"
    assert "is the very file on the share" in get_raw_file(only).purge_blocked_reason
    assert _on_share(env, only).exists()


def test_a_symlinked_folder_between_instrument_and_set_keeps_the_set(env: PipelineEnv, tmp_path: Path) -> None:
    (only,) = _sets(env, (30,))
    month = _on_share(env, only).parent
    moved_away = tmp_path / "elsewhere"
    month.rename(moved_away)
    month.symlink_to(moved_away)
    report = purge_instrument("thermo1", env.settings, disk_usage=_disk(0))
    assert report.outcomes[0].check == "share"
    assert "is a symbolic link: the purge never deletes through one" in report.outcomes[0].reason
    assert (moved_away / "s0.raw").exists()


def test_a_run_that_loses_the_race_for_a_set_deletes_nothing(env: PipelineEnv, monkeypatch: pytest.MonkeyPatch) -> None:
    (only,) = _sets(env, (30,))
    real_check = purge_module.check_set

    def check_then_another_run_starts(raw_file: Any, *args: Any, **kwargs: Any) -> Any:
        checked = real_check(raw_file, *args, **kwargs)
        update_raw_file(raw_file.id, purge_checked_at=utc_now() + timedelta(seconds=1))  # the other run's mark
        return checked

    monkeypatch.setattr(purge_module, "check_set", check_then_another_run_starts)
    report = purge_instrument("thermo1", env.settings, disk_usage=_disk(0))
    assert report.outcomes[0].reason.startswith("another run changed this raw file while it was checked")
    assert _on_share(env, only).exists() and get_raw_file(only).purge_started_at is None


def test_a_missing_instrument_folder_stops_before_anything_is_checked(env: PipelineEnv) -> None:
    env.instrument_path("thermo1").rename(env.root / "unmounted")
    with pytest.raises(PurgeNotPossibleError, match=r"instrument 'thermo1', .* is the instrument share mounted"):
        purge_instrument("thermo1", env.settings)


def test_the_alert_rule_and_the_backups_page(env: PipelineEnv) -> None:
    blocked, purged = _sets(env, (30, 20))
    (_on_share(env, blocked)).write_bytes(b"rewritten")  # another size: the share check fails
    purge_instrument("thermo1", env.settings, disk_usage=_disk(0))
    context = RuleContext(now=utc_now(), deadline=timedelta(hours=24), s3=False, ui_base_url="https://af.example")
    observation = raw_file_alert_state(get_raw_file(blocked), context)
    assert (observation.health, observation.state) == ("bad", "purge_blocked:share")
    assert observation.title == "Purge held back: s0.raw (thermo1): the share check failed"
    assert observation.link == "https://af.example/dags/file_remover.thermo1"
    assert ("check", "share") in observation.details
    assert raw_file_alert_state(get_raw_file(purged), context).health == "healthy"

    rows = {row["id"]: row for row in list_raw_files(RawFileFilter(status=("purged", "moved"))).items}
    assert rows[purged]["status"] == "purged" and rows[purged]["purged_at"]
    assert rows[blocked]["purged_at"] is None
    assert rows[blocked]["purge_blocked_reason"].startswith("share: ")
    assert [row["id"] for row in list_raw_files(RawFileFilter(status=("purged",))).items] == [purged]
