"""``scripts/rawvault.sh coverage``: raw files past backup.deadline_hours without a verified backup (real MongoDB)."""

from __future__ import annotations

import json
import os
import subprocess
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from devtools.servers import free_port
from rawvault.cli import main
from shared.db import interface
from shared.db.interface import create_raw_file, utc_now
from shared.db.models import RawFile
from shared.settings import get_settings
from tests.pipeline_env import PipelineEnv, activate, write_pipeline_env

CLI = Path(__file__).resolve().parents[2] / "scripts" / "rawvault.sh"
S3 = {"backup_type": "s3", "deadline_hours": 24, "s3": {"region": "us-east-1", "bucket_prefix": "rv-cov"}}


def _raw_file(name: str, hours_ago: float, instrument: str = "thermo1", **fields: Any) -> None:
    create_raw_file(name, instrument_id=instrument, created_at=utc_now() - timedelta(hours=hours_ago), **fields)


def _env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, backup: dict[str, Any]) -> PipelineEnv:
    env = write_pipeline_env(tmp_path, backup=backup)
    activate(env, monkeypatch)
    return env


def _coverage(*args: str, capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main(["coverage", *args])
    out, err = capsys.readouterr()
    get_settings.cache_clear()
    return code, out, err


def test_coverage_lists_unprotected_raw_files_with_their_reason_and_exits_1(
    mongo_uri: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    _env(tmp_path, monkeypatch, S3)
    _raw_file("done.raw", 48, backup_status="upload_done", status="moved")
    _raw_file("purged.raw", 900, backup_status="upload_failed")
    # "purged" (stream C's file remover) is not a status of this model yet: written as the remover will.
    RawFile.objects(id="purged.raw").update_one(__raw__={"$set": {"status": "purged"}})
    _raw_file("young.raw", 2, backup_status="copying_done")
    _raw_file("failed.raw", 30, backup_status="upload_failed", backup_status_details="upload to S3 failed: S3 down")
    _raw_file("error.d", 50, instrument="tims1", status="error",
              status_details="monitor_acquisition: FileNotFoundError: is the instrument share mounted?")  # fmt: skip
    _raw_file("local-only.raw", 25, backup_status="copying_done", status="moved")
    _raw_file("waiting.raw", 26, status="queued")

    code, out, err = _coverage(capsys=capsys)
    assert code == 1, err
    lines = out.splitlines()
    assert lines[0] == "4 raw file(s) acquired more than 24 h ago without a verified S3 copy (upload_done):"
    rows = {line.split()[0]: line for line in lines[3:]}
    assert list(rows) == ["error.d", "failed.raw", "waiting.raw", "local-only.raw"]  # oldest first
    assert (
        "tims1" in rows["error.d"]
        and "50 h" in rows["error.d"]
        and "is the instrument share mounted?" in rows["error.d"]
    )
    assert "not started" in rows["waiting.raw"] and "has not copied it yet (queued)" in rows["waiting.raw"]
    assert "copying_done" in rows["local-only.raw"] and "upload to S3 failed: S3 down" in rows["failed.raw"]

    code, out, _ = _coverage("--instrument", "tims1", "--json", capsys=capsys)
    report = json.loads(out)
    assert code == 1 and report["unprotected"] == 1 and report["deadline_hours"] == 24
    (row,) = report["rows"]
    assert (row["raw_file_id"], row["status"], row["backup_status"]) == ("error.d", "error", "not started")

    code, out, _ = _coverage("--instrument", "zeno1", capsys=capsys)
    assert (code, out.strip()) == (0, "0 raw file(s) of instrument zeno1 acquired more than 24 h ago without a "
                                      "verified S3 copy (upload_done)")  # fmt: skip


def test_local_backups_count_a_verified_local_copy(
    mongo_uri: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    _env(tmp_path, monkeypatch, {"backup_type": "local", "deadline_hours": 12})
    _raw_file("copied.raw", 48, backup_status="copying_done", status="moved")
    assert _coverage(capsys=capsys)[0] == 0
    _raw_file("copy-failed.raw", 13, backup_status="copying_failed", backup_status_details="disk full")
    code, out, _ = _coverage(capsys=capsys)
    assert code == 1 and "without a verified local backup (copying_done)" in out and "disk full" in out


def test_coverage_cannot_run_exits_2_naming_the_cause(
    mongo_uri: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    env = _env(tmp_path, monkeypatch, S3)
    # The wrapper script, as a user runs it.
    environment = {**os.environ, "RAWVAULT_CONFIG": str(env.config_path)}
    result = subprocess.run(["bash", str(CLI), "coverage", "--instrument", "nope"], env=environment,
                            capture_output=True, text=True, timeout=120, check=False)  # fmt: skip
    assert result.returncode == 2, result.stderr
    assert "rawvault coverage: cannot run: instrument 'nope' is not in" in result.stderr
    assert "(instruments: thermo1, tims1, zeno1)" in result.stderr
    # MongoDB unreachable (fail in half a second rather than the 10 s a task waits).
    monkeypatch.setattr(interface, "SERVER_SELECTION_TIMEOUT_MS", 500)
    monkeypatch.setenv(interface.ENV_VAR_MONGO_URI, f"mongodb://127.0.0.1:{free_port()}/rawvault")
    interface.reset_connection()
    code, _, err = _coverage(capsys=capsys)
    interface.reset_connection()
    interface.connect_db(mongo_uri)  # the fixture drops this test's database through the connection
    assert code == 2 and "rawvault coverage: cannot run: cannot read the raw files from MongoDB" in err, err
    assert "Topology Description" not in err and len(err.strip().splitlines()) == 1, err  # one line (issue 17)
