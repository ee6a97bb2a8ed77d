"""s3_client_from_connection: an Airflow AWS connection (JSON in AIRFLOW_CONN_*) against a moto S3 server."""

from __future__ import annotations

import json
import logging
import uuid

import pytest

pytest.register_assert_rewrite("tests.s3_fixtures")  # it is imported here before pytest loads it as a plugin

from rawvault.s3.buckets import ensure_bucket  # noqa: E402
from rawvault.s3.client import s3_client_from_connection  # noqa: E402
from rawvault.s3.errors import S3AccessDeniedError, S3PermanentError  # noqa: E402
from tests.s3_fixtures import AuthS3  # noqa: E402

pytest_plugins = ["tests.s3_fixtures"]

SECRET = "Very-Secret-Key-4711"


def set_connection(monkeypatch: pytest.MonkeyPatch, conn_id: str, endpoint_url: str, **extra: object) -> None:
    """Define an Airflow connection the way deployments do: JSON in ``AIRFLOW_CONN_<ID>``."""
    value = {
        "conn_type": "aws",
        "login": "AKIATESTING",
        "password": SECRET,
        "extra": {"endpoint_url": endpoint_url, "region_name": "us-east-1", **extra},
    }
    monkeypatch.setenv(f"AIRFLOW_CONN_{conn_id.upper()}", json.dumps(value))


def test_client_from_airflow_connection(s3_server, monkeypatch, caplog, capfd) -> None:
    set_connection(monkeypatch, "aws_test", s3_server.endpoint_url)
    with caplog.at_level(logging.DEBUG):
        client = s3_client_from_connection("aws_test", "eu-central-1", 12)
        name = f"rv-conn-{uuid.uuid4().hex[:8]}"
        assert ensure_bucket(client, name, "eu-central-1", auto_create=True)
        client.put_object(Bucket=name, Key="k", Body=b"x")
    assert client.meta.endpoint_url == s3_server.endpoint_url
    assert client.meta.region_name == "eu-central-1"  # backup.s3.region wins over the connection's region_name
    config = client.meta.config
    assert config.retries == {"mode": "standard", "total_max_attempts": 8}
    assert config.max_pool_connections == 12
    assert (config.connect_timeout, config.read_timeout) == (10.0, 300.0)
    credentials = client._request_signer._credentials
    assert (credentials.access_key, credentials.secret_key) == ("AKIATESTING", SECRET)
    assert client.get_bucket_location(Bucket=name)["LocationConstraint"] == "eu-central-1"
    logged = caplog.text + "".join(capfd.readouterr())
    assert "S3 client from Airflow connection 'aws_test'" in logged  # Airflow may route logs to stdout
    assert SECRET not in logged


def test_connection_config_kwargs_are_applied(s3_server, monkeypatch) -> None:
    set_connection(monkeypatch, "aws_cfg", s3_server.endpoint_url, config_kwargs={"s3": {"addressing_style": "path"}})
    client = s3_client_from_connection("aws_cfg", "us-east-1")
    assert client.meta.config.s3 == {"addressing_style": "path"}
    assert client.meta.config.retries["mode"] == "standard"  # rawvault's settings stay


def test_missing_connection_fails_clearly(monkeypatch) -> None:
    monkeypatch.delenv("AIRFLOW_CONN_AWS_MISSING", raising=False)
    with pytest.raises(S3PermanentError, match=r"connection 'aws_missing' .*does not exist.*AIRFLOW_CONN_AWS_MISSING"):
        s3_client_from_connection("aws_missing", "us-east-1")


def test_wrong_secret_is_access_denied_and_not_logged(auth_s3: AuthS3, monkeypatch, caplog, capfd) -> None:
    set_connection(monkeypatch, "aws_wrong", auth_s3.endpoint_url)
    with caplog.at_level(logging.DEBUG), pytest.raises(S3AccessDeniedError) as info:
        client = s3_client_from_connection("aws_wrong", "us-east-1")
        ensure_bucket(client, auth_s3.bucket, "us-east-1", auto_create=False)
    assert SECRET not in caplog.text + "".join(capfd.readouterr()) + str(info.value)
