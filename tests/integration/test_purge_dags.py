"""file_remover.<instrument> in real DAG runs on a small real file system that fills up (issue 14, "Must show").

The instrument share is a 64 MiB tmpfs mounted by the test (unmounted after it,
even on failure); the local backup lives elsewhere. Every set is taken through
the real pipeline steps against the MongoDB wire server and moto's S3 server
first, so the purge meets what production leaves behind.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from devtools.demo_data import make_bruker
from shared.db.interface import get_raw_file
from shared.settings import get_settings
from tests.airflow_harness import init_airflow_db, load_dags, ti_states
from tests.data_factory import MIB, make_thermo
from tests.pipeline_env import PipelineEnv, activate, write_pipeline_env
from tests.purge_data import age_entry, backed_up_and_moved, fill, free_bytes, without_root_bypass

pytest_plugins = ["tests.purge_fixtures"]
pytestmark = [pytest.mark.timeout(900), pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
GB = 10**9
S3_BACKUP = {
    "backup_type": "s3",
    "s3": {
        "region": "us-east-1",
        "bucket_prefix": "rv-purge",
        "part_size_mb": 5,
        "auto_create_buckets": True,
        "upload_retries": 0,
        "max_concurrency": 2,
    },
}


def _write_env(root: Path, share: Path, **purge: Any) -> PipelineEnv:
    keys = {"enabled": True, "min_free_gb": 0.0, "min_age_days": 1, "max_per_run": 10, "dry_run": False, **purge}
    return write_pipeline_env(
        root,
        backup=S3_BACKUP,
        instruments={
            "thermo1": {"type": "thermo", "path": str(share / "thermo1")},
            "tims1": {"type": "bruker", "path": str(share / "tims1")},
        },
        purge={"schedule": "@daily", **keys},
    )


@pytest.fixture
def share_env(
    tmp_path: Path, small_share: Path, mongo_uri: str, s3: Any, monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[PipelineEnv, Path]]:
    init_airflow_db()
    env = _write_env(tmp_path / "rv", small_share)
    activate(env, monkeypatch)
    yield env, small_share
    get_settings.cache_clear()


def _reconfigure(env: PipelineEnv, share: Path, monkeypatch: pytest.MonkeyPatch, **purge: Any) -> PipelineEnv:
    new = _write_env(env.root, share, **purge)
    activate(new, monkeypatch)
    return new


@dataclass
class RemoverRun:
    state: str
    task_state: str | None
    report: dict[str, Any] | None

    def decided(self, decision: str) -> list[str]:
        assert self.report is not None
        return [entry["raw_file_id"] for entry in self.report["sets"] if entry["decision"] == decision]


def _run_remover(instrument_id: str) -> RemoverRun:
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session

    dag = load_dags()[f"file_remover.{instrument_id}"]
    run = dag.test()
    with create_session() as session:
        rows = session.scalars(XComModel.get_many(run_id=run.run_id, dag_ids=dag.dag_id, key="return_value")).all()
        report = XComModel.deserialize_value(rows[0]) if rows else None
    task_state = ti_states(dag.dag_id, run.run_id).get("purge_backed_up_sets")
    return RemoverRun(getattr(run.state, "value", run.state), task_state, report)


def _thermo_sets(env: PipelineEnv, s3: Any, ages: tuple[int, ...], size: int = 10 * MIB) -> list[str]:
    folder = env.instrument_path("thermo1")
    ids = []
    for index, days in enumerate(ages):
        age_entry(make_thermo(folder, name=f"run{index}_{days}d.raw", size=size, seed=index + 1), days)
        ids.append(backed_up_and_moved(env.settings, "thermo1", s3))
    return ids


def _on_share(env: PipelineEnv, raw_file_id: str) -> Path:
    raw_file = get_raw_file(raw_file_id)
    instrument = env.instrument_path(raw_file.instrument_id)
    return instrument / "Backup" / f"{raw_file.created_at:%Y_%m}" / raw_file.original_name


def test_two_oldest_of_three_old_sets_are_deleted_and_free_space_reaches_the_threshold(
    share_env: tuple[PipelineEnv, Path], s3: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    env, share = share_env
    oldest, older, old = _thermo_sets(env, s3, ages=(30, 20, 10))
    (young,) = _thermo_sets(env, s3, ages=(0,), size=1 * MIB)
    fill(share, leave_free=3 * MIB)
    folder = env.instrument_path("thermo1")
    target = free_bytes(folder) + 15 * MIB  # one 10 MiB set is not enough, two are
    env = _reconfigure(env, share, monkeypatch, min_free_gb=target / GB)

    run = _run_remover("thermo1")

    assert (run.state, run.task_state) == ("success", "success"), run
    assert run.decided("deleted") == [oldest, older]
    assert run.decided("kept: enough free space") == [old]
    assert run.decided("kept: too young") == [young]
    assert free_bytes(folder) >= target
    assert run.report is not None and run.report["missing_bytes"] == 0
    for raw_file_id in (oldest, older):
        raw_file = get_raw_file(raw_file_id)
        assert raw_file.status == "purged" and raw_file.purged_at and raw_file.purge_started_at
        assert raw_file.backup_status == "upload_done" and raw_file.s3_backup_key  # still backed up
        assert not _on_share(env, raw_file_id).exists()
        (path, (size, md5, etag)), *_ = raw_file.file_info.items()
        assert (env.backup_root / raw_file.backup_base_path / path).stat().st_size == size  # the copies stay
        evidence = raw_file.purge_evidence
        assert evidence["require"] == ["local", "s3"]
        assert evidence["share"]["files"] == [
            {"path": path, "size": size, "md5": md5, "mtime_ns": raw_file.source_mtimes[path]}
        ]
        assert evidence["local"]["files"] == [{"path": path, "size": size, "md5": md5}]
        (s3_object,) = evidence["s3"]["objects"]
        assert (s3_object["etag"], s3_object["size"], s3_object["verified_by"]) == (etag, size, "etag")
        assert s3_object["version"]  # the buckets rawvault creates are versioned
        assert evidence["s3"]["manifest"]["etag"]
    for raw_file_id in (old, young):
        assert get_raw_file(raw_file_id).status == "moved"
        assert _on_share(env, raw_file_id).stat().st_size > 0

    again = _run_remover("thermo1")  # enough free space now: nothing more is deleted
    assert again.decided("deleted") == [] and again.decided("kept: enough free space") == [old]


def _bruker_set(env: PipelineEnv, s3: Any, name: str, days: float) -> str:
    folder = make_bruker(env.instrument_path("tims1"), name, main_size=1 * MIB, seed=len(name))
    age_entry(folder, days)
    return backed_up_and_moved(env.settings, "tims1", s3)


def _rewrite(path: Path) -> None:
    """Other bytes at the start of ``path``, same size, same inode."""
    with path.open("r+b") as handle:
        old = handle.read(32)
        handle.seek(0)
        handle.write(bytes(255 - byte for byte in old))


def _object(raw_file_id: str, path: str) -> tuple[str, str]:
    raw_file = get_raw_file(raw_file_id)
    bucket, _, prefix = raw_file.s3_backup_key.removeprefix("s3://").partition("/")
    return bucket, prefix + path


def _set_files(folder: Path) -> dict[str, int]:
    return {p.relative_to(folder).as_posix(): p.lstat().st_size for p in sorted(folder.rglob("*"))}


def _alert_settings(env: PipelineEnv) -> Any:
    from shared.settings import parse_settings

    raw = yaml.safe_load(env.config_path.read_text())
    raw["alerts"] = {
        "enabled": True,
        "channels": {"webhook": {"conn_id": "purge_test_hook"}},
        "free_space": {"instrument_min_free_gb": 0, "backup_min_free_gb": 0},  # only raw files here
    }
    return parse_settings(raw, env.config_path)


def test_each_failed_check_keeps_its_set_records_why_and_alerts_once(
    share_env: tuple[PipelineEnv, Path], s3: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from rawvault.alerts.check import run_check

    env, share = share_env
    names = ["corrupt_local", "missing_object", "replaced_object", "changed_source", "extra_file", "symlink", "good"]
    ids = {name: _bruker_set(env, s3, f"{name}.d", days=40 - index) for index, name in enumerate(names)}
    sent: list[dict[str, Any]] = []
    alert_settings = _alert_settings(env)
    run_check(alert_settings, {"webhook": sent.append})  # the first check ever: a baseline summary
    sent.clear()

    _rewrite(env.backup_root / get_raw_file(ids["corrupt_local"]).backup_base_path / "corrupt_local.d/analysis.tdf")
    bucket, key = _object(ids["missing_object"], "missing_object.d/analysis.tdf")
    s3.delete_object(Bucket=bucket, Key=key)  # versioned: a delete marker hides it
    bucket, key = _object(ids["replaced_object"], "replaced_object.d/analysis.tdf")
    size = s3.head_object(Bucket=bucket, Key=key)["ContentLength"]
    s3.delete_object(Bucket=bucket, Key=key)  # (the test client never overwrites: If-None-Match on every PUT)
    s3.put_object(Bucket=bucket, Key=key, Body=b"x" * size)  # a new version: the same size, other content
    _rewrite(_on_share(env, ids["changed_source"]) / "analysis.tdf")
    (_on_share(env, ids["extra_file"]) / "notes.txt").write_text("written after the backup")
    (_on_share(env, ids["symlink"]) / "link").symlink_to("/etc/hostname")
    before = {name: _set_files(_on_share(env, raw_file_id)) for name, raw_file_id in ids.items()}
    env = _reconfigure(env, share, monkeypatch, min_free_gb=1.0)  # more than the share holds: every set is needed

    run = _run_remover("tims1")

    assert (run.state, run.task_state) == ("failed", "failed")  # alerts are off here: a red task tells someone
    expected = {
        "corrupt_local": ("local", "corrupt_local.d/analysis.tdf is corrupted: MD5"),
        "missing_object": ("s3", "missing_object.d/analysis.tdf: missing"),
        "replaced_object": ("s3", "replaced_object.d/analysis.tdf: ETag differs"),
        "changed_source": ("share", "changed_source.d/analysis.tdf has MD5"),
        "extra_file": ("share", "extra_file.d/notes.txt is not a recorded file of the set"),
        "symlink": ("share", "symlink.d/link is a symbolic link (to /etc/hostname)"),
    }
    for name, (check, text) in expected.items():
        raw_file = get_raw_file(ids[name])
        assert raw_file.status == "moved" and raw_file.purge_started_at is None, name
        assert raw_file.purge_blocked_reason.startswith(f"{check}: "), raw_file.purge_blocked_reason
        assert text in raw_file.purge_blocked_reason, raw_file.purge_blocked_reason
        assert raw_file.purge_checked_at is not None
        assert _set_files(_on_share(env, ids[name])) == before[name], f"{name}: the kept set was touched"
    assert get_raw_file(ids["good"]).status == "purged"
    assert not _on_share(env, ids["good"]).exists()

    run_check(alert_settings, {"webhook": sent.append})
    announced = {message["subject"].removeprefix("raw_file:"): message for message in sent}
    assert set(announced) == {ids[name] for name in expected}
    for name, (check, _text) in expected.items():
        message = announced[ids[name]]
        assert message["state"] == f"purge_blocked:{check}" and message["title"].startswith("Purge held back")
    sent.clear()
    _run_remover("tims1")  # the same reasons again
    run_check(alert_settings, {"webhook": sent.append})
    assert sent == []  # one alert per change, not one per run

    (_on_share(env, ids["extra_file"]) / "notes.txt").unlink()  # someone looked and fixed it
    _run_remover("tims1")
    assert get_raw_file(ids["extra_file"]).status == "purged"
    run_check(alert_settings, {"webhook": sent.append})
    assert [(m["subject"], m["severity"]) for m in sent] == [(f"raw_file:{ids['extra_file']}", "recovered")]


def test_dry_run_deletes_nothing_and_reports_exactly_what_a_run_deletes(
    share_env: tuple[PipelineEnv, Path], s3: Any, mongo_uri: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    env, share = share_env
    oldest, older, old = _thermo_sets(env, s3, ages=(30, 20, 10))
    fill(share, leave_free=3 * MIB)
    folder = env.instrument_path("thermo1")
    target = free_bytes(folder) + 15 * MIB
    env = _reconfigure(env, share, monkeypatch, min_free_gb=target / GB, dry_run=True)
    free_before = free_bytes(folder)

    dry = _run_remover("thermo1")

    assert (dry.state, dry.task_state) == ("success", "success")
    assert dry.decided("would delete") == [oldest, older]
    assert dry.decided("kept: enough free space") == [old]
    assert free_bytes(folder) == free_before
    for raw_file_id in (oldest, older, old):
        raw_file = get_raw_file(raw_file_id)
        assert raw_file.status == "moved" and raw_file.purge_started_at is None and not raw_file.purge_evidence
        assert _on_share(env, raw_file_id).exists()
    assert dry.report is not None and dry.report["dry_run"] and dry.report["free_after"] >= target

    command = [str(REPO / "scripts" / "rawvault.sh"), "purge", "--dry-run", "--instrument", "thermo1"]
    table = subprocess.run(command, capture_output=True, text=True, timeout=300, env=os.environ.copy())
    assert table.returncode == 0, table.stderr
    rows = {line.split()[0]: line for line in table.stdout.splitlines()[3:]}
    assert "would delete" in rows[oldest] and "would delete" in rows[older], table.stdout
    assert "kept: enough free space" in rows[old], table.stdout
    assert table.stdout.startswith("thermo1 (dry run): would delete 2 set(s)")
    as_json = subprocess.run([*command, "--json"], capture_output=True, text=True, timeout=300, env=os.environ.copy())
    assert as_json.returncode == 0, as_json.stderr
    assert [s["raw_file_id"] for s in json.loads(as_json.stdout)["sets"] if s["decision"] == "would delete"] == [
        oldest,
        older,
    ]
    refused = subprocess.run(command[:2] + command[3:], capture_output=True, text=True, timeout=300)
    assert refused.returncode == 2 and "add --dry-run" in refused.stderr

    env = _reconfigure(env, share, monkeypatch, min_free_gb=target / GB, dry_run=False)
    real = _run_remover("thermo1")
    assert real.decided("deleted") == dry.decided("would delete")
    assert free_bytes(folder) >= target


KILL_AFTER_SECOND_DELETE = """
import os, signal, sys
real_unlink = os.unlink
deleted = []
def unlink(*args, **kwargs):
    real_unlink(*args, **kwargs)
    if kwargs.get("dir_fd") is None:
        return  # not the purge's (it deletes by folder descriptor)
    deleted.append(args[0])
    if len(deleted) == 2:
        os.kill(os.getpid(), signal.SIGKILL)  # the worker dies between two deletions
