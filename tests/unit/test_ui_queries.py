"""The Backups page's queries (rawvault.ui.queries) on a real MongoDB wire-protocol server."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import pytest

from rawvault.ui.queries import (
    ENV_VAR_STUCK_AFTER_HOURS,
    InvalidFilterError,
    PageView,
    RawFileFilter,
    acquisition_runs_path,
    count_by_backup_status,
    encode_cursor,
    format_age,
    format_size,
    list_raw_files,
    stuck_after_from_env,
)
from shared.db.backups_view import Position
from shared.db.keyset import Key, Stream, read
from shared.db.models import Project, RawFile
from tests.page_rows import insert_raw_file

NOW = datetime(2026, 11, 20, 12, 0, 0, tzinfo=UTC)
STUCK_AFTER = timedelta(hours=6)

# id: (instrument, project, status, backup_status, created hours ago, updated hours ago)
SEED = {
    "old-fail.d": ("tims1", "P2", "moved", "copying_failed", 50, 49),
    "fail.raw": ("thermo1", "P1", "checksumming_done", "upload_failed", 3, 2),
    "stuck.wiff": ("zeno1", "P1", "checksumming_done", "upload_in_progress", 12, 10),
    "stuck-copy.raw": ("thermo1", "P1", "checksumming_done", "copying_in_progress", 30, 7),
    "busy.raw": ("thermo1", "P2", "checksumming_done", "upload_in_progress", 1, 0.5),
    "done.raw": ("thermo1", "P1", "moved", "upload_done", 2, 1),
    "done.d": ("tims1", "P2", "moved", "upload_done", 48, 47),
    "copied.wiff": ("zeno1", "_FALLBACK", "moving", "copying_done", 5, 4),
    "new.raw": ("thermo1", "P1", "monitoring_acquisition", None, 0.1, 0.1),
    "skipped.raw": ("thermo1", "P2", "error", "skipped", 24 * 10, 24 * 10),
}


def seed() -> None:
    for raw_file_id, row in SEED.items():
        insert_raw_file(raw_file_id, *row, now=NOW)


def ids(filters: RawFileFilter | None = None, **kwargs) -> list[str]:
    kwargs.setdefault("stuck_after", STUCK_AFTER)
    page = list_raw_files(filters, now=NOW, **kwargs)
    return [item["id"] for item in page.items]


EXPECTED_ORDER = [
    # failed (a failed backup, or status error: a failed monitor, checksum or move), newest first
    "fail.raw",
    "old-fail.d",
    "skipped.raw",
    # stuck: in progress, no update for more than 6 h
    "stuck.wiff",
    "stuck-copy.raw",
    # the rest, newest first ("busy.raw" is in progress but was updated 30 min ago)
    "new.raw",
    "busy.raw",
    "done.raw",
    "copied.wiff",
    "done.d",
]


def test_failed_then_stuck_then_newest(mongo_uri: str) -> None:
    seed()
    page = list_raw_files(now=NOW, stuck_after=STUCK_AFTER)
    assert [item["id"] for item in page.items] == EXPECTED_ORDER
    assert page.next_cursor is None and page.previous_cursor is None
    rows = {item["id"]: item for item in page.items}
    assert rows["fail.raw"]["failed"] and not rows["fail.raw"]["stuck"] and not rows["fail.raw"]["pipeline_error"]
    assert rows["skipped.raw"]["failed"] and rows["skipped.raw"]["pipeline_error"]
    assert rows["stuck.wiff"]["stuck"] and not rows["stuck.wiff"]["failed"]
    assert not rows["busy.raw"]["stuck"]
    assert rows["new.raw"]["backup_status"] is None


def walk(filters: RawFileFilter | None = None, *, limit: int, **kwargs) -> tuple[list[list[str]], list[list[str]]]:
    """The pages forward with next_cursor to the end, then back with previous_cursor to the start."""
    kwargs.setdefault("stuck_after", STUCK_AFTER)
    forward, backward = [], []
    page = list_raw_files(filters, limit=limit, now=NOW, **kwargs)
    forward.append([item["id"] for item in page.items])
    while page.next_cursor:
        page = list_raw_files(filters, limit=limit, cursor=page.next_cursor, now=NOW, **kwargs)
        forward.append([item["id"] for item in page.items])
    backward.append([item["id"] for item in page.items])
    while page.previous_cursor:
        page = list_raw_files(filters, limit=limit, cursor=page.previous_cursor, now=NOW, **kwargs)
        backward.insert(0, [item["id"] for item in page.items])
    return forward, backward


@pytest.mark.parametrize("limit", [1, 2, 3, 4, 5, 9, 10, 11])
def test_keyset_pages_walk_the_groups_as_one_list_both_ways(mongo_uri: str, limit: int) -> None:
    seed()
    forward, backward = walk(limit=limit)
    expected = [EXPECTED_ORDER[n : n + limit] for n in range(0, len(EXPECTED_ORDER), limit)]
    assert forward == expected
    assert backward == expected


def test_rows_with_the_same_created_at_are_neither_lost_nor_repeated(mongo_uri: str) -> None:
    created = NOW - timedelta(days=3)
    for n in range(7):  # one instant, in every group: the keyset's id breaks the ties
        status = ("upload_failed", "upload_done", "copying_in_progress")[n % 3]
        RawFile(id=f"tie-{n}.raw", original_name=f"tie-{n}.raw", instrument_id="thermo1", created_at=created,
                db_updated_at=NOW - timedelta(days=2), backup_status=status).save(force_insert=True)  # fmt: skip
    forward, backward = walk(limit=2)
    rows = [row for page in forward for row in page]
    assert rows == ["tie-6.raw", "tie-3.raw", "tie-0.raw", "tie-5.raw", "tie-2.raw", "tie-4.raw", "tie-1.raw"]
    assert backward == forward


def test_the_last_group_is_read_in_windows_across_years(mongo_uri: str) -> None:
    ages = [0.5, 1.5, 3, 20, 200, 900, 5000, 12000]  # days: spread over the windows 1, 8, 64, 512, 4096 days and more
    for days in ages:
        RawFile(id=f"d{days}.raw", original_name=f"d{days}.raw", instrument_id="thermo1", status="moved",
                created_at=NOW - timedelta(days=days), backup_status="upload_done").save(force_insert=True)  # fmt: skip
    expected = [f"d{days}.raw" for days in ages]
    for filters in (None, RawFileFilter(backup_status=("upload_done",)), RawFileFilter(instrument=("thermo1",))):
        forward, backward = walk(filters, limit=3)
        assert [row for page in forward for row in page] == expected
        assert backward == forward
    older = RawFileFilter(created_to=(NOW - timedelta(days=100)).date())
    assert [row for page in walk(older, limit=2)[0] for row in page] == expected[4:]


def test_a_windowed_read_without_a_position_starts_at_either_end(mongo_uri: str) -> None:
    for days in (1, 30, 400, 3000):
        RawFile(id=f"d{days}", original_name=f"d{days}", instrument_id="thermo1",
                created_at=NOW - timedelta(days=days)).save(force_insert=True)  # fmt: skip
    stream = Stream({}, lambda row: True, windowed=True)
    projection = {"_id": 1, "created_at": 1}
    oldest = read(stream, after=None, forward=False, want=2, now=NOW, projection=projection)
    assert [row["_id"] for row in oldest] == ["d3000", "d400"]
    newest = read(stream, after=None, forward=True, want=3, now=NOW, projection=projection)
    assert [row["_id"] for row in newest] == ["d1", "d30", "d400"]


def test_a_cursor_is_checked(mongo_uri: str) -> None:
    seed()
    for bad in ("nonsense", "eyJkIjoibmV4dCJ9", encode_cursor(Position(7, Key(NOW, "x")), forward=True)):
        with pytest.raises(InvalidFilterError, match="cursor: not a cursor this page gave out"):
            list_raw_files(cursor=bad, now=NOW)
    # A search's last group pages by id alone: a cursor of another listing does not fit it.
    page = list_raw_files(limit=9, now=NOW, stuck_after=STUCK_AFTER)
    with pytest.raises(InvalidFilterError, match="belongs to another search"):
        list_raw_files(RawFileFilter(search="d"), cursor=page.next_cursor, now=NOW, stuck_after=STUCK_AFTER)


def test_stuck_threshold_decides_the_group(mongo_uri: str) -> None:
    seed()
    # With 12 h, nothing is stuck: stuck-copy.raw (7 h) and stuck.wiff (10 h) sort by age among the rest.
    order = ids(stuck_after=timedelta(hours=12))
    assert order[:2] == ["fail.raw", "old-fail.d"]
    assert order.index("stuck.wiff") > order.index("done.raw")


def test_in_progress_without_update_time_counts_as_stuck(mongo_uri: str) -> None:
    RawFile(
        id="legacy.raw", original_name="legacy.raw", instrument_id="thermo1", created_at=NOW,
        backup_status="upload_in_progress",
    ).save(force_insert=True)  # fmt: skip
    RawFile.objects(id="legacy.raw").update_one(unset__db_updated_at=True)
    page = list_raw_files(now=NOW, stuck_after=STUCK_AFTER)
    assert page.items[0]["stuck"] and len(page.items) == 1
    assert count_by_backup_status(now=NOW, stuck_after=STUCK_AFTER)["stuck"] == 1


def test_a_pipeline_error_is_failed_not_stuck(mongo_uri: str) -> None:
    seed()
    # The checksum failed while the document still says copying_in_progress, untouched for 8 h.
    RawFile(
        id="err-copy.raw", original_name="err-copy.raw", instrument_id="thermo1", project_id="P1", status="error",
        status_details="compute_checksum: file changed while it was read", backup_status="copying_in_progress",
        created_at=NOW - timedelta(hours=20), db_updated_at=NOW - timedelta(hours=8),
    ).save(force_insert=True)  # fmt: skip
    order = ids()
    assert order[:4] == ["fail.raw", "err-copy.raw", "old-fail.d", "skipped.raw"]
    assert order[4:6] == ["stuck.wiff", "stuck-copy.raw"]
    row = list_raw_files(now=NOW, stuck_after=STUCK_AFTER).items[1]
    assert (row["id"], row["failed"], row["stuck"], row["pipeline_error"]) == ("err-copy.raw", True, False, True)
    assert ids(RawFileFilter(backup_status=("stuck",))) == ["stuck.wiff", "stuck-copy.raw"]
    result = count_by_backup_status(now=NOW, stuck_after=STUCK_AFTER)
    assert (result["pipeline_error"], result["stuck"], result["counts"]["copying_in_progress"]) == (2, 2, 2)


@pytest.mark.parametrize(
    ("filters", "expected"),
    [
        (RawFileFilter(instrument=("tims1",)), ["old-fail.d", "done.d"]),
        (RawFileFilter(instrument=("tims1", "zeno1")), ["old-fail.d", "stuck.wiff", "copied.wiff", "done.d"]),
        (RawFileFilter(project=("_FALLBACK",)), ["copied.wiff"]),
        (RawFileFilter(status=("moved",)), ["old-fail.d", "done.raw", "done.d"]),
        (RawFileFilter(backup_status=("upload_done",)), ["done.raw", "done.d"]),
        (RawFileFilter(backup_status=("upload_failed", "copying_failed")), ["fail.raw", "old-fail.d"]),
        (RawFileFilter(backup_status=("stuck",)), ["stuck.wiff", "stuck-copy.raw"]),
        (RawFileFilter(backup_status=("upload_in_progress",)), ["stuck.wiff", "busy.raw"]),
        (RawFileFilter(backup_status=("not_started",)), ["new.raw"]),
        (RawFileFilter(backup_status=("pipeline_error",)), ["skipped.raw"]),
        (RawFileFilter(backup_status=("pipeline_error", "upload_failed")), ["fail.raw", "skipped.raw"]),
        (RawFileFilter(status=("error",)), ["skipped.raw"]),
        (RawFileFilter(backup_status=("stuck", "not_started")), ["stuck.wiff", "stuck-copy.raw", "new.raw"]),
        (RawFileFilter(instrument=("thermo1",), project=("P2",)), ["busy.raw", "skipped.raw"]),
        (RawFileFilter(search="done"), ["done.raw", "done.d"]),  # the start of the id
        (RawFileFilter(search="DONE"), []),  # case-sensitive
        (RawFileFilter(search="one"), []),  # a prefix, not any part
        (RawFileFilter(search="stuck"), ["stuck.wiff", "stuck-copy.raw"]),
        (RawFileFilter(search="done."), ["done.raw", "done.d"]),  # "." is no pattern
        (RawFileFilter(backup_status=("unprotected",)), ["old-fail.d", "stuck-copy.raw"]),
        (RawFileFilter(instrument=("nope",)), []),
    ],
)
def test_filters(mongo_uri: str, filters: RawFileFilter, expected: list[str]) -> None:
    seed()
    assert ids(filters) == [i for i in EXPECTED_ORDER if i in expected]


def test_date_filter_takes_whole_utc_days_inclusive(mongo_uri: str) -> None:
    seed()
    today = NOW.date()  # NOW is 12:00: created up to 12 h ago is still today
    assert set(ids(RawFileFilter(created_from=today))) == {
        "fail.raw", "stuck.wiff", "busy.raw", "done.raw", "copied.wiff", "new.raw",
    }  # fmt: skip
    assert set(ids(RawFileFilter(created_to=today - timedelta(days=2)))) == {"old-fail.d", "done.d", "skipped.raw"}
    one_day = today - timedelta(days=1)
    assert set(ids(RawFileFilter(created_from=one_day, created_to=one_day))) == {"stuck-copy.raw"}


VIEW = PageView(instruments=("thermo1", "tims1", "zeno1"))


def test_counts_per_backup_status_ignore_the_backup_status_filter(mongo_uri: str) -> None:
    seed()
    for project in ("P2", "P1"):
        Project(id=project).save(force_insert=True)
    result = count_by_backup_status(
        RawFileFilter(backup_status=("upload_done",)), view=VIEW, now=NOW, stuck_after=STUCK_AFTER
    )
    assert result["total"] == len(SEED)
    assert result["counts"] == {
        "copying_in_progress": 1,
        "copying_done": 1,
        "copying_failed": 1,
        "upload_in_progress": 2,
        "upload_done": 2,
        "upload_failed": 1,
        "skipped": 1,
        "not_started": 1,
    }
    assert result["stuck"] == 2
    assert result["pipeline_error"] == 1  # skipped.raw: also counted as skipped
    # Created more than 24 h ago without a verified S3 copy: the failed copy (50 h) and the stuck copy (30 h).
    assert result["unprotected"] == 2 and result["deadline_hours"] == 24
    assert result["instruments"] == ["thermo1", "tims1", "zeno1"]  # the settings' instruments
    assert result["projects"] == ["P1", "P2", "_FALLBACK"]  # the project collection and the fallback
    assert "stuck" in result["backup_statuses"] and "moved" in result["statuses"]


def test_counts_honour_the_other_filters(mongo_uri: str) -> None:
    seed()
    result = count_by_backup_status(RawFileFilter(instrument=("tims1",)), view=VIEW, now=NOW, stuck_after=STUCK_AFTER)
    assert result["total"] == 2 and not result["total_estimated"]
    assert {k: v for k, v in result["counts"].items() if v} == {"copying_failed": 1, "upload_done": 1}
    assert result["stuck"] == 0 and result["pipeline_error"] == 0
    assert result["instruments"] == ["thermo1", "tims1", "zeno1"]  # the menu keeps every choice
    local = count_by_backup_status(view=PageView(s3=False), now=NOW, stuck_after=STUCK_AFTER)
    assert local["counts"] == count_by_backup_status(now=NOW, stuck_after=STUCK_AFTER)["counts"]
    assert local["unprotected"] == 2  # a local copy failed or still running, older than 24 h


def test_a_caller_sees_only_the_instruments_it_may_read(mongo_uri: str) -> None:
    seed()
    only_tims = PageView(instruments=("thermo1", "tims1", "zeno1"), readable=frozenset({"tims1"}))
    assert ids(view=only_tims) == ["old-fail.d", "done.d"]
    assert ids(RawFileFilter(instrument=("thermo1",)), view=only_tims) == []  # asking for another one gives nothing
    assert ids(RawFileFilter(instrument=("tims1", "zeno1")), view=only_tims) == ["old-fail.d", "done.d"]
    counts = count_by_backup_status(view=only_tims, now=NOW, stuck_after=STUCK_AFTER)
    assert counts["total"] == 2 and counts["instruments"] == ["tims1"] and counts["projects"] == ["P2"]
    nothing = PageView(instruments=("thermo1",), readable=frozenset())
    assert ids(view=nothing) == []
    empty = count_by_backup_status(view=nothing, now=NOW, stuck_after=STUCK_AFTER)
    assert empty["total"] == 0 and empty["instruments"] == [] and empty["projects"] == []


def test_empty_collection(mongo_uri: str) -> None:
    assert list_raw_files(now=NOW).as_dict()["items"] == []
    result = count_by_backup_status(now=NOW)
    assert result["total"] == 0 and result["stuck"] == 0 and result["pipeline_error"] == 0
    assert set(result["counts"].values()) == {0}


def test_row_fields(mongo_uri: str) -> None:
    RawFile(
        id="big.d",
        original_name="big.d",
        instrument_id="tims1",
        instrument_type="bruker",
        project_id="P1",
        status="moved",
        created_at=NOW - timedelta(minutes=90),
        file_info={"big.d/analysis.tdf": [1024, "m1", "e1"], "big.d/analysis.tdf_bin": [3 * 1024**3, "m2", "e2-3"]},
        backup_status="upload_failed",
        backup_status_details="upload_to_s3: ETag of big.d/analysis.tdf_bin differs: fix: clear the task",
        s3_backup_key="s3://rv-p1/tims1/2026_11/big.d/",
        s3_etag="abc-2",
    ).save(force_insert=True)
    row = list_raw_files(now=NOW).items[0]
    assert row["size"] == 3 * 1024**3 + 1024  # no size field: the sum of the set's files
    assert row["size_human"] == "3.0 GiB"
    assert row["file_count"] == 2
    assert row["age"] == "1 h"
    assert row["backup_status_details"].startswith("upload_to_s3: ETag")
    assert row["s3_backup_key"] == "s3://rv-p1/tims1/2026_11/big.d/"
    assert row["s3_etag"] == "abc-2"
    assert row["created_at"] == "2026-11-20T10:30:00+00:00"
    assert row["acquisition_runs_path"] == "dags/acquisition_handler.tims1/runs?conf_contains=%22big.d%22"
    assert (row["scrub_status"], row["scrubbed_at"], row["scrub_details"], row["last_alert"]) == (None,) * 4


def test_rows_carry_the_last_scrub_and_the_last_alert(mongo_uri: str) -> None:
    """Issue 12 item 3: last scrub time and result, and the raw file's last alert, read once per page."""
    from shared.db.alerts import record_new_alert, record_state_change

    for name, status in (("drifted.raw", "drift"), ("clean.raw", "ok"), ("never.raw", None)):
        RawFile(
            id=name, original_name=name, instrument_id="thermo1", status="moved", created_at=NOW - timedelta(hours=1),
            backup_status="upload_done", scrub_status=status, scrubbed_at=NOW - timedelta(hours=2) if status else None,
            scrub_details="drifted.raw: local copy differs: /backup/x (expected MD5 a, found MD5 b)"
            if status == "drift" else None,
        ).save(force_insert=True)  # fmt: skip
    message = {"title": "Stored data differs: drifted.raw (thermo1) failed its scrub"}
    record_new_alert("raw_file:drifted.raw", state="scrub_drift", kind="data_drift", message=message,
                     deliveries={}, now=NOW - timedelta(minutes=30))  # fmt: skip
    record_new_alert("raw_file:clean.raw", state="upload_failed", kind="failed_backup", message={"title": "x"},
                     deliveries={}, now=NOW - timedelta(days=2))  # fmt: skip
    recovered = {"title": "clean.raw recovered"}
    record_state_change("raw_file:clean.raw", expected_version=1, state="ok", kind="failed_backup",
                        message=recovered, deliveries={}, now=NOW - timedelta(days=1))  # fmt: skip

    rows = {row["id"]: row for row in list_raw_files(now=NOW).items}

    drifted = rows["drifted.raw"]
    assert drifted["scrub_status"] == "drift" and drifted["scrubbed_at"] == "2026-11-20T10:00:00+00:00"
    assert "local copy differs" in drifted["scrub_details"]
    assert drifted["last_alert"] == {
        "state": "scrub_drift", "kind": "data_drift", "open": True, "at": "2026-11-20T11:30:00+00:00",
        "title": message["title"], "last_bad_state": "scrub_drift", "last_bad_at": "2026-11-20T11:30:00+00:00",
    }  # fmt: skip
    clean = rows["clean.raw"]
    assert clean["scrub_status"] == "ok" and clean["last_alert"]["open"] is False
    assert clean["last_alert"]["state"] == "ok" and clean["last_alert"]["last_bad_state"] == "upload_failed"
    assert clean["last_alert"]["title"] == "clean.raw recovered"
    assert rows["never.raw"]["scrub_status"] is None and rows["never.raw"]["last_alert"] is None


