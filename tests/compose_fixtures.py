"""docker-compose.yaml resolved by docker-compose itself: the helpers and fixtures of the compose tests.

Use from a test module with ``pytest_plugins = ["tests.compose_fixtures"]``; the helpers are imported.
``docker-compose -f docker-compose.yaml config`` (v1 from Debian, no Docker engine needed)
validates and resolves the file with only the given env file as the source of variables.
"""

from __future__ import annotations

import os
import re
import secrets
import shlex
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from shared.settings import Settings, load_settings

REPO_ROOT = Path(__file__).resolve().parents[1]
COMPOSE_FILE = REPO_ROOT / "docker-compose.yaml"
ENV_EXAMPLE = REPO_ROOT / ".env.example"
PRODUCTION_YAML = REPO_ROOT / "envs" / "rawvault.production.yaml"
CORE_SERVICES = (
    "postgres",
    "redis",
    "mongodb",
    "airflow-init",
    "api-server",
    "scheduler",
    "dag-processor",
    "triggerer",
)
AIRFLOW_SERVICES = ("airflow-init", "api-server", "scheduler", "dag-processor", "triggerer")
SECRET_NAME_RE = re.compile(r"PASSWORD|SECRET|KEY|CONN_")
# Secrets compose itself must refuse to run without (${NAME:?message}).
REQUIRED_SECRETS = ("POSTGRES_PASSWORD", "REDIS_PASSWORD", "MONGO_ROOT_PASSWORD", "AIRFLOW_FERNET_KEY",
                    "AIRFLOW_JWT_SECRET", "AIRFLOW_API_SECRET_KEY", "AIRFLOW_ADMIN_PASSWORD")  # fmt: skip
# Secrets without ${...:?}, each for a reason: the AWS connection may be defined in the UI instead;
# MinIO's (profile "minio") is checked by the minio service, as compose checks inactive profiles too.
OPTIONAL_SECRETS = {"AIRFLOW_CONN_AWS_DEFAULT", "MINIO_ROOT_PASSWORD"}
# The alert channels' connections: optional (alerts off, or connections defined in the UI), maintenance worker only.
ALERT_CONNECTIONS = ("AIRFLOW_CONN_RAWVAULT_SMTP", "AIRFLOW_CONN_RAWVAULT_SLACK", "AIRFLOW_CONN_RAWVAULT_WEBHOOK")
OPTIONAL_SECRETS |= set(ALERT_CONNECTIONS)
INTERNAL_NETWORK = "backend"
# Services that may also be on a network with a route outside the host, and why.
# The published UI port; uploads to S3; the verifier (S3) and the alert channels (SMTP, Slack, webhooks).
EXTRA_NETWORKS = {"api-server": {"ui"}, "worker-s3-uploader": {"egress"}, "worker-maintenance": {"egress"}}


def docker_compose() -> str:
    binary = shutil.which("docker-compose")
    if binary:
        return binary
    reason = "docker-compose is not installed (apt-get install docker-compose; scripts/setup.sh installs it)"
    if os.environ.get("CI"):
        pytest.fail(f"{reason}: CI must validate docker-compose.yaml")
    pytest.skip(reason)


def compose_config(env_file: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    """Run ``docker-compose config`` with only ``env_file`` as the source of variables."""
    # A clean environment: variables of the calling shell would win over the env file.
    env = {key: os.environ[key] for key in ("PATH", "HOME", "LANG", "LC_ALL") if key in os.environ}
    return subprocess.run(
        [docker_compose(), "--env-file", str(env_file), "-f", str(COMPOSE_FILE), *extra, "config"],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def resolved(env_file: Path) -> dict[str, Any]:
    result = compose_config(env_file)
    assert result.returncode == 0, f"docker-compose config failed:\n{result.stderr}"
    return yaml.safe_load(result.stdout)


def example_env() -> dict[str, str]:
    """The variables .env.example assigns (comments and blank lines skipped)."""
    values = {}
    for line in ENV_EXAMPLE.read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            key, _, value = line.partition("=")
            values[key.strip()] = value.strip()
    return values


def filled_secrets() -> dict[str, str]:
    """A value for every secret .env.example leaves empty, as a deployment fills them in (hex, URL-safe)."""
    from cryptography.fernet import Fernet

    filled = {name: f"test-{name.lower().replace('_', '-')}-{secrets.token_hex(8)}" for name in example_env()
              if SECRET_NAME_RE.search(name) and name != "AIRFLOW_CONN_AWS_DEFAULT"}  # fmt: skip
    filled["AIRFLOW_FERNET_KEY"] = Fernet.generate_key().decode()
    return filled


def write_env(path: Path, values: dict[str, str]) -> Path:
    path.write_text("".join(f"{key}={value}\n" for key, value in values.items()), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def empty_env_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("compose") / "empty.env"
    path.write_text("", encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def filled() -> dict[str, str]:
    """The example env file with every secret filled in."""
    return {**example_env(), **filled_secrets()}


@pytest.fixture(scope="module")
def filled_env_file(tmp_path_factory: pytest.TempPathFactory, filled: dict[str, str]) -> Path:
    return write_env(tmp_path_factory.mktemp("compose") / "filled.env", filled)


@pytest.fixture(scope="module")
def config(empty_env_file: Path, filled_env_file: Path) -> dict[str, Any]:
    """The compose file resolved with the example env file and its secrets filled in (a deployment's .env)."""
    del empty_env_file  # resolve docker-compose (skip or fail) once, before reading the example
    return resolved(filled_env_file)


@pytest.fixture(scope="module")
def services(config: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return config["services"]


@pytest.fixture(scope="module")
def settings() -> Settings:
    return load_settings(PRODUCTION_YAML)


def command_of(service: dict[str, Any]) -> list[str]:
    command = service.get("command") or []
    return shlex.split(command) if isinstance(command, str) else [str(part) for part in command]


def queues_of(service: dict[str, Any]) -> list[str] | None:
    """The ``--queues`` of a Celery worker service, or None for any other service."""
    command = command_of(service)
    if command[:2] != ["celery", "worker"]:
        return None
    for flag in ("--queues", "-q"):
        if flag in command:
            return command[command.index(flag) + 1].split(",")
    raise AssertionError(f"Celery worker without --queues (it would serve the default queue): {command}")


def mounts_of(service: dict[str, Any]) -> dict[str, bool]:
    """Container path -> read-only, for every volume of a service."""
    mounts = {}
    for volume in service.get("volumes", []):
        if isinstance(volume, dict):
            mounts[volume["target"]] = bool(volume.get("read_only", False))
        else:
            parts = volume.split(":")
            target, mode = (parts[1], parts[2]) if len(parts) > 2 else (parts[-1], "rw")
            mounts[target] = "ro" in mode.split(",")
    return mounts


def workers_by_queue(services: dict[str, dict[str, Any]]) -> dict[str, list[str]]:
    by_queue: dict[str, list[str]] = {}
    for name, service in services.items():
        for queue in queues_of(service) or []:
            by_queue.setdefault(queue, []).append(name)
    return by_queue


def resolved_with_profile(env_file: Path) -> dict[str, Any]:
    """The compose file resolved with every profile's services (MinIO included)."""
    result = compose_config(env_file, "--profile", "minio")
    assert result.returncode == 0, result.stderr
    return yaml.safe_load(result.stdout)


def airflow_services(services: dict[str, dict[str, Any]]) -> list[str]:
    return [*AIRFLOW_SERVICES, *(name for name, service in services.items() if queues_of(service))]
