"""scripts/rawvault.sh reads the local stack's env file (issue 17 item 1), only when no environment is set."""

from __future__ import annotations

import os
import stat
import subprocess
from pathlib import Path

import pytest

from devtools.local_stack import write_env_file

pytestmark = pytest.mark.slow  # two CLI processes that import Airflow (~20-50 s on a loaded machine)

REPO = Path(__file__).resolve().parents[2]


def _script_copy(tmp_path: Path) -> Path:
    """scripts/rawvault.sh in a repository of its own (links to this one's code and venv)."""
    (tmp_path / "scripts").mkdir()
    (tmp_path / "scripts" / "rawvault.sh").write_text((REPO / "scripts" / "rawvault.sh").read_text())
    for name in (".venv", "airflow_src", "shared", "envs"):
        (tmp_path / name).symlink_to(REPO / name)
    return tmp_path / "scripts" / "rawvault.sh"


def test_the_script_reads_the_local_stacks_env_file_only_when_nothing_is_set(tmp_path: Path) -> None:
    script = _script_copy(tmp_path)
    env_file = tmp_path / ".rawvault-run" / "env"
    write_env_file(env_file, {"RAWVAULT_ENV": "local", "RAWVAULT_MONGO_URI": "mongodb://127.0.0.1:1/x"}, header="t")
    assert stat.S_IMODE(env_file.stat().st_mode) == 0o600
    assert "export RAWVAULT_ENV=local" in env_file.read_text()
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("RAWVAULT_", "AIRFLOW_CONN_"))}
    used = subprocess.run(["bash", str(script), "coverage"], env=clean, capture_output=True, text=True, timeout=120)
    assert f"using the local stack's settings from {env_file}" in used.stderr
    assert "cannot read the raw files from MongoDB" in used.stderr  # the file's unreachable MongoDB
    assert used.returncode == 2 and len(used.stderr.strip().splitlines()) == 2, used.stderr
    own = subprocess.run(
        ["bash", str(script), "coverage"], env={**clean, "RAWVAULT_ENV": "local"}, capture_output=True, text=True,
        timeout=120,
    )  # fmt: skip
    assert "using the local stack's settings" not in own.stderr and "RAWVAULT_MONGO_URI is not set" in own.stderr


def test_the_script_refuses_an_env_file_others_may_write(tmp_path: Path) -> None:
    """The file is sourced as shell code: one that group or others may write is refused before it runs."""
    script = _script_copy(tmp_path)
    env_file = tmp_path / ".rawvault-run" / "env"
    write_env_file(env_file, {"RAWVAULT_ENV": "local"}, header="t")
    marker = tmp_path / "ran"
    env_file.write_text(f"touch {marker}\n")
    env_file.chmod(0o622)
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("RAWVAULT_", "AIRFLOW_CONN_"))}
    refused = subprocess.run(["bash", str(script), "coverage"], env=clean, capture_output=True, text=True, timeout=60)
    assert refused.returncode == 2 and "writable by nobody else" in refused.stderr, refused.stderr
    assert not marker.exists()