@pytest.mark.parametrize(
    ("filters", "message"),
    [
        (lambda: RawFileFilter(backup_status=("upload_fail",)), r"backup_status: unknown value\(s\) 'upload_fail'"),
        (lambda: RawFileFilter(status=("done",)), r"status: unknown value\(s\) 'done'; use one or more of queued"),
        (
            lambda: RawFileFilter(created_from=date(2026, 2, 2), created_to=date(2026, 2, 1)),
            r"created_from \(2026-02-02\) is after created_to \(2026-02-01\): swap them",
        ),
    ],
)
def test_bad_filters_name_the_parameter_and_the_fix(filters, message: str) -> None:
    with pytest.raises(InvalidFilterError, match=message):
        filters()


@pytest.mark.parametrize(("limit", "message"), [(0, "limit: 0"), (501, "limit: 501")])
def test_bad_paging_is_refused(mongo_uri: str, limit: int, message: str) -> None:
    with pytest.raises(InvalidFilterError, match=message):
        list_raw_files(limit=limit)


def test_stuck_after_from_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(ENV_VAR_STUCK_AFTER_HOURS, raising=False)
    assert stuck_after_from_env() == timedelta(hours=6)
    monkeypatch.setenv(ENV_VAR_STUCK_AFTER_HOURS, "1.5")
    assert stuck_after_from_env() == timedelta(hours=1.5)
    for bad in ("0", "-2", "soon"):
        monkeypatch.setenv(ENV_VAR_STUCK_AFTER_HOURS, bad)
        with pytest.raises(InvalidFilterError, match=f"{ENV_VAR_STUCK_AFTER_HOURS}='{bad}' is not a positive"):
            stuck_after_from_env()


