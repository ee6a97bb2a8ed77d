"""RawFile and Project through a real MongoDB wire-protocol server."""

from __future__ import annotations

import multiprocessing
from datetime import UTC, datetime, timedelta

import pytest

from shared.db import interface
from shared.db.interface import (
    DatabaseError,
    RawFileNotFoundError,
    connect_db,
    create_project,
    create_raw_file,
    failed_uploads,
    get_raw_file,
    list_raw_files_on_share,
    newer_acquisition_exists,
    queued_raw_file_ids,
    raw_files_uploading,
    reset_connection,
    select_uploaded_raw_files,
    update_raw_file,
    uploads_pending_since,
)
from shared.db.models import BackupStatus, RawFile, RawFileStatus

DAY1 = datetime(2026, 11, 1, 9, 30, 0, tzinfo=UTC)
DAY2 = datetime(2026, 11, 2, 14, 0, 0, tzinfo=UTC)


def test_create_get_update_round_trip(mongo_uri: str) -> None:
    created = create_raw_file("sample 1.raw", instrument_id="thermo1", created_at=DAY1, project_id="P1", size=10)
    assert created.id == "sample 1.raw"

    update_raw_file(
        created.id,
        file_info={"sample 1.raw": [10, "a" * 32, "a" * 32]},
        backup_status=BackupStatus.COPYING_DONE,
        status=RawFileStatus.CHECKSUMMING_DONE,
    )
    loaded = get_raw_file(created.id)
    assert loaded.file_info == {"sample 1.raw": [10, "a" * 32, "a" * 32]}
    assert loaded.backup_status == "copying_done"
    assert loaded.status == "checksumming_done"
    assert loaded.project_id == "P1"
    assert loaded.created_at == DAY1
    assert loaded.db_updated_at >= loaded.db_created_at


def test_file_info_keeps_paths_with_dots_and_slashes(mongo_uri: str) -> None:
    create_raw_file("run.d", instrument_id="tims1", created_at=DAY1)
    info = {"run.d/analysis.tdf": [1, "m", "e"], "run.d/sub dir/ä.bin": [2, "m2", "e2-2"]}
    update_raw_file("run.d", file_info=info)
    assert get_raw_file("run.d").file_info == info


def test_same_name_on_another_day_or_instrument_does_not_overwrite(mongo_uri: str) -> None:
    first = create_raw_file("blank.raw", instrument_id="thermo1", created_at=DAY1, size=1)
    other_day = create_raw_file("blank.raw", instrument_id="thermo1", created_at=DAY2, size=2)
    other_instrument = create_raw_file("blank.raw", instrument_id="thermo2", created_at=DAY1, size=3)
    same_again = create_raw_file("blank.raw", instrument_id="thermo2", created_at=DAY1, size=4)

    ids = [first.id, other_day.id, other_instrument.id, same_again.id]
    assert len(set(ids)) == 4
    assert ids[0] == "blank.raw"
    assert ids[1] == "blank.raw-thermo1-20261102T140000"
    assert ids[3] == "blank.raw-thermo2-20261101T093000-2"
    assert [get_raw_file(i).size for i in ids] == [1, 2, 3, 4]
    assert RawFile.objects.count() == 4


def test_missing_raw_file_gives_clear_error(mongo_uri: str) -> None:
    with pytest.raises(RawFileNotFoundError, match=r"raw file 'nope\.raw' is not in the database.*raw_file_id"):
        get_raw_file("nope.raw")
    with pytest.raises(RawFileNotFoundError, match=r"nope\.raw"):
        update_raw_file("nope.raw", status="moved")


def test_compare_and_set_update(mongo_uri: str) -> None:
    create_raw_file("cas.raw", instrument_id="thermo1", created_at=DAY1, backup_status="copying_done")
    claimed = update_raw_file("cas.raw", expected={"backup_status": "copying_done"}, backup_status="upload_in_progress")
    lost = update_raw_file("cas.raw", expected={"backup_status": "copying_done"}, backup_status="upload_in_progress")
    assert (claimed, lost) == (True, False)


def test_missing_uri_names_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("RAWVAULT_MONGO_URI", raising=False)
    with pytest.raises(DatabaseError, match="RAWVAULT_MONGO_URI is not set"):
        connect_db()


def test_duplicate_project_is_refused(mongo_uri: str) -> None:
    create_project("PRJ1")
    with pytest.raises(DatabaseError, match="project 'PRJ1' exists already"):
        create_project("PRJ1")


def _hammer(uri: str, field: str, rounds: int, barrier: multiprocessing.synchronize.Barrier) -> None:
    connect_db(uri)
    barrier.wait()
    for n in range(rounds):
        update_raw_file("shared.raw", **{field: f"{field}-{n}"})


def test_concurrent_processes_updating_different_fields_lose_nothing(mongo_uri: str) -> None:
    create_raw_file("shared.raw", instrument_id="thermo1", created_at=DAY1)
    rounds = 60
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(2)
    workers = [
        ctx.Process(target=_hammer, args=(mongo_uri, "status_details", rounds, barrier)),
        ctx.Process(target=_hammer, args=(mongo_uri, "backup_status_details", rounds, barrier)),
    ]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=120)
        assert worker.exitcode == 0
    loaded = get_raw_file("shared.raw")
    assert loaded.status_details == f"status_details-{rounds - 1}"
    assert loaded.backup_status_details == f"backup_status_details-{rounds - 1}"


