"""The command line's setup checks (issue 17 item 1): every missing setting at once, one-line database errors.

scripts/rawvault.sh reading the local stack's env file: tests/integration/test_cli_env_file.py."""

from __future__ import annotations

from pathlib import Path

import pytest

from rawvault import cli
from rawvault.cli_setup import brief_database_error, database_unreachable

REPO = Path(__file__).resolve().parents[2]
TOPOLOGY_ERROR = (
    "127.0.0.1:1: [Errno 111] Connection refused (configured timeouts: socketTimeoutMS: 20000.0ms, "
    "connectTimeoutMS: 20000.0ms), Timeout: 10.0s, Topology Description: <TopologyDescription id: 6b0d, "
    "topology_type: Unknown, servers: [<ServerDescription ('127.0.0.1', 1) server_type: Unknown, rtt: None>]>"
)


class ServerSelectionTimeoutError(Exception):
    """Stands in for pymongo's error of the same name (same message shape)."""


@pytest.fixture
def no_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("RAWVAULT_ENV", "RAWVAULT_CONFIG", "RAWVAULT_MONGO_URI", "AIRFLOW_CONN_AWS_DEFAULT"):
        monkeypatch.delenv(name, raising=False)
    from shared.settings import get_settings

    get_settings.cache_clear()


def test_every_missing_setting_is_reported_at_once_with_examples(
    no_environment: None, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(["verify"]) == cli.EXIT_CANNOT_RUN
    err = capsys.readouterr().err
    assert "3 setting(s) missing" in err
    assert "export RAWVAULT_ENV=local" in err
    assert "export RAWVAULT_MONGO_URI='mongodb://" in err
    assert "export AIRFLOW_CONN_AWS_DEFAULT='" in err and '"endpoint_url": "http://<s3 host>:<port>"' in err


def test_restore_from_the_manifest_needs_no_database(
    no_environment: None, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("RAWVAULT_ENV", "local")
    assert cli.main(["restore", "x.raw", "/tmp/nowhere", "--from-manifest", "s3://b/p/"]) == cli.EXIT_CANNOT_RUN
    err = capsys.readouterr().err
    assert "a setting is missing" in err and "AIRFLOW_CONN_AWS_DEFAULT" in err
    assert "RAWVAULT_MONGO_URI" not in err


def test_a_database_error_is_one_line_that_suggests_the_manifest() -> None:
    error = ServerSelectionTimeoutError(TOPOLOGY_ERROR)
    assert brief_database_error(error) == "ServerSelectionTimeoutError: 127.0.0.1:1: [Errno 111] Connection refused"
    line = database_unreachable(error, restore_id="a.d")
    assert "\n" not in line and "Topology" not in line
    assert "--from-manifest s3://<bucket>/<key_prefix>a.d.rawvault-manifest.json" in line


def test_the_cli_run_in_process_leaves_the_callers_logging_level_alone(
    no_environment: None, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A test running the CLI in-process once handed WARNING to a later Celery stack: no worker said "ready."."""
    import os

    monkeypatch.delenv("AIRFLOW__LOGGING__LOGGING_LEVEL", raising=False)
    assert cli.main(["verify"]) == cli.EXIT_CANNOT_RUN
    assert "AIRFLOW__LOGGING__LOGGING_LEVEL" not in os.environ
    monkeypatch.setenv("AIRFLOW__LOGGING__LOGGING_LEVEL", "DEBUG")
    assert cli.main(["verify"]) == cli.EXIT_CANNOT_RUN
    assert os.environ["AIRFLOW__LOGGING__LOGGING_LEVEL"] == "DEBUG"
    capsys.readouterr()


def test_the_cli_run_in_process_leaves_the_callers_log_handlers_alone(
    no_environment: None, capsys: pytest.CaptureFixture[str]
) -> None:
    """Its stderr handler once stayed on the root logger: every later line logged failed on a closed stream."""
    import logging

    root, botocore = logging.getLogger(), logging.getLogger("botocore")
    handlers, level, botocore_level = list(root.handlers), root.level, botocore.level
    assert cli.main(["verify"]) == cli.EXIT_CANNOT_RUN
    assert (root.handlers, root.level, botocore.level) == (handlers, level, botocore_level)
    capsys.readouterr()
