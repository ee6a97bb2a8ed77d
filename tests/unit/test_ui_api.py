"""The Backups page's API: 503 naming the cause when the database or the settings fail; who sees which instrument."""

from __future__ import annotations

import pytest
from fastapi import HTTPException

from rawvault.ui import api, queries
from rawvault.ui.access import readable_instruments
from shared.db import interface
from shared.settings import get_settings

pytest_plugins = ["tests.unit.fakes"]


def _refuse(*args: object, **kwargs: object) -> None:
    raise interface.DB_ERRORS[0]("No servers found yet")


@pytest.mark.parametrize("call", [api.get_raw_files, api.get_raw_file_counts])
def test_a_failing_database_is_a_503_naming_the_cause(monkeypatch: pytest.MonkeyPatch, call) -> None:
    monkeypatch.setattr(api, "_connect", lambda: None)
    monkeypatch.setattr(queries, "list_raw_files", _refuse)
    monkeypatch.setattr(queries, "count_by_backup_status", _refuse)
    with pytest.raises(HTTPException) as raised:
        call(queries.RawFileFilter(), view=queries.PageView(), stuck_after_hours=None)
    assert raised.value.status_code == 503
    assert "No servers found yet" in raised.value.detail
    assert "RAWVAULT_MONGO_URI" in raised.value.detail


def test_an_unconfigured_database_is_a_503_naming_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(interface.ENV_VAR_MONGO_URI, raising=False)
    interface.reset_connection()
    with pytest.raises(HTTPException) as raised:
        api.get_raw_file_counts(queries.RawFileFilter(), view=queries.PageView(), stuck_after_hours=None)
    assert raised.value.status_code == 503
    assert "RAWVAULT_MONGO_URI is not set" in raised.value.detail


def test_unreadable_settings_are_a_503_naming_the_variables(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    monkeypatch.setenv("RAWVAULT_CONFIG", str(tmp_path / "missing.yaml"))
    get_settings.cache_clear()
    try:
        with pytest.raises(HTTPException) as raised:
            api.load_settings_or_503()
    finally:
        get_settings.cache_clear()
    assert raised.value.status_code == 503
    assert "set RAWVAULT_ENV or RAWVAULT_CONFIG" in raised.value.detail


def test_the_routes_need_airflow_to_say_who_the_caller_is() -> None:
    with pytest.raises(RuntimeError, match="needs Airflow's authentication"):
        api.caller_view()


def test_readable_instruments_asks_per_handler_dag_never_the_request() -> None:
    asked: list[str | None] = []

    def may_read_runs(dag_id: str | None) -> bool:
        asked.append(dag_id)
        return dag_id == "acquisition_handler.tims1"

    assert readable_instruments(["thermo1", "tims1"], may_read_runs) == frozenset({"tims1"})
    assert asked == [None, "acquisition_handler.thermo1", "acquisition_handler.tims1"]
    assert readable_instruments(["thermo1"], lambda dag_id: dag_id is None) is None  # every DAG: no restriction
    assert readable_instruments(["thermo1"], lambda dag_id: False) == frozenset()


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
