"""Shared fixtures: a real MongoDB wire-protocol server and settings builders.

Set ``RAWVAULT_TEST_MONGO_URI`` to run the tests against a real MongoDB
instead of the bundled SecantusDB server; each test then uses its own database.
"""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

# Airflow reads its configuration when first imported: point it at a throw-away
# home with a SQLite metadata DB before any test module imports it.
REPO_ROOT = Path(__file__).resolve().parent.parent
_AIRFLOW_HOME = tempfile.mkdtemp(prefix="rawvault-airflow-test-")
atexit.register(shutil.rmtree, _AIRFLOW_HOME, ignore_errors=True)
os.environ.update(
    {
        "AIRFLOW_HOME": _AIRFLOW_HOME,
        "AIRFLOW__CORE__DAGS_FOLDER": str(REPO_ROOT / "airflow_src" / "dags"),
        "AIRFLOW__CORE__PLUGINS_FOLDER": str(REPO_ROOT / "airflow_src" / "plugins"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{_AIRFLOW_HOME}/airflow.db",
    }
)

import mongoengine
import pytest

from devtools.servers import MongoServer
from shared.db import interface

TEST_MONGO_URI_ENV = "RAWVAULT_TEST_MONGO_URI"


@pytest.fixture(scope="session")
def mongo_server() -> Iterator[str]:
    """URI of a MongoDB server for this test session (started here unless given)."""
    external = os.environ.get(TEST_MONGO_URI_ENV)
    if external:
        yield external
        return
    with MongoServer() as server:
        yield server.uri


@pytest.fixture
def mongo_uri(mongo_server: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A fresh database on the session's server, selected through ``RAWVAULT_MONGO_URI``."""
    from pymongo import uri_parser

    parsed = uri_parser.parse_uri(mongo_server)
    db_name = f"rv_test_{uuid.uuid4().hex[:12]}"
    base, _, query = mongo_server.partition("?")
    prefix = base.rsplit("/", 1)[0] if parsed.get("database") else base.rstrip("/")
    uri = f"{prefix}/{db_name}" + (f"?{query}" if query else "")
    monkeypatch.setenv(interface.ENV_VAR_MONGO_URI, uri)
    interface.connect_db(uri)
    yield uri
    mongoengine.get_connection().drop_database(db_name)
    interface.reset_connection()


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """With two workers (scripts/test.sh), the slow files first: the quick ones then fill the end of the run.

    (xdist hands out whole files in this order with ``--no-loadscope-reorder``; by default it would
    start with the files of most tests and leave the few long ones, such as the Celery stack, for last.)
    """
    if hasattr(config, "workerinput"):  # the workers collect (xdist sets their own ``dist`` option to "no")
        # By the module's own mark: a file's tests keep their order (test_celery_e2e's secrets scan runs last).
        items.sort(key=lambda item: "slow" not in _module_marks(item))


def _module_marks(item: pytest.Item) -> set[str]:
    marks = getattr(getattr(item, "module", None), "pytestmark", [])
    return {mark.name for mark in (marks if isinstance(marks, list) else [marks])}
