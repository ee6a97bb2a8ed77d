"""Scrubbing without S3: the selection within a budget (an index walk), the byte budget, the ranged reader, the CLI."""

from __future__ import annotations

import hashlib
import io
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from pymongo import monitoring

from rawvault import cli
from rawvault.s3.objects import ExpectedObject, VerdictKind
from rawvault.s3.readback import BudgetExhaustedError, ByteBudget, read_back
from shared.db import interface
from shared.db.models import RawFile
from shared.db.scrub import count_not_scrubbed_since, record_scrub_result, recorded_bytes, select_for_scrub

NOW = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)
MB = 10**6


def _raw_file(name: str, *, size: int, days_old: int, scrubbed_days_ago: float | None = None, **fields: Any) -> None:
    RawFile(
        id=name, original_name=name, instrument_id=fields.pop("instrument_id", "thermo1"), status="moved",
        created_at=NOW - timedelta(days=days_old), backup_status=fields.pop("backup_status", "upload_done"),
        size=size, file_info={name: [size, "0" * 32, "0" * 32]},
        scrubbed_at=NOW - timedelta(days=scrubbed_days_ago) if scrubbed_days_ago is not None else None, **fields,
    ).save(force_insert=True)  # fmt: skip


def test_least_recently_scrubbed_first_within_the_budget(mongo_uri: str) -> None:
    _raw_file("scrubbed-long-ago.raw", size=3 * MB, days_old=100, scrubbed_days_ago=60)
    _raw_file("scrubbed-lately.raw", size=1 * MB, days_old=99, scrubbed_days_ago=1)
    _raw_file("never-old.raw", size=2 * MB, days_old=50)
    _raw_file("never-new.raw", size=2 * MB, days_old=5)
    _raw_file("failed.raw", size=1 * MB, days_old=70, backup_status="upload_failed")

    chosen = select_for_scrub(budget_bytes=7 * MB)
    # Never scrubbed first (oldest acquisition first), then the least recently scrubbed; the next would not fit.
    assert chosen.raw_file_ids == ["never-old.raw", "never-new.raw", "scrubbed-long-ago.raw"]
    assert chosen.bytes == 7 * MB and chosen.too_large == []
    assert select_for_scrub(budget_bytes=4 * MB).raw_file_ids == ["never-old.raw", "never-new.raw"]
    # Raw files scrubbed after due_before are not due: the walk stops at the first one.
    due = select_for_scrub(budget_bytes=100 * MB, due_before=NOW - timedelta(days=30))
    assert due.raw_file_ids == ["never-old.raw", "never-new.raw", "scrubbed-long-ago.raw"]
    assert select_for_scrub(budget_bytes=100 * MB, instrument="tims1").raw_file_ids == []


def test_a_raw_file_larger_than_the_whole_budget_is_named_and_skipped(mongo_uri: str) -> None:
    _raw_file("huge.d", size=50 * MB, days_old=10)
    _raw_file("small.raw", size=1 * MB, days_old=9)
    chosen = select_for_scrub(budget_bytes=10 * MB)
    assert chosen.raw_file_ids == ["small.raw"] and chosen.too_large == [("huge.d", 50 * MB)]


def test_size_falls_back_to_the_file_info_of_older_documents(mongo_uri: str) -> None:
    RawFile(
        id="old.d", original_name="old.d", instrument_id="tims1", created_at=NOW, backup_status="upload_done",
        file_info={"old.d/a": [2 * MB, "0" * 32, "0" * 32], "old.d/b": [1 * MB, "0" * 32, "0" * 32]},
    ).save(force_insert=True)  # fmt: skip
    assert select_for_scrub(budget_bytes=3 * MB).bytes == 3 * MB
    assert select_for_scrub(budget_bytes=3 * MB - 1).too_large == [("old.d", 3 * MB)]
    assert recorded_bytes({"a": [5, "m", "e"], "b": "broken"}) == 5 and recorded_bytes(None, 7) == 7


class _FindRecorder(monitoring.CommandListener):
    """The ``find``/``getMore`` commands sent while ``active`` (registered once, for every later client)."""

    def __init__(self) -> None:
        self.active = False
        self.commands: list[dict[str, Any]] = []
        self.returned: list[int] = []

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        if self.active and event.command_name in ("find", "getMore"):
            self.commands.append(dict(event.command))

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        if self.active and event.command_name in ("find", "getMore"):
            cursor = event.reply.get("cursor", {})
            self.returned.append(len(cursor.get("firstBatch", cursor.get("nextBatch", []))))

    def failed(self, event: monitoring.CommandFailedEvent) -> None:
        pass


_RECORDER = _FindRecorder()
monitoring.register(_RECORDER)


@pytest.fixture
def recorder(mongo_uri: str) -> Iterator[_FindRecorder]:
    interface.reset_connection()
    interface.connect_db(mongo_uri)  # a new client: it reports to the listener
    _RECORDER.commands.clear()
    _RECORDER.returned.clear()
    yield _RECORDER
    _RECORDER.active = False


def test_the_selection_walks_the_declared_index_and_reads_only_what_it_needs(recorder: _FindRecorder) -> None:
    for n in range(300):
        _raw_file(f"f{n:03d}.raw", size=1 * MB, days_old=n % 40, scrubbed_days_ago=(n % 7) or None)
    recorder.active = True
    chosen = select_for_scrub(budget_bytes=5 * MB)
    recorder.active = False

    assert len(chosen.raw_file_ids) == 5
    assert [next(iter(command)) for command in recorder.commands] == ["find"]  # one query, no getMore
    find = recorder.commands[0]
    assert find["filter"] == {"backup_status": "upload_done"}
    assert list(find["sort"].items()) == [("scrubbed_at", 1), ("created_at", 1)]
    assert set(find["projection"]) <= {"_id", "size", "scrubbed_at"}  # never the file lists
    declared = [spec["fields"] for spec in RawFile._meta["index_specs"]]
    assert [("backup_status", 1), ("scrubbed_at", 1), ("created_at", 1)] in declared
    assert recorder.returned[0] <= 50  # one batch, not the collection


