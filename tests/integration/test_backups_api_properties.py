"""Property-based tests: any query parameters a caller sends to the Backups API give 200 or a 422 with a message.

The real route handlers (``get_raw_files``, ``get_raw_file_counts``) and the real FastAPI
dependency ``raw_file_filter`` run behind FastAPI's own request parsing, against the
MongoDB wire server holding raw files with outsider-chosen names. Airflow's
authentication is not part of these apps (the parameters are what is under test here;
access is tested with the api-server). Never a 500, never a traceback in the answer.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from hypothesis import example, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from rawvault.ui import api, queries
from shared.db import backups_view
from shared.db.models import BackupStatus, RawFile, RawFileStatus
from tests.properties import examples

PARAMETERS = ("backup_status", "status", "instrument", "project", "created_from", "created_to", "q", "limit",
              "cursor", "stuck_after_hours")  # fmt: skip
# Names an acquisition may have on a share (valid UTF-8: others are never registered).
TRICKY_IDS = ["plain.raw", "a\nb.raw", '"quoted".raw', "back\\slash.d", "<script>alert(1)</script>.raw",
              "Größe – Probe 1.wiff", "x" * 255, "100%.raw", "a&b=c?.raw", "\u202eevil.raw", "tab\t.raw"]  # fmt: skip
NOW = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)

texts = st.one_of(
    st.text(max_size=40),
    st.sampled_from([*queries.BACKUP_STATUS_FILTER_VALUES, *queries.RAW_FILE_STATUS_VALUES, "", ",", " , ,",
                     "upload_done,stuck", "$where", '{"$ne": null}', ".*", "(", "\\", "x" * 300, "\0", "%00",
                     "thermo1", "P1", "NaN", "inf", "-1", "1e309", "9" * 40, "0x10"]),
)  # fmt: skip
# The last representable day is left out here: test_the_last_day_as_created_to_is_not_a_500 is that finding.
days = st.dates(max_value=date.max - timedelta(days=1)).map(date.isoformat)
values = st.one_of(texts, days, st.integers().map(str), st.floats().map(str))
query = st.lists(st.tuples(st.one_of(st.sampled_from(PARAMETERS), st.text(max_size=12)), values), max_size=8)


@pytest.fixture
def client(mongo_uri: str) -> Iterator[TestClient]:
    """The Backups API's routes without Airflow's auth dependency, over raw files with tricky names."""
    for index, raw_file_id in enumerate(TRICKY_IDS):
        RawFile(
            id=raw_file_id,
            original_name=raw_file_id,
            instrument_id=["thermo1", "tims1", "zeno1"][index % 3],
            project_id=["P1", None, "_FALLBACK"][index % 3],
            status=list(RawFileStatus)[index % len(RawFileStatus)].value,
            backup_status=list(BackupStatus)[index % len(BackupStatus)].value,
            status_details=f"details of {raw_file_id}",
            file_info={f"{raw_file_id}/f": [1, "m", "e"]},
            created_at=NOW - timedelta(hours=index),
        ).save(force_insert=True)
    app = FastAPI()
    app.dependency_overrides[api.caller_view] = lambda: queries.PageView(instruments=("thermo1", "tims1", "zeno1"))
    app.add_api_route("/raw-files", api.get_raw_files, methods=["GET"])
    app.add_api_route("/raw-files/counts", api.get_raw_file_counts, methods=["GET"])
    with TestClient(app, raise_server_exceptions=False) as test_client:
        yield test_client


def _assert_answer(response: Any, route: str, params: list) -> None:
    assert response.status_code in (200, 422), f"{route} {params!r} -> {response.status_code}: {response.text[:500]}"
    body = response.json()
    if response.status_code == 422:
        detail = body["detail"]
        assert detail and "Traceback" not in json.dumps(detail), body
    elif route == "/raw-files":
        assert 0 <= len(body["items"]) <= body["limit"] and {"next_cursor", "previous_cursor"} <= set(body), body
        for item in body["items"]:
            assert item["acquisition_runs_path"].startswith(f"dags/acquisition_handler.{item['instrument_id']}/runs?")
    else:
        assert set(body["counts"]) >= {status.value for status in BackupStatus}, body


@hypothesis_settings(max_examples=examples(60))
@given(params=query, route=st.sampled_from(["/raw-files", "/raw-files/counts"]))
@example(params=[("created_from", "0001-01-01"), ("created_to", "9999-12-30")], route="/raw-files")
@example(params=[("limit", "9" * 40), ("cursor", "-1")], route="/raw-files")
@example(params=[("cursor", "eyJkIjoibmV4dCIsImciOjIsInQiOm51bGwsImkiOjF9")], route="/raw-files")  # an id not text
@example(params=[("cursor", "x" * 3000)], route="/raw-files")
@example(params=[("stuck_after_hours", "nan")], route="/raw-files/counts")
@example(params=[("q", "(" * 200)], route="/raw-files")
# The next code point after U+D7FF is a surrogate, which BSON cannot encode (both were 500s).
@example(params=[("q", "\ud7ff")], route="/raw-files")
@example(params=[("q", "a\ud7ff")], route="/raw-files/counts")
# A cursor whose id is a lone surrogate ("i":"\ud800").
@example(params=[("cursor", "eyJkIjoibmV4dCIsImciOjIsInQiOm51bGwsImkiOiJcdWQ4MDAifQ")], route="/raw-files")
@example(params=[("instrument", '{"$ne": null}'), ("project", "$where")], route="/raw-files")
def test_any_query_gives_a_page_or_a_422_never_a_500(client: TestClient, params: list, route: str) -> None:
    _assert_answer(client.get(route, params=params), route, params)


@hypothesis_settings(max_examples=examples(200))
@given(
    backup_status=st.lists(texts, max_size=4),
    status=st.lists(texts, max_size=4),
    instrument=st.lists(texts, max_size=3),
    created_from=st.none() | st.dates(max_value=date.max - timedelta(days=1)),
    created_to=st.none() | st.dates(max_value=date.max - timedelta(days=1)),
    q=st.text(max_size=250),
)
def test_the_filter_dependency_gives_a_usable_filter_or_a_422(
    backup_status: list[str],
    status: list[str],
    instrument: list[str],
    created_from: date | None,
    created_to: date | None,
    q: str,
) -> None:
    """``raw_file_filter`` called directly: a filter the queries can use, or HTTPException 422 naming the parameter."""
    try:
        filters = api.raw_file_filter(backup_status, status, instrument, [], created_from, created_to, q)
    except api.HTTPException as error:
        named = [parameter for parameter in PARAMETERS if str(error.detail).startswith(parameter)]
        assert error.status_code == 422 and named, error.detail
        return
    backups_view.filter_query(filters, CONTEXT)  # builds without touching MongoDB; must not raise


CONTEXT = queries.PageView().context(NOW, timedelta(hours=6))


def test_the_last_day_as_created_to_is_not_a_500() -> None:
    """The last day a date can hold: no day after it to stop before, so no upper bound (it was an OverflowError)."""
    filters = api.raw_file_filter([], [], [], [], date.max - timedelta(days=3), date.max, "")
    assert backups_view.filter_query(filters, CONTEXT) == {
        "created_at": {"$gte": datetime.combine(date.max - timedelta(days=3), datetime.min.time(), tzinfo=UTC)}
    }
