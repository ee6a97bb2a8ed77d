"""file_remover.<instrument>: a purge killed midway is finished, read-only folders go, the DAGs' shape.

Real DAG runs on a 64 MiB tmpfs mounted by the test (see tests/integration/test_purge_dags.py).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from shared.db.interface import get_raw_file
from shared.settings import get_settings
from tests.airflow_harness import load_dags
from tests.pipeline_env import PipelineEnv, activate, write_pipeline_env
from tests.purge_data import REPO, bruker_set, on_share, reconfigure, run_remover, without_root_bypass

pytest_plugins = ["tests.purge_fixtures"]
pytestmark = [pytest.mark.timeout(900), pytest.mark.slow]


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


def _set_to_purge(
    share_env: tuple[PipelineEnv, Path], s3: Any, monkeypatch: pytest.MonkeyPatch, name: str
) -> tuple[str, Path]:
    """A Bruker set backed up and moved 30 days ago on a share the purge must free (min_free_gb 1): id, path."""
    env, share = share_env
    raw_file_id = bruker_set(env, s3, name, days=30)
    env = reconfigure(env, share, monkeypatch, min_free_gb=1.0)
    return raw_file_id, on_share(env, raw_file_id)


def test_a_purge_killed_between_two_deletions_is_finished_by_the_next_run(
    share_env: tuple[PipelineEnv, Path], s3: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    raw_file_id, set_path = _set_to_purge(share_env, s3, monkeypatch, "killed.d")
    files_before = {p.relative_to(set_path).as_posix() for p in set_path.rglob("*") if p.is_file()}

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
    left = {p.relative_to(set_path).as_posix() for p in set_path.rglob("*") if p.is_file()}
    assert len(left) == len(files_before) - 2

    run = run_remover("tims1")

    assert (run.state, run.task_state) == ("success", "success"), run
    assert run.decided("deleted") == [raw_file_id]
    assert run.report is not None and run.report["sets"][0]["resumed"]
    raw_file = get_raw_file(raw_file_id)
    assert raw_file.status == "purged" and raw_file.purged_at
    assert not set_path.exists()
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

    raw_file_id, set_path = _set_to_purge(share_env, s3, monkeypatch, "methods.d")
    method = set_path / "1234.m"
    for folder in (method / "submethods", method):  # as Bruker writes them: dr-xr-xr-x
        folder.chmod(0o555)
    month_mode = set_path.parent.stat().st_mode

    # Without making the method folder writable, an ordinary owner (no root bypass) cannot delete it:
    with monkeypatch.context() as patch, without_root_bypass():
        patch.setattr(purge_fs._SetDeletion, "make_writable", lambda *args: None)
        control = run_remover("tims1")
    assert control.task_state == "failed"
    assert "Permission denied" in get_raw_file(raw_file_id).purge_blocked_reason
    assert get_raw_file(raw_file_id).purge_blocked_reason.startswith("delete: ")

    with without_root_bypass():
        run = run_remover("tims1")

    assert (run.state, run.task_state) == ("success", "success"), get_raw_file(raw_file_id).purge_blocked_reason
    assert run.decided("deleted") == [raw_file_id]
    assert run.report is not None and "2 read-only folder(s) of it made writable" in run.report["sets"][0]["reason"]
    assert not set_path.exists()  # the whole .d, its read-only folders included
    assert set_path.parent.is_dir() and set_path.parent.stat().st_mode == month_mode  # nothing outside the set
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
