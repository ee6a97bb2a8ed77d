"""Fixtures of the purge tests: a small real file system that fills up, and an emptied S3 server.

Use from a test module with ``pytest_plugins = ["tests.purge_fixtures"]`` (helpers: ``tests.purge_data``).

- ``small_share``: a size-limited tmpfs mounted by the test (as root) and
  always unmounted afterwards, even when the test fails; skipped with the
  reason when mounting is not permitted.
- ``s3``: a client of moto's S3 server, emptied, with ``AIRFLOW_CONN_AWS_DEFAULT`` pointing at it.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from shared.settings import get_settings
from tests.airflow_harness import init_airflow_db
from tests.pipeline_env import PipelineEnv, activate, s3, s3_server
from tests.purge_data import write_share_env

__all__ = ["s3", "s3_server"]  # the fixtures: a moto S3 server of the test module's own, emptied for each test

SHARE_SIZE_MIB = 64


def _mount_tmpfs(mount_point: Path, size_mib: int) -> None:
    command = ["mount", "-t", "tmpfs", "-o", f"size={size_mib}m,mode=0755", "tmpfs", str(mount_point)]
    try:
        subprocess.run(command, check=True, capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError) as error:
        detail = getattr(error, "stderr", "") or error
        pytest.skip(f"cannot mount a size-limited tmpfs here ({detail}): these tests need root and mount(8)")


def _unmount(mount_point: Path) -> None:
    done = subprocess.run(["umount", str(mount_point)], capture_output=True, text=True, timeout=30)
    if done.returncode != 0:  # something still holds it: detach it now, it goes when released
        subprocess.run(["umount", "-l", str(mount_point)], capture_output=True, text=True, timeout=30)
    assert not os.path.ismount(mount_point), f"{mount_point} is still mounted: {done.stderr}"


@pytest.fixture
def small_share(tmp_path: Path) -> Iterator[Path]:
    """A fresh 64 MiB tmpfs: the instrument share that fills up."""
    mount_point = tmp_path / "share"
    mount_point.mkdir()
    _mount_tmpfs(mount_point, SHARE_SIZE_MIB)
    try:
        yield mount_point
    finally:
        _unmount(mount_point)


@pytest.fixture
def share_env(
    tmp_path: Path, small_share: Path, mongo_uri: str, s3: Any, monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[PipelineEnv, Path]]:
    init_airflow_db()
    env = write_share_env(tmp_path / "rv", small_share)
    activate(env, monkeypatch)
    yield env, small_share
    get_settings.cache_clear()
