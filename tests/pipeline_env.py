"""A complete rawvault environment in a temporary folder: settings file, instrument folders, backup."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

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
