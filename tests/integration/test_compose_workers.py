"""docker-compose.yaml against the production settings: one worker per queue, mounts, the Airflow services.

The resolved YAML must run one worker per queue the production DAGs use, give the S3
uploader nothing but its queue and a read-only backup, keep MinIO optional, and give every
Airflow service one configuration. Resolved by ``tests.compose_fixtures`` (see ``test_compose.py``).
"""

from __future__ import annotations

from typing import Any

import pytest

pytest.register_assert_rewrite("tests.compose_fixtures")  # imported before pytest loads it

from rawvault.keys import FILE_MOVER_QUEUE, MAINTENANCE_QUEUE, S3_UPLOAD_POOL, S3_UPLOADER_QUEUE  # noqa: E402
from shared.settings import Settings  # noqa: E402
from tests.compose_fixtures import (  # noqa: E402
    AIRFLOW_SERVICES,
    ALERT_CONNECTIONS,
    CORE_SERVICES,
    airflow_services,
    command_of,
    mounts_of,
    queues_of,
    workers_by_queue,
)

pytest_plugins = ["tests.compose_fixtures"]


def test_core_services_exist(services: dict[str, dict[str, Any]]) -> None:
    missing = [name for name in CORE_SERVICES if name not in services]
    assert not missing, f"docker-compose.yaml lacks the services {missing}"
    for name in (*CORE_SERVICES, *(name for name, service in services.items() if queues_of(service))):
        assert "profiles" not in services[name], f"{name} must start without a profile"
    assert command_of(services["api-server"]) == ["api-server"]
    assert command_of(services["scheduler"]) == ["scheduler"]
    assert command_of(services["dag-processor"]) == ["dag-processor"]
    assert command_of(services["triggerer"]) == ["triggerer"]


def test_one_worker_per_queue(services: dict[str, dict[str, Any]], settings: Settings) -> None:
    expected = {
        *(settings.queue(instrument_id) for instrument_id in settings.instruments),
        settings.queue(FILE_MOVER_QUEUE),
        settings.queue(S3_UPLOADER_QUEUE),
        settings.queue(MAINTENANCE_QUEUE),
    }
    by_queue = workers_by_queue(services)
    assert set(by_queue) == expected, f"worker queues {sorted(by_queue)} != queues of the DAGs {sorted(expected)}"
    doubled = {queue: names for queue, names in by_queue.items() if len(names) > 1}
    assert not doubled, f"queues served by more than one worker: {doubled}"


def test_instrument_workers_mount_their_share_and_the_backup(
    services: dict[str, dict[str, Any]], settings: Settings
) -> None:
    by_queue = workers_by_queue(services)
    backup = str(settings.locations.backup)
    for instrument_id, instrument in settings.instruments.items():
        (name,) = by_queue[settings.queue(instrument_id)]
        assert queues_of(services[name]) == [settings.queue(instrument_id)], f"{name} must serve only its instrument"
        mounts = mounts_of(services[name])
        assert str(instrument.path) in mounts, f"{name} does not mount {instrument.path} (the share of {instrument_id})"
        assert mounts.get(backup) is False, f"{name} must mount the backup {backup} read-write"


def test_file_mover_worker_mounts_every_share(services: dict[str, dict[str, Any]], settings: Settings) -> None:
    (name,) = workers_by_queue(services)[settings.queue(FILE_MOVER_QUEUE)]
    assert queues_of(services[name]) == [settings.queue(FILE_MOVER_QUEUE)]
    mounts = mounts_of(services[name])
    for instrument_id, instrument in settings.instruments.items():
        assert mounts.get(str(instrument.path)) is False, f"{name} must mount the share of {instrument_id} read-write"


def test_s3_worker_serves_only_its_queue_with_a_read_only_backup(
    services: dict[str, dict[str, Any]], settings: Settings
) -> None:
    (name,) = workers_by_queue(services)[settings.queue(S3_UPLOADER_QUEUE)]
    command = command_of(services[name])
    assert command[command.index("--queues") + 1] == "s3_uploader" == settings.queue(S3_UPLOADER_QUEUE)
    assert queues_of(services[name]) == ["s3_uploader"], f"{name} must serve nothing but s3_uploader: {command}"
    mounts = mounts_of(services[name])
    backup = str(settings.locations.backup)
    assert mounts.get(backup) is True, f"{name} must mount the backup {backup} read-only: {mounts}"
    shares = {str(instrument.path) for instrument in settings.instruments.values()}
    assert not shares & set(mounts), f"{name} must not see the instrument shares"


def test_maintenance_worker_serves_only_housekeeping_with_read_only_data(
    services: dict[str, dict[str, Any]], settings: Settings, filled: dict[str, str]
) -> None:
    (name,) = workers_by_queue(services)[settings.queue(MAINTENANCE_QUEUE)]
    assert queues_of(services[name]) == ["rawvault_maintenance"], "housekeeping must never wait behind uploads"
    mounts = mounts_of(services[name])
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


def test_airflow_services_share_one_configuration(services: dict[str, dict[str, Any]], filled: dict[str, str]) -> None:
    example = filled
    for name in airflow_services(services):
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
    script = " ".join(command_of(services["airflow-init"]))
    assert "airflow db migrate" in script
    assert f"airflow pools set {S3_UPLOAD_POOL} " in script
    for name in AIRFLOW_SERVICES[1:]:
        condition = services[name]["depends_on"]["airflow-init"]["condition"]
        assert condition == "service_completed_successfully", name