def test_results_are_recorded_and_the_behind_count_uses_the_index_fields(mongo_uri: str) -> None:
    _raw_file("a.raw", size=1, days_old=200)
    _raw_file("b.raw", size=1, days_old=200, scrubbed_days_ago=100)
    _raw_file("c.raw", size=1, days_old=200, scrubbed_days_ago=1)
    _raw_file("d.raw", size=1, days_old=1)
    assert count_not_scrubbed_since(NOW - timedelta(days=90)) == 2  # a (never, acquired long ago) and b
    record_scrub_result("a.raw", drift=["a.raw: local copy missing: /x"], at=NOW)
    record_scrub_result("b.raw", drift=[], at=NOW)
    a, b = RawFile.objects.get(id="a.raw"), RawFile.objects.get(id="b.raw")
    assert (a.scrub_status, a.scrub_details, a.scrubbed_at) == ("drift", "a.raw: local copy missing: /x", NOW)
    assert (b.scrub_status, b.scrub_details) == ("ok", None)
    record_scrub_result("b.raw", drift=["x" * 5000], at=NOW)
    assert len(RawFile.objects.get(id="b.raw").scrub_details) == 4000


# ------------------------------------------------------------------------------------- the ranged reader


class _Ranges:
    """A client whose objects answer ranged GETs from ``data``; records the ranges asked for."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.ranges: list[str] = []
        self.args: list[dict[str, Any]] = []

    def get_object(self, **args: Any) -> dict[str, Any]:
        self.args.append(args)
        self.ranges.append(args["Range"])
        start, end = (int(x) for x in args["Range"].removeprefix("bytes=").split("-"))
        return {"Body": io.BytesIO(self.data[start : end + 1])}


def _expected(data: bytes, part_size: int) -> ExpectedObject:
    parts = [data[i : i + part_size] for i in range(0, len(data), part_size)]
    md5 = hashlib.md5(data).hexdigest()
    if len(parts) <= 1:
        etag = md5
    else:
        etag = f"{hashlib.md5(b''.join(hashlib.md5(p).digest() for p in parts)).hexdigest()}-{len(parts)}"
    return ExpectedObject("x.d/a", "k/x.d/a", len(data), md5, etag)


def test_read_back_asks_one_range_per_upload_part_pinned_to_the_version() -> None:
    data = bytes(range(256)) * 40  # 10,240 bytes: 3 parts of 4,096
    client = _Ranges(data)
    budget = ByteBudget(len(data))
    verdict, count = read_back(
        client, "b", {"VersionId": "v1", "ETag": '"e"'}, _expected(data, 4096), part_size=4096, budget=budget
    )  # type: ignore[arg-type]
    assert verdict.ok and count == len(data) == budget.used
    assert client.ranges == ["bytes=0-4095", "bytes=4096-8191", "bytes=8192-10239"]
    assert all(a["VersionId"] == "v1" and "IfMatch" not in a for a in client.args)
    unversioned = _Ranges(data)
    read_back(unversioned, "b", {"ETag": '"e"'}, _expected(data, 4096), part_size=4096, budget=ByteBudget())  # type: ignore[arg-type]
    assert all(a["IfMatch"] == "e" for a in unversioned.args)  # a replaced object fails rather than being read


def test_read_back_of_other_bytes_and_of_an_empty_object() -> None:
    data = b"recorded bytes" * 100
    verdict, _ = read_back(_Ranges(data[::-1]), "b", {}, _expected(data, 512), part_size=512, budget=ByteBudget())  # type: ignore[arg-type]
    assert verdict.kind is VerdictKind.CONTENT_DIFFERS and "MD5" in verdict.problem
    empty = _Ranges(b"")
    verdict, count = read_back(empty, "b", {}, _expected(b"", 512), part_size=512, budget=ByteBudget())  # type: ignore[arg-type]
    assert verdict.ok and count == 0 and empty.ranges == []


def test_the_budget_refuses_a_read_before_it_is_made() -> None:
    data = b"x" * 10_000
    client = _Ranges(data)
    budget = ByteBudget(6_000)
    with pytest.raises(BudgetExhaustedError, match="would exceed the run's budget"):
        read_back(client, "b", {}, _expected(data, 4096), part_size=4096, budget=budget)  # type: ignore[arg-type]
    assert client.ranges == ["bytes=0-4095"] and budget.used == 4096


# ------------------------------------------------------------------------------------------------- CLI


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["verify", "--budget-gb", "5"], "--budget-gb and --no-record go with --read-data"),
        (["verify", "--read-data", "--budget-gb", "5", "--sample", "3"], "leave out --sample"),
    ],
)
def test_verify_option_combinations_that_cannot_run(argv: list[str], message: str, capsys) -> None:
    assert cli.main(argv) == cli.EXIT_CANNOT_RUN
    assert message in capsys.readouterr().err


@pytest.mark.parametrize("value", ["0", "-1", "x", "inf"])
def test_budget_must_be_a_positive_number_of_gb(value: str, capsys) -> None:
    with pytest.raises(SystemExit):
        cli.build_parser().parse_args(["verify", "--read-data", "--budget-gb", value])
    assert "positive number of GB" in capsys.readouterr().err
