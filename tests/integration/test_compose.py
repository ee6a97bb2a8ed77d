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

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

pytest.register_assert_rewrite("tests.compose_fixtures")  # imported before pytest loads it

from tests.compose_fixtures import (  # noqa: E402
    COMPOSE_FILE,
    ENV_EXAMPLE,
    EXTRA_NETWORKS,
    INTERNAL_NETWORK,
    OPTIONAL_SECRETS,
    REPO_ROOT,
    REQUIRED_SECRETS,
    SECRET_NAME_RE,
    airflow_services,
    command_of,
    compose_config,
    example_env,
    resolved_with_profile,
    write_env,
)

pytestmark = pytest.mark.slow  # quick mode (scripts/test.sh --quick) leaves it out: over 15 s

pytest_plugins = ["tests.compose_fixtures"]


def test_compose_refuses_to_run_without_each_secret(
    empty_env_file: Path, filled: dict[str, str], tmp_path: Path
) -> None:
    for env_file in (empty_env_file, ENV_EXAMPLE):  # nothing set; the example copied unchanged
        result = compose_config(env_file)
        assert result.returncode != 0, f"docker-compose config passes with {env_file.name}: a secret has a default"
        assert "in .env (see .env.example)" in result.stderr, result.stderr
    for name in REQUIRED_SECRETS:
        for value in (None, ""):  # unset, and set but empty
            values = {key: val for key, val in filled.items() if key != name}
            if value is not None:
                values[name] = value
            result = compose_config(write_env(tmp_path / f"{name}.env", values))
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
    example = example_env()
    assigned = sorted(name for name in secrets_used if example.get(name))
    assert not assigned, f".env.example assigns values to the secrets {assigned}: leave them empty"


def test_minio_refuses_to_start_without_a_password(filled_env_file: Path) -> None:
    result = compose_config(filled_env_file, "--profile", "minio")
    assert result.returncode == 0, result.stderr
    minio = yaml.safe_load(result.stdout)["services"]["minio"]
    script = minio["entrypoint"][-1]
    assert minio["entrypoint"][:2] == ["sh", "-c"] and '"$${#MINIO_ROOT_PASSWORD}" -lt 8' in script, minio
    assert "exit 1" in script and "exec /usr/bin/docker-entrypoint.sh minio server" in script, script


def test_every_service_is_on_the_internal_network_only(filled_env_file: Path) -> None:
    resolved = resolved_with_profile(filled_env_file)
    networks = resolved["networks"]
    assert networks[INTERNAL_NETWORK].get("internal") is True, networks
    for name, service in resolved["services"].items():
        joined = set(service.get("networks") or {})
        assert joined == {INTERNAL_NETWORK} | EXTRA_NETWORKS.get(name, set()), f"{name} is on {sorted(joined)}"
        assert service.get("network_mode") is None, f"{name} sets network_mode"


def test_only_the_api_server_publishes_a_port_and_only_on_loopback(filled_env_file: Path) -> None:
    services = resolved_with_profile(filled_env_file)["services"]
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
    script = " ".join(command_of(redis))
    assert "redis-server - " in script and "requirepass $${REDIS_PASSWORD}" in script, script
    assert password not in script, "the password must not be on redis-server's command line"
    assert redis.get("user") == "redis", "run Redis unprivileged"
    assert (
        'REDISCLI_AUTH="$${REDIS_PASSWORD}"' in redis["healthcheck"]["test"][-1]
        and "PONG" in redis["healthcheck"]["test"][-1]
    )
    for name in airflow_services(services):
        broker = services[name]["environment"]["AIRFLOW__CELERY__BROKER_URL"]
        assert broker == f"redis://:{password}@redis:6379/0", f"{name}: {broker}"


def test_mongodb_has_a_root_user_and_the_uri_carries_it(
    services: dict[str, dict[str, Any]], filled: dict[str, str]
) -> None:
    mongodb, password = services["mongodb"], filled["MONGO_ROOT_PASSWORD"]
    assert mongodb["environment"]["MONGO_INITDB_ROOT_USERNAME"] == "rawvault"
    assert mongodb["environment"]["MONGO_INITDB_ROOT_PASSWORD"] == password
    expected = f"mongodb://rawvault:{password}@mongodb:27017/rawvault?authSource=admin"
    for name in airflow_services(services):
        assert services[name]["environment"]["RAWVAULT_MONGO_URI"] == expected, name
    postgres = services["postgres"]["environment"]
    assert postgres["POSTGRES_PASSWORD"] == filled["POSTGRES_PASSWORD"]


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
