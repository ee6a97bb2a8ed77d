"""In-process fakes for unit tests: MongoDB through mongomock, S3 through moto's ``mock_aws``.

Use from a test module with ``pytest_plugins = ["tests.unit.fakes"]``.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import boto3
import mongoengine
import mongomock
import pytest
from moto import mock_aws

from shared.db import interface

FAKE_MONGO_URI = "mongomock://rawvault-unit"
REGION = "us-east-1"


@pytest.fixture
def fake_db(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """An empty in-memory MongoDB behind ``shared.db.interface`` (mongomock)."""
    interface.reset_connection()
    mongoengine.connect(
        "rawvault_unit",
        host="mongodb://localhost",
        mongo_client_class=mongomock.MongoClient,
        tz_aware=True,
        uuidRepresentation="standard",
    )
    monkeypatch.setenv(interface.ENV_VAR_MONGO_URI, FAKE_MONGO_URI)
    monkeypatch.setattr(interface, "_connected", (os.getpid(), FAKE_MONGO_URI))
    yield
    interface.reset_connection()


@pytest.fixture
def fake_s3(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """A boto3 S3 client on moto's in-process mock (nothing leaves the process)."""
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.setenv(name, "testing")
    with mock_aws():
        yield boto3.client("s3", region_name=REGION)