os.unlink = unlink
from rawvault.purge import purge_instrument
from shared.settings import get_settings
purge_instrument("tims1", get_settings())
"""


def test_a_purge_killed_between_two_deletions_is_finished_by_the_next_run(
    share_env: tuple[PipelineEnv, Path], s3: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    env, share = share_env
    raw_file_id = _bruker_set(env, s3, "killed.d", days=30)
    env = _reconfigure(env, share, monkeypatch, min_free_gb=1.0)
    on_share = _on_share(env, raw_file_id)
    files_before = {p.relative_to(on_share).as_posix() for p in on_share.rglob("*") if p.is_file()}

    pythonpath = os.pathsep.join([str(REPO), str(REPO / "airflow_src" / "plugins")])
    killed = subprocess.run(
        [sys.executable, "-c", KILL_AFTER_SECOND_DELETE],
        env={**os.environ, "PYTHONPATH": pythonpath},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert killed.returncode == -9, killed.stderr
    raw_file = get_raw_file(raw_file_id)
    assert raw_file.status == "moved" and raw_file.purge_started_at is not None  # recorded before the first delete
    left = {p.relative_to(on_share).as_posix() for p in on_share.rglob("*") if p.is_file()}
    assert len(left) == len(files_before) - 2

    run = _run_remover("tims1")

    assert (run.state, run.task_state) == ("success", "success"), run
    assert run.decided("deleted") == [raw_file_id]
    assert run.report is not None and run.report["sets"][0]["resumed"]
    raw_file = get_raw_file(raw_file_id)
    assert raw_file.status == "purged" and raw_file.purged_at
    assert not on_share.exists()
    evidence = raw_file.purge_evidence
    assert evidence["resumed"] is True
    assert len(evidence["share"]["already_deleted"]) == 2
    assert {entry["path"] for entry in evidence["share"]["deleted_earlier"]} == {
        f"killed.d/{path}" for path in files_before - left
    }


def test_a_bruker_set_with_a_read_only_method_folder_is_deleted_completely(
    share_env: tuple[PipelineEnv, Path], s3: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from rawvault import purge_fs

    env, share = share_env
    raw_file_id = _bruker_set(env, s3, "methods.d", days=30)
    env = _reconfigure(env, share, monkeypatch, min_free_gb=1.0)
    on_share = _on_share(env, raw_file_id)
    method = on_share / "1234.m"
    for folder in (method / "submethods", method):  # as Bruker writes them: dr-xr-xr-x
        folder.chmod(0o555)
    month_mode = on_share.parent.stat().st_mode

    # Without making the method folder writable, an ordinary owner (no root bypass) cannot delete it:
    with monkeypatch.context() as patch, without_root_bypass():
        patch.setattr(purge_fs._SetDeletion, "make_writable", lambda *args: None)
        control = _run_remover("tims1")
    assert control.task_state == "failed"
    assert "Permission denied" in get_raw_file(raw_file_id).purge_blocked_reason
    assert get_raw_file(raw_file_id).purge_blocked_reason.startswith("delete: ")

    with without_root_bypass():
        run = _run_remover("tims1")

    assert (run.state, run.task_state) == ("success", "success"), get_raw_file(raw_file_id).purge_blocked_reason
    assert run.decided("deleted") == [raw_file_id]
    assert not on_share.exists()  # the whole .d, its read-only folders included
    assert on_share.parent.is_dir() and on_share.parent.stat().st_mode == month_mode  # nothing outside the set
    assert get_raw_file(raw_file_id).status == "purged"


def test_file_remover_dags_exist_for_enabled_instruments_on_their_queues(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    instruments = {"thermo1": {"type": "thermo", "path": str(tmp_path / "thermo1"), "purge": {"enabled": False}}}
    instruments["tims1"] = {"type": "bruker", "path": str(tmp_path / "tims1"), "purge": {"schedule": "0 3 * * *"}}
    environment = write_pipeline_env(tmp_path, instruments=instruments, purge={"enabled": True, "schedule": "@hourly"})
    activate(environment, monkeypatch)
    dags = load_dags()
    removers = {dag_id: dag for dag_id, dag in dags.items() if dag_id.startswith("file_remover.")}
    assert sorted(removers) == ["file_remover.tims1", "file_remover.zeno1"]
    tims = removers["file_remover.tims1"]
    assert tims.max_active_runs == 1
    assert tims.schedule == "0 3 * * *"  # the instrument's own
    (task,) = tims.tasks
    assert (task.task_id, task.queue, task.retries) == ("purge_backed_up_sets", "test_tims1", 0)
    assert removers["file_remover.zeno1"].schedule == "@hourly"  # purge: for every other instrument
    get_settings.cache_clear()
