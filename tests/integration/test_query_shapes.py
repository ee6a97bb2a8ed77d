"""Every MongoDB command of a page load, a watcher run, a sweep, an alert check and a verify sample, by shape.

pymongo's command monitoring records what the project's own functions send
(tests/query_shapes.py); each command is checked against the indexes the
models declare with MongoDB's planner rules, and a page load (list + chips)
is bounded in commands. The wire server of the tests plans differently
(see bench/README.md), so its plans are never consulted.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace

import pytest

from shared.db.alerts import AlertRecord
from shared.db.free_space import FreeSpace
from shared.db.models import Project, RawFile
from shared.db.s3_stores import S3Store
from shared.db.totals import InstrumentTotals
from tests.command_recorder import CommandRecorder, documents_read, ids_read, query_commands, recording_connection
from tests.pipeline_env import write_pipeline_env
from tests.query_shapes import declared_indexes, problems

pytestmark = pytest.mark.slow  # quick mode (scripts/test.sh --quick) leaves it out: over 15 s

NOW = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)
INDEXES = {
    "raw_file": declared_indexes(RawFile),
    "project": declared_indexes(Project),
    "alert_state": declared_indexes(AlertRecord),
    "s3_store": declared_indexes(S3Store),
    "free_space": declared_indexes(FreeSpace),
    "instrument_totals": declared_indexes(InstrumentTotals),
}
# One page load is the list and the chips: a bounded number of queries, whatever the collection's size.
MAX_QUERIES_PER_PAGE_LOAD = 16
S3_BACKUP = {"backup_type": "s3", "s3": {"region": "us-east-1", "bucket_prefix": "rv-shapes", "part_size_mb": 5}}
INSTRUMENTS = ("thermo1", "tims1", "zeno1")
# (backup_status, status, hours since the last update) of the seeded raw files, cycled over instruments.
KINDS = [
    ("upload_done", "moved", 40),
    ("upload_done", "moved", 30),
    ("upload_done", "error", 30),
    ("upload_failed", "moved", 20),
    ("copying_failed", "checksumming_done", 20),
    ("upload_in_progress", "moving", 10),
    ("upload_in_progress", "moving", 0.1),
    ("copying_in_progress", "checksumming_done", 9),
    ("copying_done", "moving", 8),
    (None, "queued", 0.2),
    (None, "error", 1),
    ("skipped", "moved", 50),
]


def seed() -> None:
    """Raw files of every kind on three instruments and three projects over four months."""
    documents = []
    for n in range(96):
        backup_status, status, updated_hours = KINDS[n % len(KINDS)]
        created = NOW - timedelta(hours=n * 30)
        fields = {"backup_status": backup_status} if backup_status else {}
        if backup_status == "upload_done":
            fields.update(s3_backup_key=f"s3://rv-shapes-p{n % 3}/x/", s3_etag=f"{n:032x}",
                          file_info={f"{n}.raw": [10, f"{n:032x}", f"{n:032x}"]})  # fmt: skip
        if backup_status == "upload_failed":
            fields.update(s3_upload_attempts=n % 4, s3_upload_attempted_at=NOW - timedelta(hours=updated_hours + 1))
        name = f"{created:%Y%m%d_%H%M}_P{n % 3}_{n}.raw"
        document = RawFile(
            id=name, original_name=name, instrument_id=INSTRUMENTS[n % 3], instrument_type="thermo",
            project_id=f"P{n % 3}", status=status, created_at=created,
            db_updated_at=NOW - timedelta(hours=updated_hours), size=1000 + n, **fields,
        )  # fmt: skip
        documents.append(document)
    for document in documents:
        document.save(force_insert=True)
    for project in ("P0", "P1", "P2"):
        Project(id=project, name=project).save(force_insert=True)


@pytest.fixture
def recorder(mongo_uri: str) -> Iterator[CommandRecorder]:
    seed()
    with recording_connection(mongo_uri) as recorder:
        yield recorder


def assert_indexed(commands, what: str) -> None:
    found = problems(commands, INDEXES)
    assert not found, f"{what}: {len(found)} of {len(commands)} command(s) MongoDB cannot answer from an index:\n" + (
        "\n".join(found)
    )


# --- the Backups page --------------------------------------------------------------------------------


def page_filters() -> dict[str, object]:
    from rawvault.ui.queries import RawFileFilter

    month = date(2026, 10, 1)
    return {
        "no filter": RawFileFilter(),
        "one instrument": RawFileFilter(instrument=("tims1",)),
        "one project": RawFileFilter(project=("P1",)),
        "upload_failed": RawFileFilter(backup_status=("upload_failed",)),
        "upload_done": RawFileFilter(backup_status=("upload_done",)),
        "stuck": RawFileFilter(backup_status=("stuck",)),
        "not started": RawFileFilter(backup_status=("not_started",)),
        "pipeline error": RawFileFilter(backup_status=("pipeline_error",)),
        "status moved": RawFileFilter(status=("moved",)),
        "search": RawFileFilter(search="202610"),
        "one month": RawFileFilter(created_from=month, created_to=date(2026, 10, 31)),
        "instrument and month": RawFileFilter(instrument=("zeno1",), created_from=month),
    }


def load_page(filters, *, limit: int = 10) -> list[str]:
    """What the page loads: the list, the chips, free space and totals (GET facility). Returns the listed ids."""
    from rawvault.ui.facility import free_space_rows, totals_rows
    from rawvault.ui.queries import count_by_backup_status, list_raw_files

    page = list_raw_files(filters, limit=limit, now=NOW, stuck_after=timedelta(hours=6))
    count_by_backup_status(filters, now=NOW, stuck_after=timedelta(hours=6))
    free_space_rows(("thermo1", "tims1", "zeno1"), NOW)
    totals_rows(("thermo1", "tims1", "zeno1"), NOW)  # the recorded snapshot, by _id: the page never aggregates
    return [item["id"] for item in page.items]


@pytest.mark.parametrize("name", list(page_filters()))
def test_a_page_load_reads_through_indexes_only(recorder: CommandRecorder, name: str) -> None:
    filters = page_filters()[name]
    with recorder.recording() as commands:
        load_page(filters)
    assert_indexed(commands, f"page load ({name})")
    assert len(query_commands(commands)) <= MAX_QUERIES_PER_PAGE_LOAD, "\n".join(map(str, commands))


def page_through(filters, limit: int) -> tuple[list[str], list[str]]:
    """Every row, page by page forward, then back from the last page: the ids seen each way."""
    from rawvault.ui.queries import list_raw_files

    def page(cursor):
        return list_raw_files(filters, limit=limit, cursor=cursor, now=NOW, stuck_after=timedelta(hours=6))

    forward: list[str] = []
    current = page(None)
    forward += [item["id"] for item in current.items]
    while current.next_cursor:
        current = page(current.next_cursor)
        forward += [item["id"] for item in current.items]
    backward = [item["id"] for item in current.items]
    while current.previous_cursor:
        current = page(current.previous_cursor)
        backward = [item["id"] for item in current.items] + backward
    return forward, backward


def test_paging_forward_and_back_reads_through_indexes_only(recorder: CommandRecorder) -> None:
    from rawvault.ui.queries import RawFileFilter

    with recorder.recording() as commands:
        forward, backward = page_through(RawFileFilter(), limit=7)
    assert len(forward) == RawFile.objects.count() and len(set(forward)) == len(forward)
    assert backward == forward
    assert_indexed(commands, "paging forward and back")


# --- watcher, sweeper, alerts, verify ----------------------------------------------------------------


def test_a_watcher_run_reads_through_indexes_only(recorder: CommandRecorder, tmp_path: Path) -> None:
    from rawvault.watcher import raw_files_to_start

    env = write_pipeline_env(tmp_path)
    share = env.instrument_path("thermo1")
    for name in ("20261120_P1_new.raw", "20261120_P2_other.raw"):
        (share / name).write_bytes(b"acquired")
    queued = RawFile.objects(instrument_id="thermo1", status="queued").count()
    with recorder.recording() as commands:
        started = raw_files_to_start("thermo1", env.settings)
    assert "20261120_P1_new.raw" in started
    assert_indexed(commands, "watcher run")
    # What is on the share and what is queued, never the instrument's history (errors stay for years).
    assert documents_read(commands) <= 2 + queued, "\n".join(f"{c} -> {c.returned}" for c in commands)


def test_a_sweep_reads_through_indexes_only(recorder: CommandRecorder, tmp_path: Path) -> None:
    from rawvault.sweeper import sweep

    settings = write_pipeline_env(tmp_path, backup=S3_BACKUP).settings
    # Uploads given up on years ago (and said so): they stay upload_failed, and a sweep has nothing to do with them.
    for n in range(20):
        RawFile(
            id=f"given-up-{n}.raw", original_name=f"given-up-{n}.raw", instrument_id="thermo1", status="moved",
            created_at=NOW - timedelta(days=700 + n), backup_status="upload_failed", s3_upload_attempts=9,
            s3_upload_attempted_at=NOW - timedelta(days=690), s3_upload_failed_at=NOW - timedelta(days=690),
            backup_status_details="gave up after 9 attempts; clear upload_to_s3 to retry by hand. Last error: x",
            db_updated_at=NOW - timedelta(days=690),
        ).save(force_insert=True)  # fmt: skip
    with recorder.recording() as commands:
        report = sweep(settings, NOW)
    assert_indexed(commands, "sweep")
    assert not any(raw_file_id.startswith("given-up-") for raw_file_id in report.gave_up)
    assert not {i for i in ids_read(commands) if str(i).startswith("given-up-")}, "\n".join(map(str, commands))


def _disk_usage(path: Path) -> SimpleNamespace:
    return SimpleNamespace(total=10**12, used=10**11, free=9 * 10**11)


def test_an_alert_check_and_the_digest_read_through_indexes_only(recorder: CommandRecorder, tmp_path: Path) -> None:
    from rawvault.alerts.check import run_check
    from rawvault.alerts.digest import digest_message

    settings = write_pipeline_env(tmp_path, backup=S3_BACKUP).settings
    with recorder.recording() as commands:
        run_check(settings, {}, now=NOW, disk_usage=_disk_usage)
        run_check(settings, {}, now=NOW + timedelta(minutes=10), disk_usage=_disk_usage)
        digest_message(settings, day=NOW.date(), now=NOW, disk_usage=_disk_usage)
    assert_indexed(commands, "alert check and digest")
    # An allowed maintenance read: the totals per instrument and project (shared.db.totals) read all of one
    # instrument's raw files, one $match on instrument_id (an index prefix) + $group per instrument, at most
    # hourly on the maintenance queue (the second check ten minutes later sends none); the page never does.
    totals = [c for c in commands if c.name == "aggregate" and "'project_id': '$project_id'" in str(c.body)]
    matches = [c.body["pipeline"][0]["$match"] for c in totals]
    assert sorted(m["instrument_id"] for m in matches) == sorted(settings.instruments) and all(
        set(m) == {"instrument_id"} for m in matches
    ), matches


class _AllPresent:
    """An S3 client whose every object is there with the recorded size and ETag (verify reads only the DB here)."""

    meta = SimpleNamespace(endpoint_url="http://127.0.0.1:9")  # the store's record is looked up by endpoint

    def head_object(self, Bucket: str, Key: str, **kwargs) -> dict:  # noqa: N803 - boto3's names
        number = int(Key.rsplit("/", 1)[-1].split(".")[0]) if Key.endswith(".raw") else 0
        return {"ContentLength": 10, "ETag": f'"{number:032x}"'}


def test_a_verify_sample_reads_through_indexes_only(recorder: CommandRecorder) -> None:
    from rawvault.audit import AuditSelection, verify_backups

    with recorder.recording() as commands:
        report = verify_backups(_AllPresent(), AuditSelection(sample=5, seed=7))
    assert len(report.raw_file_ids) == 5 and report.matched == RawFile.objects(backup_status="upload_done").count()
    assert_indexed(commands, "verify sample")
    # The sample in a few queries, not one per raw file, and never every id of every upload_done raw file.
    # (Plus one s3_store point lookup per bucket: the store's recorded ETag shape.)
    on_raw_file = [command for command in query_commands(commands) if command.collection == "raw_file"]
    assert len(on_raw_file) <= 4, "\n".join(map(str, commands))
    assert documents_read(commands) <= 2 * 5, "\n".join(f"{c} -> {c.returned}" for c in commands)


# --- the purge, the re-drive, the scrub and the coverage report (their reads in shared/db) -------------


def other_reads() -> dict[str, object]:
    from shared.db.coverage import unprotected_raw_files
    from shared.db.purge import purge_candidates
    from shared.db.redrive_queries import handler_unfinished, redrive_counts
    from shared.db.scrub import count_not_scrubbed_since, select_for_scrub

    return {
        "purge candidates": lambda: purge_candidates("tims1"),
        "re-drive: unfinished handlers": handler_unfinished,
        "re-drive: counts": lambda: redrive_counts(["20261120_1200_P0_0.raw", "no-such.raw"]),
        "scrub: selection": lambda: select_for_scrub(budget_bytes=10**5, due_before=NOW - timedelta(days=30)),
        "scrub: not scrubbed since": lambda: count_not_scrubbed_since(NOW - timedelta(days=30)),
        "coverage": lambda: unprotected_raw_files(s3=True, overdue_before=NOW - timedelta(hours=24)),
        "coverage of one instrument": lambda: unprotected_raw_files(
            s3=True, overdue_before=NOW - timedelta(hours=24), instrument="zeno1"
        ),
    }


@pytest.mark.parametrize("name", list(other_reads()))
def test_the_purge_redrive_scrub_and_coverage_read_through_indexes_only(recorder: CommandRecorder, name: str) -> None:
    read = other_reads()[name]
    RawFile.objects(backup_status="upload_done").limit(3).update(set__scrubbed_at=NOW - timedelta(days=40))
    with recorder.recording() as commands:
        read()  # type: ignore[operator]
    assert_indexed(commands, name)
