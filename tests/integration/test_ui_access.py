"""Who sees which raw files on the Backups page: per DAG, through a real api-server (issue 13 item 1).

The api-server runs a test auth manager with per-DAG permissions
(tests/per_dag_auth_manager.py, a subclass of the simple auth manager set as
``[core] auth_manager``): alice may read the runs of
``acquisition_handler.thermo1`` only, bob of every DAG, carol of none. Each
sees the raw files, counts and menus of what it may read, whatever query
parameters it sends (a ``dag_id`` of a DAG it may read, another instrument).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from urllib.parse import urlencode

import mongoengine
import pytest

from shared.db import interface
from shared.db.models import RawFile
from shared.db.totals import fold_totals, record_totals, totals_groups
from tests.per_dag_auth_manager import ENV_VAR_DAG_ACCESS
from tests.ui_stack import UiServer, database_uri, http, ui_server

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

NOW = datetime.now(UTC).replace(microsecond=0)
USERS = {name: ("viewer", f"{name}-{uuid.uuid4().hex[:8]}") for name in ("alice", "bob", "carol")}
DAG_ACCESS = {"alice": ["acquisition_handler.thermo1"], "bob": "*", "carol": []}
# (instrument, project, backup_status, hours ago)
SEED = {
    "t-failed.raw": ("thermo1", "P1", "upload_failed", 2),
    "t-done.raw": ("thermo1", "P1", "upload_done", 5),
    "x-secret-failed.d": ("tims1", "P2", "upload_failed", 1),
    "x-secret-done.d": ("tims1", "P3", "upload_done", 3),
    "x-secret.wiff": ("zeno1", "P3", "copying_done", 4),
}
THERMO = ["t-failed.raw", "t-done.raw"]


@pytest.fixture(scope="module")
def server(mongo_server: str) -> Iterator[UiServer]:
    mongo_uri = database_uri(mongo_server, f"rv_access_{uuid.uuid4().hex[:12]}")
    interface.connect_db(mongo_uri)
    for raw_file_id, (instrument, project, backup_status, hours) in SEED.items():
        RawFile(id=raw_file_id, original_name=raw_file_id, instrument_id=instrument, project_id=project,
                status="moved", backup_status=backup_status, created_at=NOW - timedelta(hours=hours),
                backup_status_details=f"reason of {raw_file_id}", size=1000).save(force_insert=True)  # fmt: skip
    with pytest.MonkeyPatch.context() as env:  # what the alert check records (its DAG run: test_alerts_dags)
        env.setenv(interface.ENV_VAR_MONGO_URI, mongo_uri)
        for instrument in ("thermo1", "tims1", "zeno1"):
            projects = fold_totals(totals_groups(instrument), {"upload_done"})
            record_totals(instrument, projects, verified_by="s3", now=NOW)
    try:
        with ui_server(
            mongo_uri,
            USERS,
            auth_manager="tests.per_dag_auth_manager.PerDagAuthManager",
            extra_env={ENV_VAR_DAG_ACCESS: json.dumps(DAG_ACCESS)},
            reserialize=False,
        ) as running:
            yield running
    finally:
        mongoengine.get_connection().drop_database(mongo_uri.rsplit("/", 1)[1].split("?")[0])
        interface.reset_connection()


def get(server: UiServer, user: str, path: str, **params: str):
    query = f"?{urlencode(params)}" if params else ""
    return http(f"{server.base_url}/rawvault/{path}{query}", token=server.token(user))


@pytest.mark.parametrize(
    "params",
    [
        {},
        {"dag_id": "acquisition_handler.thermo1"},  # a DAG alice may read: once enough to read everything
        {"dag_id": "acquisition_handler.tims1"},
        {"dag_id": "~"},
        {"instrument": "thermo1,tims1,zeno1"},
        {"backup_status": "upload_failed"},
        {"q": "x-secret"},
    ],
)
def test_a_user_sees_only_the_instruments_whose_dag_runs_it_may_read(server: UiServer, params: dict) -> None:
    status, page, _ = get(server, "alice", "raw-files", **params)
    assert status == 200, page
    assert {row["instrument_id"] for row in page["items"]} <= {"thermo1"}
    assert not [row for row in page["items"] if "x-secret" in json.dumps(row)]
    status, counts, _ = get(server, "alice", "raw-files/counts", **params)
    assert status == 200, counts
    assert counts["total"] <= len(THERMO) and counts["instruments"] == ["thermo1"] and counts["projects"] == ["P1"]


def test_asking_for_another_instrument_gives_nothing(server: UiServer) -> None:
    for params in ({"instrument": "tims1"}, {"instrument": "tims1", "dag_id": "acquisition_handler.tims1"}):
        status, page, _ = get(server, "alice", "raw-files", **params)
        assert (status, page["items"]) == (200, [])
        status, counts, _ = get(server, "alice", "raw-files/counts", **params)
        assert (status, counts["total"], counts["counts"]["upload_failed"]) == (200, 0, 0)


def test_the_user_of_one_instrument_gets_all_of_it(server: UiServer) -> None:
    status, page, _ = get(server, "alice", "raw-files")
    assert status == 200 and [row["id"] for row in page["items"]] == THERMO
    status, counts, _ = get(server, "alice", "raw-files/counts")
    assert counts["total"] == 2 and counts["counts"]["upload_failed"] == 1 and counts["counts"]["upload_done"] == 1


def test_a_user_of_every_dag_sees_every_instrument(server: UiServer) -> None:
    status, page, _ = get(server, "bob", "raw-files")
    assert status == 200 and {row["id"] for row in page["items"]} == set(SEED)
    status, counts, _ = get(server, "bob", "raw-files/counts")
    assert counts["total"] == len(SEED) and counts["instruments"] == ["thermo1", "tims1", "zeno1"]


def test_a_user_who_may_read_no_instrument_gets_an_empty_page(server: UiServer) -> None:
    status, page, _ = get(server, "carol", "raw-files", dag_id="acquisition_handler.thermo1")
    assert (status, page["items"]) == (200, [])
    status, counts, _ = get(server, "carol", "raw-files/counts")
    assert status == 200 and counts["total"] == 0 and counts["instruments"] == [] and counts["projects"] == []
    status, body, _ = get(server, "carol", "")  # the page itself: a login is enough, it then shows nothing
    assert status == 200 and "<title>Backups" in body


def test_totals_and_free_space_only_of_the_instruments_a_user_may_read(server: UiServer) -> None:
    """GET facility: alice gets thermo1's totals and folder only, whatever dag_id she sends; carol none; bob all."""
    for params in ({}, {"dag_id": "acquisition_handler.tims1"}, {"instrument": "tims1"}):
        status, body, _ = get(server, "alice", "facility", **params)
        assert status == 200, body
        assert [(row["instrument_id"], row["project_id"]) for row in body["totals"]] == [("thermo1", "P1")]
        row = body["totals"][0]
        assert (row["raw_files"], row["bytes"], row["verified_raw_files"], row["verified_percent"]) == (
            2,
            2000,
            1,
            50.0,
        )
        assert [folder["folder"] for folder in body["folders"]] == ["instrument:thermo1", "backup"]
        assert "x-secret" not in json.dumps(body) and "P2" not in json.dumps(body)
    status, body, _ = get(server, "carol", "facility", dag_id="acquisition_handler.thermo1")
    assert (status, body) == (200, {"folders": [], "totals": []})  # not even the backup root (it showed before)
    status, body, _ = get(server, "bob", "facility")
    assert {(row["instrument_id"], row["project_id"]) for row in body["totals"]} == {
        ("thermo1", "P1"),
        ("tims1", "P2"),
        ("tims1", "P3"),
        ("zeno1", "P3"),
    }


def test_the_s3_stores_are_only_for_users_of_every_dag(server: UiServer) -> None:
    """The stores name every project's buckets: a user of one instrument, or of none, gets 403; bob gets them."""
    for user in ("alice", "carol"):
        status, body, _ = get(server, user, "stores", dag_id="acquisition_handler.thermo1")
        assert status == 403, body
        assert "every DAG" in json.dumps(body)
    status, body, _ = get(server, "bob", "stores")
    assert status == 200 and "stores" in body
