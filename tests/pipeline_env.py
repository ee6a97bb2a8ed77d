"""A complete rawvault environment in a temporary folder: settings file, instrument folders, backup."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from devtools.local_stack import aws_connection_uri
from devtools.servers import S3Server, local_s3_client
from shared.settings import Settings, get_settings, load_settings

INSTRUMENTS = {"thermo1": "thermo", "tims1": "bruker", "zeno1": "sciex"}


@dataclass
class PipelineEnv:
    """Paths of one test environment and its loaded settings."""

    root: Path
    config_path: Path
    settings: Settings

    def instrument_path(self, instrument_id: str) -> Path:
        return self.settings.instruments[instrument_id].path

    @property
    def backup_root(self) -> Path:
        return self.settings.locations.backup


def write_pipeline_env(root: Path, *, backup: dict[str, Any] | None = None, **overrides: Any) -> PipelineEnv:
    """Write a settings YAML for fast test runs (short polls, no retries) and create the folders."""
    raw: dict[str, Any] = {
        "instruments": {
            iid: {"type": itype, "path": str(root / "instruments" / iid)} for iid, itype in INSTRUMENTS.items()
        },
        "locations": {"backup": str(root / "backup")},
        "acquisition": {"poke_interval_seconds": 0.2, "size_stable_seconds": 0.5, "timeout_hours": 0.05},
        "watcher": {"schedule": "*/5 * * * *", "fallback_project_id": "_FALLBACK"},
        "file_mover": {"delay_minutes": 0, "target_folder": "Backup"},
        "airflow": {"queue_prefix": "test_", "task_retries": 0, "retry_delay_minutes": 0},
        "backup": backup
        or {"backup_type": "local", "s3": {"region": "us-east-1", "bucket_prefix": "rv-test", "part_size_mb": 5}},
    }
    for key, value in overrides.items():
        raw[key] = {**raw.get(key, {}), **value} if isinstance(value, dict) else value
    root.mkdir(parents=True, exist_ok=True)
    config_path = root / "rawvault.test.yaml"
    config_path.write_text(yaml.safe_dump(raw, sort_keys=False))
    settings = load_settings(config_path)
    for instrument in settings.instruments.values():
        instrument.path.mkdir(parents=True, exist_ok=True)
    return PipelineEnv(root=root, config_path=config_path, settings=settings)


def activate(env: PipelineEnv, monkeypatch: Any) -> None:
    """Make ``env`` the settings every DAG file and task of this process reads."""
    monkeypatch.setenv("RAWVAULT_CONFIG", str(env.config_path))
    get_settings.cache_clear()


@contextmanager
def active(env: PipelineEnv, monkeypatch: Any) -> Iterator[PipelineEnv]:
    """``env`` activated (:func:`activate`) while inside; the cached settings forgotten when it ends."""
    activate(env, monkeypatch)
    try:
        yield env
    finally:
        get_settings.cache_clear()


def s3_backup(bucket_prefix: str, **s3: Any) -> dict[str, Any]:
    """The ``backup`` section of a DAG test with S3: 5 MiB parts, buckets created, no upload retries, two threads."""
    return {
        "backup_type": "s3",
        "s3": {
            "region": "us-east-1",
            "bucket_prefix": bucket_prefix,
            "part_size_mb": 5,
            "auto_create_buckets": True,
            "upload_retries": 0,
            "max_concurrency": 2,
            **s3,
        },
    }


def delete_every_bucket(client: Any) -> None:
    """Delete every bucket of the server with every version in it (a module-scoped server, a clean start per test)."""
    for bucket in client.list_buckets()["Buckets"]:
        versions = client.list_object_versions(Bucket=bucket["Name"])
        for version in versions.get("Versions", []) + versions.get("DeleteMarkers", []):
            client.delete_object(Bucket=bucket["Name"], Key=version["Key"], VersionId=version["VersionId"])
        client.delete_bucket(Bucket=bucket["Name"])


@pytest.fixture(scope="module")
def s3_server() -> Iterator[S3Server]:
    """A moto S3 server of the test module's own: a module imports this fixture (``__all__`` names it)."""
    with S3Server() as server:
        yield server


@pytest.fixture
def s3(s3_server: S3Server, monkeypatch: pytest.MonkeyPatch) -> Any:
    """A client of the module's emptied S3 server; the Airflow connection aws_default points at it."""
    return emptied_s3(s3_server.endpoint_url, monkeypatch)


def emptied_s3(endpoint_url: str, monkeypatch: Any) -> Any:
    """A client of the emptied S3 server at ``endpoint_url``; the Airflow connection aws_default points at it."""
    monkeypatch.setenv("AIRFLOW_CONN_AWS_DEFAULT", aws_connection_uri(endpoint_url))
    client = local_s3_client(endpoint_url)
    delete_every_bucket(client)
    return client
