"""docker-compose.yaml: validated by docker-compose itself, then checked against the production settings.

``docker-compose -f docker-compose.yaml config`` (v1 from Debian, no Docker engine needed)
validates and resolves the file; the resolved YAML must run one worker per queue the
production DAGs use, give the S3 uploader nothing but its queue and a read-only backup,
keep MinIO optional and take every secret from the (uncommitted) env file. Security
(issue 13, item 7): no secret has a default (compose refuses to run, naming it), PostgreSQL,
Redis and MongoDB require passwords that every URI carries, every service is on an
internal network, and only the api-server publishes a port, on 127.0.0.1.
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

from rawvault.keys import FILE_MOVER_QUEUE, MAINTENANCE_QUEUE, S3_UPLOAD_POOL, S3_UPLOADER_QUEUE
from shared.settings import Settings, load_settings

REPO_ROOT = Path(__file__).resolve().parents[2]
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


def _docker_compose() -> str:
    binary = shutil.which("docker-compose")
    if binary:
        return binary
    reason = "docker-compose is not installed (apt-get install docker-compose; scripts/setup.sh installs it)"
    if os.environ.get("CI"):
        pytest.fail(f"{reason}: CI must validate docker-compose.yaml")
    pytest.skip(reason)


def _compose_config(env_file: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    """Run ``docker-compose config`` with only ``env_file`` as the source of variables."""
    # A clean environment: variables of the calling shell would win over the env file.
    env = {key: os.environ[key] for key in ("PATH", "HOME", "LANG", "LC_ALL") if key in os.environ}
    return subprocess.run(
        [_docker_compose(), "--env-file", str(env_file), "-f", str(COMPOSE_FILE), *extra, "config"],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def _resolved(env_file: Path) -> dict[str, Any]:
    result = _compose_config(env_file)
    assert result.returncode == 0, f"docker-compose config failed:\n{result.stderr}"
    return yaml.safe_load(result.stdout)


def _example_env() -> dict[str, str]:
    """The variables .env.example assigns (comments and blank lines skipped)."""
    values = {}
    for line in ENV_EXAMPLE.read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            key, _, value = line.partition("=")
            values[key.strip()] = value.strip()
    return values


def _filled_secrets() -> dict[str, str]:
    """A value for every secret .env.example leaves empty, as a deployment fills them in (hex, URL-safe)."""
    from cryptography.fernet import Fernet

    filled = {name: f"test-{name.lower().replace('_', '-')}-{secrets.token_hex(8)}" for name in _example_env()
              if SECRET_NAME_RE.search(name) and name != "AIRFLOW_CONN_AWS_DEFAULT"}  # fmt: skip
    filled["AIRFLOW_FERNET_KEY"] = Fernet.generate_key().decode()
    return filled


def _write_env(path: Path, values: dict[str, str]) -> Path:
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
    return {**_example_env(), **_filled_secrets()}


@pytest.fixture(scope="module")
def filled_env_file(tmp_path_factory: pytest.TempPathFactory, filled: dict[str, str]) -> Path:
    return _write_env(tmp_path_factory.mktemp("compose") / "filled.env", filled)


@pytest.fixture(scope="module")
def config(empty_env_file: Path, filled_env_file: Path) -> dict[str, Any]:
    """The compose file resolved with the example env file and its secrets filled in (a deployment's .env)."""
    del empty_env_file  # resolve docker-compose (skip or fail) once, before reading the example
    return _resolved(filled_env_file)


@pytest.fixture(scope="module")
def services(config: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return config["services"]


@pytest.fixture(scope="module")
def settings() -> Settings:
    return load_settings(PRODUCTION_YAML)


def _command(service: dict[str, Any]) -> list[str]:
    command = service.get("command") or []
    return shlex.split(command) if isinstance(command, str) else [str(part) for part in command]


def _queues(service: dict[str, Any]) -> list[str] | None:
    """The ``--queues`` of a Celery worker service, or None for any other service."""
    command = _command(service)
    if command[:2] != ["celery", "worker"]:
        return None
    for flag in ("--queues", "-q"):
        if flag in command:
            return command[command.index(flag) + 1].split(",")
    raise AssertionError(f"Celery worker without --queues (it would serve the default queue): {command}")


def _mounts(service: dict[str, Any]) -> dict[str, bool]:
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


def _workers_by_queue(services: dict[str, dict[str, Any]]) -> dict[str, list[str]]:
    by_queue: dict[str, list[str]] = {}
    for name, service in services.items():
        for queue in _queues(service) or []:
            by_queue.setdefault(queue, []).append(name)
    return by_queue


def test_compose_refuses_to_run_without_each_secret(
    empty_env_file: Path, filled: dict[str, str], tmp_path: Path
) -> None:
    for env_file in (empty_env_file, ENV_EXAMPLE):  # nothing set; the example copied unchanged
        result = _compose_config(env_file)
        assert result.returncode != 0, f"docker-compose config passes with {env_file.name}: a secret has a default"
        assert "in .env (see .env.example)" in result.stderr, result.stderr
    for name in REQUIRED_SECRETS:
        for value in (None, ""):  # unset, and set but empty
            values = {key: val for key, val in filled.items() if key != name}
            if value is not None:
                values[name] = value
            result = _compose_config(_write_env(tmp_path / f"{name}.env", values))
            assert result.returncode != 0, f"docker-compose config passes with {name} {value!r}"
            assert f"set {name} in .env (see .env.example)" in result.stderr, result.stderr


def test_no_secret_has_a_default_value() -> None:
    text = COMPOSE_FILE.read_text(encoding="utf-8")
    references = re.findall(r"(?<!\$)\$\{([A-Z_][A-Z0-9_]*)(:?[-?])?", text)
    secrets_used = {name for name, _ in references if SECRET_NAME_RE.search(name)}
    assert set(REQUIRED_SECRETS) <= secrets_used
    defaulted = sorted({name for name, op in references if name in secrets_used - OPTIONAL_SECRETS and op != ":?"})
    assert not defaulted, f"these secrets have a default (use ${{NAME:?message}}): {defaulted}"
    assert secrets_used - set(REQUIRED_SECRETS) <= OPTIONAL_SECRETS, secrets_used
    example = _example_env()
    assigned = sorted(name for name in secrets_used if example.get(name))
    assert not assigned, f".env.example assigns values to the secrets {assigned}: leave them empty"


def test_minio_refuses_to_start_without_a_password(filled_env_file: Path) -> None:
    result = _compose_config(filled_env_file, "--profile", "minio")
    assert result.returncode == 0, result.stderr
    minio = yaml.safe_load(result.stdout)["services"]["minio"]
    script = minio["entrypoint"][-1]
    assert minio["entrypoint"][:2] == ["sh", "-c"] and '"$${#MINIO_ROOT_PASSWORD}" -lt 8' in script, minio
    assert "exit 1" in script and "exec /usr/bin/docker-entrypoint.sh minio server" in script, script


def test_every_service_is_on_the_internal_network_only(filled_env_file: Path) -> None:
    resolved = _resolved_with_profile(filled_env_file)
    networks = resolved["networks"]
    assert networks[INTERNAL_NETWORK].get("internal") is True, networks
    for name, service in resolved["services"].items():
        joined = set(service.get("networks") or {})
        assert joined == {INTERNAL_NETWORK} | EXTRA_NETWORKS.get(name, set()), f"{name} is on {sorted(joined)}"
        assert service.get("network_mode") is None, f"{name} sets network_mode"


def test_only_the_api_server_publishes_a_port_and_only_on_loopback(filled_env_file: Path) -> None:
    services = _resolved_with_profile(filled_env_file)["services"]
    published = {name: service["ports"] for name, service in services.items() if service.get("ports")}
    assert list(published) == ["api-server"], f"services with published ports: {published}"
    for port in published["api-server"]:
        text = port if isinstance(port, str) else f"{port.get('host_ip')}:{port.get('published')}"
        assert text.startswith("127.0.0.1:"), f"api-server publishes {port} beyond the loopback interface"
    compose = COMPOSE_FILE.read_text(encoding="utf-8")
    assert "AIRFLOW_API_BIND" not in compose, "the api-server's address must not be configurable"


def test_redis_requires_the_password_and_the_broker_url_carries_it(
    services: dict[str, dict[str, Any]], filled: dict[str, str]
) -> None:
    redis, password = services["redis"], filled["REDIS_PASSWORD"]
    assert redis["environment"]["REDIS_PASSWORD"] == password
    script = " ".join(_command(redis))
    assert "redis-server - " in script and "requirepass $${REDIS_PASSWORD}" in script, script
    assert password not in script, "the password must not be on redis-server's command line"
    assert redis.get("user") == "redis", "run Redis unprivileged"
    assert (
        'REDISCLI_AUTH="$${REDIS_PASSWORD}"' in redis["healthcheck"]["test"][-1]
        and "PONG" in redis["healthcheck"]["test"][-1]
    )
    for name in _airflow_services(services):
        broker = services[name]["environment"]["AIRFLOW__CELERY__BROKER_URL"]
        assert broker == f"redis://:{password}@redis:6379/0", f"{name}: {broker}"


def test_mongodb_has_a_root_user_and_the_uri_carries_it(
    services: dict[str, dict[str, Any]], filled: dict[str, str]
) -> None:
    mongodb, password = services["mongodb"], filled["MONGO_ROOT_PASSWORD"]
    assert mongodb["environment"]["MONGO_INITDB_ROOT_USERNAME"] == "rawvault"
    assert mongodb["environment"]["MONGO_INITDB_ROOT_PASSWORD"] == password
    expected = f"mongodb://rawvault:{password}@mongodb:27017/rawvault?authSource=admin"
    for name in _airflow_services(services):
        assert services[name]["environment"]["RAWVAULT_MONGO_URI"] == expected, name
    postgres = services["postgres"]["environment"]
    assert postgres["POSTGRES_PASSWORD"] == filled["POSTGRES_PASSWORD"]


def test_core_services_exist(services: dict[str, dict[str, Any]]) -> None:
    missing = [name for name in CORE_SERVICES if name not in services]
    assert not missing, f"docker-compose.yaml lacks the services {missing}"
    for name in (*CORE_SERVICES, *(name for name, service in services.items() if _queues(service))):
        assert "profiles" not in services[name], f"{name} must start without a profile"
    assert _command(services["api-server"]) == ["api-server"]
    assert _command(services["scheduler"]) == ["scheduler"]
    assert _command(services["dag-processor"]) == ["dag-processor"]
    assert _command(services["triggerer"]) == ["triggerer"]


def test_one_worker_per_queue(services: dict[str, dict[str, Any]], settings: Settings) -> None:
    expected = {
        *(settings.queue(instrument_id) for instrument_id in settings.instruments),
        settings.queue(FILE_MOVER_QUEUE),
        settings.queue(S3_UPLOADER_QUEUE),
        settings.queue(MAINTENANCE_QUEUE),
    }
    by_queue = _workers_by_queue(services)
    assert set(by_queue) == expected, f"worker queues {sorted(by_queue)} != queues of the DAGs {sorted(expected)}"
    doubled = {queue: names for queue, names in by_queue.items() if len(names) > 1}
    assert not doubled, f"queues served by more than one worker: {doubled}"


def test_instrument_workers_mount_their_share_and_the_backup(
    services: dict[str, dict[str, Any]], settings: Settings
) -> None:
    by_queue = _workers_by_queue(services)
    backup = str(settings.locations.backup)
    for instrument_id, instrument in settings.instruments.items():
        (name,) = by_queue[settings.queue(instrument_id)]
        assert _queues(services[name]) == [settings.queue(instrument_id)], f"{name} must serve only its instrument"
        mounts = _mounts(services[name])
        assert str(instrument.path) in mounts, f"{name} does not mount {instrument.path} (the share of {instrument_id})"
        assert mounts.get(backup) is False, f"{name} must mount the backup {backup} read-write"


def test_file_mover_worker_mounts_every_share(services: dict[str, dict[str, Any]], settings: Settings) -> None:
    (name,) = _workers_by_queue(services)[settings.queue(FILE_MOVER_QUEUE)]
    assert _queues(services[name]) == [settings.queue(FILE_MOVER_QUEUE)]
    mounts = _mounts(services[name])
    for instrument_id, instrument in settings.instruments.items():
        assert mounts.get(str(instrument.path)) is False, f"{name} must mount the share of {instrument_id} read-write"


def test_s3_worker_serves_only_its_queue_with_a_read_only_backup(
    services: dict[str, dict[str, Any]], settings: Settings
) -> None:
    (name,) = _workers_by_queue(services)[settings.queue(S3_UPLOADER_QUEUE)]
    command = _command(services[name])
    assert command[command.index("--queues") + 1] == "s3_uploader" == settings.queue(S3_UPLOADER_QUEUE)
    assert _queues(services[name]) == ["s3_uploader"], f"{name} must serve nothing but s3_uploader: {command}"
    mounts = _mounts(services[name])
    backup = str(settings.locations.backup)
    assert mounts.get(backup) is True, f"{name} must mount the backup {backup} read-only: {mounts}"
    shares = {str(instrument.path) for instrument in settings.instruments.values()}
    assert not shares & set(mounts), f"{name} must not see the instrument shares"


def test_maintenance_worker_serves_only_housekeeping_with_read_only_data(
    services: dict[str, dict[str, Any]], settings: Settings, filled: dict[str, str]
) -> None:
    (name,) = _workers_by_queue(services)[settings.queue(MAINTENANCE_QUEUE)]
    assert _queues(services[name]) == ["rawvault_maintenance"], "housekeeping must never wait behind uploads"
    mounts = _mounts(services[name])
    for instrument_id, instrument in settings.instruments.items():  # free space of every share, never written
        assert mounts.get(str(instrument.path)) is True, f"{name} must mount the share of {instrument_id} read-only"
    assert mounts.get(str(settings.locations.backup)) is True, f"{name} must mount the backup read-only"
    env = services[name]["environment"]
    for connection in ALERT_CONNECTIONS:  # the channels' secrets, only where alerts are sent from
        assert env[connection] == filled[connection], connection
        others = [other for other in services if other != name and connection in services[other].get("environment", {})]
        assert not others, f"{connection} must reach only {name}, not {others}"
    assert env["AIRFLOW__API__BASE_URL"] == "http://localhost:8080"  # links in alerts (AIRFLOW_UI_BASE_URL)


def test_minio_is_only_in_a_profile(services: dict[str, dict[str, Any]]) -> None:
    assert "minio" in services
    assert services["minio"].get("profiles") == ["minio"]
    for name, service in services.items():
        assert "minio" not in service.get("depends_on", {}), f"{name} must not need the optional MinIO"


def _resolved_with_profile(env_file: Path) -> dict[str, Any]:
    """The compose file resolved with every profile's services (MinIO included)."""
    result = _compose_config(env_file, "--profile", "minio")
    assert result.returncode == 0, result.stderr
    return yaml.safe_load(result.stdout)


def _airflow_services(services: dict[str, dict[str, Any]]) -> list[str]:
    return [*AIRFLOW_SERVICES, *(name for name, service in services.items() if _queues(service))]


def test_airflow_services_share_one_configuration(services: dict[str, dict[str, Any]], filled: dict[str, str]) -> None:
    example = filled
    for name in _airflow_services(services):
        env = services[name]["environment"]
        assert env["AIRFLOW__CORE__EXECUTOR"] == "CeleryExecutor", name
        assert env["RAWVAULT_ENV"] == "production", name
        assert env["AIRFLOW__CORE__FERNET_KEY"] == example["AIRFLOW_FERNET_KEY"], name
        assert env["AIRFLOW__API_AUTH__JWT_SECRET"] == example["AIRFLOW_JWT_SECRET"], name
        assert env["AIRFLOW__API__SECRET_KEY"] == example["AIRFLOW_API_SECRET_KEY"], name
        assert env["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"] == "http://api-server:8080/execution/", name
        assert f"airflow:{example['POSTGRES_PASSWORD']}@postgres:5432/" in env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"], (
            name
        )
        assert f"airflow:{example['POSTGRES_PASSWORD']}@postgres:5432/" in env["AIRFLOW__CELERY__RESULT_BACKEND"], name
        assert example["MONGO_ROOT_PASSWORD"] in env["RAWVAULT_MONGO_URI"], name
        assert env["AIRFLOW_CONN_AWS_DEFAULT"] == example["AIRFLOW_CONN_AWS_DEFAULT"], name
        assert "build" in services[name], f"{name} must run the image built from the Dockerfile"


def test_init_migrates_and_creates_the_upload_pool(services: dict[str, dict[str, Any]]) -> None:
    script = " ".join(_command(services["airflow-init"]))
    assert "airflow db migrate" in script
    assert f"airflow pools set {S3_UPLOAD_POOL} " in script
    for name in AIRFLOW_SERVICES[1:]:
        condition = services[name]["depends_on"]["airflow-init"]["condition"]
        assert condition == "service_completed_successfully", name


def test_every_compose_variable_is_documented_in_the_example() -> None:
    used = set(re.findall(r"(?<!\$)\$\{([A-Z_][A-Z0-9_]*)", COMPOSE_FILE.read_text(encoding="utf-8")))
    example = ENV_EXAMPLE.read_text(encoding="utf-8")
    documented = set(re.findall(r"^#?\s*([A-Z_][A-Z0-9_]*)=", example, flags=re.MULTILINE))
    assert not used - documented, f".env.example does not document {sorted(used - documented)}"


def test_image_matches_the_pinned_airflow() -> None:
    requirements = (REPO_ROOT / "requirements_airflow.txt").read_text(encoding="utf-8")
    pinned = re.search(r"^apache-airflow(?:\[[^\]]*\])?==(\S+)", requirements, re.MULTILINE)
    base = re.search(r"apache/airflow:(\S+)-python3\.11", (REPO_ROOT / "Dockerfile").read_text(encoding="utf-8"))
    assert pinned and base, "Dockerfile must build FROM apache/airflow:<version>-python3.11"
    assert base.group(1) == pinned.group(1), f"Dockerfile: Airflow {base.group(1)}; requirements: {pinned.group(1)}"


def test_dockerignore_keeps_secrets_out_of_the_image() -> None:
    rules = [line.strip() for line in (REPO_ROOT / ".dockerignore").read_text(encoding="utf-8").splitlines()]
    rules = [rule for rule in rules if rule and not rule.startswith("#")]
    assert rules[0] == "*", ".dockerignore must start by excluding everything (an allow-list)"
    assert not [rule for rule in rules if rule.startswith("!") and ".env" in rule], ".env must stay out of the image"
