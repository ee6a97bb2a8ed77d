"""The Backups page's API answers 503 naming the cause when the database fails (no server needed)."""

from __future__ import annotations

import pytest
from fastapi import HTTPException

from rawvault.ui import api, queries
from shared.db import interface

pytest_plugins = ["tests.unit.fakes"]


def _refuse(*args: object, **kwargs: object) -> None:
    raise interface.DB_ERRORS[0]("No servers found yet")


@pytest.mark.parametrize("call", [api.get_raw_files, api.get_raw_file_counts])
def test_a_failing_database_is_a_503_naming_the_cause(monkeypatch: pytest.MonkeyPatch, call) -> None:
    monkeypatch.setattr(api, "_connect", lambda: None)
    monkeypatch.setattr(queries, "list_raw_files", _refuse)
    monkeypatch.setattr(queries, "count_by_backup_status", _refuse)
    with pytest.raises(HTTPException) as raised:
        call(queries.RawFileFilter(), stuck_after_hours=None)
    assert raised.value.status_code == 503
    assert "No servers found yet" in raised.value.detail
    assert "RAWVAULT_MONGO_URI" in raised.value.detail


def test_an_unconfigured_database_is_a_503_naming_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(interface.ENV_VAR_MONGO_URI, raising=False)
    interface.reset_connection()
    with pytest.raises(HTTPException) as raised:
        api.get_raw_file_counts(queries.RawFileFilter(), stuck_after_hours=None)
    assert raised.value.status_code == 503
    assert "RAWVAULT_MONGO_URI is not set" in raised.value.detail


def test_stores_lists_each_probed_bucket_with_its_weaknesses(fake_db: None) -> None:
    import json
    from datetime import UTC, datetime

    from shared.db.s3_stores import save_store_capabilities

    save_store_capabilities(
        "http://127.0.0.1:9000", "facility-p1",
        {"probed_at": datetime(2026, 11, 30, tzinfo=UTC), "summary": "s3://facility-p1: ...", "versioning": "off",
         "weaknesses": ["versioning off: an object replaced or deleted by hand cannot be recovered"]},
    )  # fmt: skip
    (row,) = json.loads(api.get_stores().body)["stores"]
    assert row["bucket"] == "facility-p1" and row["probed_at"].startswith("2026-11-30T00:00:00")
    assert row["versioning"] == "off" and row["weaknesses"][0].startswith("versioning off")
