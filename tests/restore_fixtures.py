"""Helpers of the restore, verify and scrub tests: an environment of its own, a real upload, the CLI as a subprocess.

Use from a test module with ``pytest_plugins = ["tests.s3_fixtures", "tests.restore_fixtures"]``.
"""

from __future__ import annotations

import filecmp
import os
import subprocess
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml

from devtools.local_stack import aws_connection_uri
from devtools.servers import S3Server
from rawvault.backup import XcomFileInfo, upload_raw_file
from rawvault.s3.download import TEMP_SUFFIX
from shared.db.interface import create_raw_file, get_raw_file
from shared.settings import Settings, get_settings, load_settings
from tests.s3_fixtures import PART, REGION, file_info_of, settings_document, unique_prefix
from tests.s3_proxy import S3Proxy

REPO_ROOT = Path(__file__).resolve().parents[1]
CLI = REPO_ROOT / "scripts" / "rawvault.sh"
CREATED = datetime(2026, 11, 22, 10, 0, tzinfo=UTC)
THERMO = "20261122_thermo1_sample.raw"
BRUKER = "20261122_tims1_sample.d"


@dataclass
class Env:
    settings: Settings
    config_path: Path
    root: Path

    def bucket(self, project: str = "fallback") -> str:
        return f"{self.settings.backup.s3.bucket_prefix}-{project}"


def write_env(root: Path, file_name: str, **s3: Any) -> Env:
    """A settings file ``root/file_name`` of its own (unique bucket prefix, buckets created), loaded."""
    config_path = root / file_name
    config_path.write_text(yaml.safe_dump(settings_document(root, unique_prefix(), auto_create_buckets=True, **s3)))
    return Env(load_settings(config_path), config_path, root)


def through(proxy: S3Proxy) -> dict[str, str | None]:
    """The environment overrides that send a CLI process's S3 requests through ``proxy``."""
    return {"AIRFLOW_CONN_AWS_DEFAULT": aws_connection_uri(proxy.endpoint_url, REGION)}


@pytest.fixture
def env(tmp_path: Path, s3_server: S3Server, monkeypatch: pytest.MonkeyPatch) -> Env:
    """A settings file of its own (unique bucket prefix), selected through RAWVAULT_CONFIG, and the AWS connection."""
    written = write_env(tmp_path, "rawvault.test.yaml", max_concurrency=4)
    monkeypatch.setenv("RAWVAULT_CONFIG", str(written.config_path))
    monkeypatch.setenv("AIRFLOW_CONN_AWS_DEFAULT", aws_connection_uri(s3_server.endpoint_url, REGION))
    get_settings.cache_clear()
    yield written
    get_settings.cache_clear()


def back_up(
    env: Env, client: Any, instrument_id: str, make: Any, *, project_id: str | None = None, created: datetime = CREATED
) -> tuple[str, Path, list[str]]:
    """Register a raw file with its local backup copy and upload it to S3 with the real upload step."""
    base = f"{instrument_id}/{created:%Y_%m}"
    folder = env.settings.locations.backup / base
    made = make(folder)
    paths = [made] if isinstance(made, str) else made
    info = file_info_of(folder, paths)
    raw_file = create_raw_file(
        paths[0].split("/")[0],
        instrument_id=instrument_id,
        created_at=created,
        project_id=project_id,
        file_info=info,
        etag_part_size=PART,
        backup_status="copying_done",
    )
    xcom = XcomFileInfo(file_info=info, part_size=PART, backup_folder=folder)
    upload_raw_file(raw_file.id, env.settings, xcom=xcom, client=client, progress_interval=5)
    assert get_raw_file(raw_file.id).backup_status == "upload_done"
    return raw_file.id, folder, paths


def files_under(folder: Path) -> list[str]:
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file() or p.is_symlink())


def assert_identical_tree(source: Path, paths: list[str], target: Path) -> None:
    """``target`` holds exactly ``paths``, each byte-identical to the one under ``source``."""
    assert files_under(target) == sorted(paths)
    for path in paths:
        assert filecmp.cmp(source / path, target / path, shallow=False), path


def leftovers(folder: Path) -> list[str]:
    return [path for path in files_under(folder) if path.endswith(TEMP_SUFFIX)] if folder.exists() else []


def cli_environment(env_overrides: dict[str, str | None] | None = None) -> dict[str, str]:
    """This test's environment for a CLI subprocess, with ``env_overrides`` (``None``: removed)."""
    environment = dict(os.environ)
    for name, value in (env_overrides or {}).items():
        if value is None:
            environment.pop(name, None)
        else:
            environment[name] = value
    return environment


def run_cli(*args: str, env_overrides: dict[str, str | None] | None = None) -> subprocess.CompletedProcess[str]:
    """``scripts/rawvault.sh ARGS`` as a real subprocess with this test's environment."""
    return subprocess.run(
        ["bash", str(CLI), *args],
        env=cli_environment(env_overrides),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def start_cli(*args: str, env_overrides: dict[str, str | None] | None = None) -> subprocess.Popen[str]:
    """``scripts/rawvault.sh ARGS`` started in the background (``communicate()`` to wait for it)."""
    return subprocess.Popen(
        ["bash", str(CLI), *args],
        env=cli_environment(env_overrides),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
