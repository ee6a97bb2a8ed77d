"""Helpers of the purge tests: sets backed up and moved through the real pipeline, a share that fills up, no root
bypass of file permissions.

- :func:`without_root_bypass`: root ignores file permissions
  (``CAP_DAC_OVERRIDE``), so a read-only Bruker ``.m`` folder would not stop a
  deletion in a test as it stops one on a real share; inside this block the
  calling thread (and threads it starts) works like an ordinary owner of its files.
- :func:`backed_up_and_moved`: a raw file taken through the real pipeline
  steps (register, checksum, local copy, S3 upload, move) against the real
  servers, so the purge finds what production finds.
"""

from __future__ import annotations

import ctypes
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from devtools.demo_data import make_bruker
from rawvault import pipeline
from rawvault.backup import upload_raw_file
from rawvault.watcher import register_new_raw_files
from shared.db.interface import get_raw_file
from shared.settings import Settings
from tests.airflow_harness import load_dags, ti_states
from tests.data_factory import MIB, make_thermo
from tests.pipeline_env import PipelineEnv, activate, s3_backup, write_pipeline_env

DAY = 86400
GB = 10**9
REPO = Path(__file__).resolve().parents[1]

# --- no root bypass of file permissions (Linux capabilities of the calling thread) ---------------------------

_CAP_VERSION_3 = 0x20080522
_CAP_DAC_OVERRIDE, _CAP_DAC_READ_SEARCH, _CAP_FOWNER = 1, 2, 3


class _CapHeader(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _CapData(ctypes.Structure):
    _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32), ("inheritable", ctypes.c_uint32)]


def _capabilities(libc: Any, data: Any = None) -> Any:
    header = _CapHeader(_CAP_VERSION_3, 0)
    if data is None:
        data = (_CapData * 2)()
        if libc.capget(ctypes.byref(header), data) != 0:
            raise OSError(ctypes.get_errno(), "capget failed")
        return data
    if libc.capset(ctypes.byref(header), data) != 0:
        raise OSError(ctypes.get_errno(), "capset failed")
    return data


@contextmanager
def without_root_bypass() -> Iterator[None]:
    """Drop CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH and CAP_FOWNER from this thread's effective set, then restore."""
    libc = ctypes.CDLL(None, use_errno=True)
    try:
        data = _capabilities(libc)
    except OSError as error:
        pytest.skip(f"cannot read this thread's capabilities ({error})")
    before = data[0].effective
    data[0].effective = before & ~((1 << _CAP_DAC_OVERRIDE) | (1 << _CAP_DAC_READ_SEARCH) | (1 << _CAP_FOWNER))
    _capabilities(libc, data)
    try:
        yield
    finally:
        data[0].effective = before
        _capabilities(libc, data)


# --- sets through the real pipeline ------------------------------------------------------------------------


def age_entry(path: Path, days: float) -> None:
    """Give a share entry (a file or a whole .d folder) a modification time ``days`` ago: its acquisition time."""
    moment = time.time() - days * DAY
    for child in sorted(path.rglob("*"), reverse=True) if path.is_dir() else []:
        os.utime(child, (moment, moment), follow_symlinks=False)
    os.utime(path, (moment, moment))


def backed_up_and_moved(settings: Settings, instrument_id: str, client: Any) -> str:
    """Register the one new raw file of the instrument and take it through checksum, copy, upload and move."""
    (raw_file_id,) = register_new_raw_files(instrument_id, settings)
    pipeline.checksum_raw_file(raw_file_id, settings)
    pipeline.copy_to_local_backup(raw_file_id, settings)
    if settings.s3_enabled:
        upload_raw_file(raw_file_id, settings, client=client)
    pipeline.move_on_share(raw_file_id, settings)
    raw_file = get_raw_file(raw_file_id)
    assert raw_file.status == "moved", raw_file.status_details
    if settings.s3_enabled:
        assert raw_file.backup_status == "upload_done", raw_file.backup_status_details
    return raw_file_id


def fill(share: Path, leave_free: int) -> Path:
    """Write a filler file so that about ``leave_free`` bytes stay free on ``share``'s file system."""
    free = os.statvfs(share).f_bavail * os.statvfs(share).f_frsize
    filler = share / "filler.bin"
    with filler.open("wb") as handle:
        handle.write(b"\0" * max(0, free - leave_free))
    return filler


def free_bytes(path: Path) -> int:
    return os.statvfs(path).f_bavail * os.statvfs(path).f_frsize


# --- environments and runs of the DAG tests (a share on a tmpfs, S3 backups) ---------------------------------

S3_BACKUP = s3_backup("rv-purge")


def write_share_env(root: Path, share: Path, **purge: Any) -> PipelineEnv:
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


def reconfigure(env: PipelineEnv, share: Path, monkeypatch: pytest.MonkeyPatch, **purge: Any) -> PipelineEnv:
    new = write_share_env(env.root, share, **purge)
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


def run_remover(instrument_id: str) -> RemoverRun:
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session

    dag = load_dags()[f"file_remover.{instrument_id}"]
    run = dag.test()
    with create_session() as session:
        rows = session.scalars(XComModel.get_many(run_id=run.run_id, dag_ids=dag.dag_id, key="return_value")).all()
        report = XComModel.deserialize_value(rows[0]) if rows else None
    task_state = ti_states(dag.dag_id, run.run_id).get("purge_backed_up_sets")
    return RemoverRun(getattr(run.state, "value", run.state), task_state, report)


def thermo_sets(env: PipelineEnv, s3: Any, ages: tuple[int, ...], size: int = 6 * MIB) -> list[str]:
    folder = env.instrument_path("thermo1")
    ids = []
    for index, days in enumerate(ages):
        age_entry(make_thermo(folder, name=f"run{index}_{days}d.raw", size=size, seed=index + 1), days)
        ids.append(backed_up_and_moved(env.settings, "thermo1", s3))
    return ids


def on_share(env: PipelineEnv, raw_file_id: str) -> Path:
    raw_file = get_raw_file(raw_file_id)
    instrument = env.instrument_path(raw_file.instrument_id)
    return instrument / "Backup" / f"{raw_file.created_at:%Y_%m}" / raw_file.original_name


def bruker_set(env: PipelineEnv, s3: Any, name: str, days: float) -> str:
    folder = make_bruker(env.instrument_path("tims1"), name, main_size=1 * MIB, seed=len(name))
    age_entry(folder, days)
    return backed_up_and_moved(env.settings, "tims1", s3)