@pytest.mark.parametrize(
    ("size", "text"),
    [(None, ""), (0, "0 B"), (1023, "1023 B"), (1536, "1.5 KiB"), (5 * 1024**2, "5.0 MiB"), (2 * 1024**4, "2.0 TiB")],
)
def test_format_size(size: int | None, text: str) -> None:
    assert format_size(size) == text


@pytest.mark.parametrize(
    ("seconds", "text"), [(None, ""), (-3, "0 s"), (59, "59 s"), (61, "1 min"), (7200, "2 h"), (3 * 86400, "3 d")]
)
def test_format_age(seconds: float | None, text: str) -> None:
    assert format_age(seconds) == text


@pytest.mark.parametrize(
    ("raw_file_id", "query"),
    [
        ("a.raw", "conf_contains=%22a.raw%22"),  # quoted: matches the conf value exactly
        ("a b&c.raw", "conf_contains=%22a+b%26c.raw%22"),
        ("Ärger.raw", "conf_contains=%C3%84rger.raw"),  # JSON may escape non-ASCII: match the bare id
        ('we"ird.raw', "conf_contains=we%22ird.raw"),
    ],
)
def test_acquisition_runs_path(raw_file_id: str, query: str) -> None:
    assert acquisition_runs_path("thermo1", raw_file_id) == f"dags/acquisition_handler.thermo1/runs?{query}"