def test_reset_connection_forgets_it_and_connect_db_connects_again(mongo_uri: str) -> None:
    create_raw_file("kept.raw", instrument_id="thermo1", created_at=DAY1)
    reset_connection()
    assert interface._connected is None
    assert get_raw_file("kept.raw").instrument_id == "thermo1"  # connects again through RAWVAULT_MONGO_URI


def test_reads_for_the_watcher_and_the_monitor(mongo_uri: str) -> None:
    older = create_raw_file("a.raw", instrument_id="thermo1", created_at=DAY1, status=RawFileStatus.QUEUED)
    create_raw_file("m.raw", instrument_id="thermo1", created_at=DAY1.replace(hour=10), status=RawFileStatus.MOVED)
    newer = create_raw_file("b.raw", instrument_id="thermo1", created_at=DAY2, status=RawFileStatus.QUEUED)
    create_raw_file("c.raw", instrument_id="thermo2", created_at=DAY2, status=RawFileStatus.QUEUED)
    update_raw_file("b.raw", status=RawFileStatus.MONITORING_ACQUISITION)

    on_share = ["a.raw", "b.raw", "m.raw", "c.raw", "unknown.raw"]
    assert [raw_file.id for raw_file in list_raw_files_on_share("thermo1", on_share)] == ["a.raw", "b.raw"]  # not moved
    assert [raw_file.id for raw_file in list_raw_files_on_share("thermo1", ["b.raw"])] == ["b.raw"]  # only those names
    assert queued_raw_file_ids("thermo1") == ["a.raw"]
    assert newer_acquisition_exists(older)
    assert not newer_acquisition_exists(newer)


def test_reads_for_the_sweeper(mongo_uri: str) -> None:
    for name, backup_status in [
        ("up.raw", "upload_in_progress"),
        ("fail.raw", "upload_failed"),
        ("done.raw", "copying_done"),
    ]:
        create_raw_file(name, instrument_id="thermo1", created_at=DAY1, backup_status=backup_status)
    assert [raw_file.id for raw_file in raw_files_uploading()] == ["up.raw"]
    assert [raw_file.id for raw_file in failed_uploads()] == ["fail.raw"]
    updated = get_raw_file("done.raw").db_updated_at
    assert [raw_file.id for raw_file in uploads_pending_since(updated)] == ["done.raw"]
    assert list(uploads_pending_since(updated - timedelta(seconds=1))) == []  # updated after the cutoff


def test_the_sweeper_never_reads_again_what_it_gave_up_on(mongo_uri: str) -> None:
    now = DAY2 + timedelta(days=30)
    for name, backup_status, attempts, updated in [
        ("retry.raw", "upload_failed", 1, now - timedelta(days=60)),  # may be retried however old
        ("legacy.raw", "upload_failed", None, now - timedelta(days=60)),  # no attempt counter: may be retried
        ("just-gave-up.raw", "upload_failed", 5, now - timedelta(hours=1)),  # to be marked given up once
        ("long-gone.raw", "upload_failed", 5, now - timedelta(days=60)),  # given up on and said so long ago
        ("pending.raw", "copying_done", 0, now - timedelta(days=60)),
        ("pending-gave-up.raw", "copying_done", 5, now - timedelta(days=60)),
    ]:
        create_raw_file(name, instrument_id="thermo1", created_at=DAY1, backup_status=backup_status)
        fields: dict = {"set__db_updated_at": updated}
        if attempts is None:
            fields["unset__s3_upload_attempts"] = True
        else:
            fields["set__s3_upload_attempts"] = attempts
        RawFile.objects(id=name).update_one(**fields)
    since = now - interface.GIVEN_UP_NOTICE
    failed = {raw_file.id for raw_file in failed_uploads(max_attempts=5, given_up_since=since)}
    assert failed == {"retry.raw", "legacy.raw", "just-gave-up.raw"}
    pending = {raw_file.id for raw_file in uploads_pending_since(now, max_attempts=5, given_up_since=since)}
    assert pending == {"pending.raw"}


def test_select_uploaded_raw_files_filters(mongo_uri: str) -> None:
    create_raw_file("x.raw", instrument_id="thermo1", created_at=DAY2, backup_status="upload_done", project_id="P1")
    create_raw_file("y.d", instrument_id="tims1", created_at=DAY1, backup_status="upload_done")
    create_raw_file("z.raw", instrument_id="thermo1", created_at=DAY1, backup_status="upload_failed")

    def ids(**filters: object) -> list[str]:
        return [raw_file.id for raw_file in select_uploaded_raw_files(**filters)]

    assert ids() == ["y.d", "x.raw"]  # upload_done only, oldest first
    assert ids(instrument="thermo1") == ["x.raw"]
    assert ids(project="_FALLBACK") == ["y.d"]  # no project: the fallback project's
    assert ids(since=DAY2.date()) == ["x.raw"]
    assert ids(raw_file_id="y.d") == ["y.d"]


def test_connecting_drops_the_indexes_no_query_uses(mongo_uri: str) -> None:
    collection = RawFile._get_collection()
    collection.create_index("original_name", name="original_name_1")
    collection.create_index([("created_at", -1)], name="created_at_-1")
    reset_connection()
    connect_db(mongo_uri)
    names = set(RawFile._get_collection().index_information())
    assert not names & {"original_name_1", "created_at_-1", "instrument_id_1", "backup_status_1"}
    assert "backup_status_1_created_at_1__id_1" in names and "instrument_id_1_original_name_1" in names
