"""The alert ledger on the MongoDB wire server: compare-and-set changes, exclusive deliveries, one message per change.

Senders here are plain callables (no Airflow): what the ledger decides to send
is what they collect. The same flows through real channels and DAG runs are in
``test_alerts_dags.py``.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from rawvault.alerts.check import run_check, run_digest
from rawvault.alerts.delivery import DeliveryError, deliver_pending
from shared.db.alerts import (
    AlertRecord,
    DeliveryStatus,
    claim_delivery,
    finish_delivery,
    fresh_delivery,
    record_new_alert,
    record_state_change,
)
from shared.db.interface import create_raw_file, update_raw_file, utc_now
from shared.settings import Settings, parse_settings
from shared.settings.alerts import GB

CHANNELS = {"email": {"to": ["team@facility.test"]}, "slack": {}, "webhook": {}}


class Collector:
    """A channel: collects what it is sent; ``down`` makes it fail like a refused connection."""

    def __init__(self) -> None:
        self.messages: list[dict[str, Any]] = []
        self.down = False
        self.lock = threading.Lock()

    def __call__(self, message: dict[str, Any]) -> None:
        if self.down:
            raise DeliveryError("connection refused")
        with self.lock:
            self.messages.append(message)

    def subjects(self) -> list[str]:
        return [message["subject"] for message in self.messages]


def _settings(tmp_path: Path, **alerts: Any) -> Settings:
    raw = {
        "instruments": {"thermo1": {"type": "thermo", "path": str(tmp_path / "thermo1")}},
        "locations": {"backup": str(tmp_path / "backup")},
        "backup": {"backup_type": "s3", "s3": {"region": "us-east-1", "bucket_prefix": "rv-ledger"}},
        "alerts": {
            "enabled": True,
            "channels": CHANNELS,
            "free_space": {"instrument_min_free_gb": 0, "backup_min_free_gb": 0},
            **alerts,
        },
    }
    return parse_settings(raw, tmp_path / "rawvault.yaml")


def _plenty(path: Path) -> Any:
    return type("Usage", (), {"total": 100 * GB, "used": 0, "free": 100 * GB})()


def _check(settings: Settings, senders: dict[str, Callable[[dict[str, Any]], None]], **kwargs: Any) -> Any:
    return run_check(settings, senders, disk_usage=_plenty, **kwargs)


def _failed(name: str, hours_ago: float = 1, **fields: Any) -> None:
    create_raw_file(
        name,
        instrument_id="thermo1",
        created_at=utc_now() - timedelta(hours=hours_ago),
        status="error",
        status_details="compute_checksum: unreadable",
        **fields,
    )


@pytest.fixture
def senders() -> dict[str, Collector]:
    return {"email": Collector(), "slack": Collector(), "webhook": Collector()}


def test_of_concurrent_inserts_and_stale_compare_and_sets_exactly_one_wins(mongo_uri: str) -> None:
    results: list[bool] = []
    barrier = threading.Barrier(8)

    def insert() -> None:
        barrier.wait()
        results.append(
            record_new_alert(
                "raw_file:a",
                state="upload_failed",
                kind="failed_backup",
                message={},
                deliveries={"email": fresh_delivery()},
            )
        )

    threads = [threading.Thread(target=insert) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(results) == [False] * 7 + [True]
    change = {"state": "ok", "kind": "failed_backup", "message": {}, "deliveries": {}}
    assert record_state_change("raw_file:a", expected_version=1, **change)
    assert not record_state_change("raw_file:a", expected_version=1, **change)  # read before the change: loses
    record = AlertRecord.objects(id="raw_file:a").get()
    assert (record.state, record.version, record.last_bad_state) == ("ok", 2, "upload_failed")


def test_a_delivery_is_claimed_by_one_sender_and_a_dead_senders_claim_expires(mongo_uri: str) -> None:
    record_new_alert(
        "raw_file:a", state="deadline", kind="deadline", message={}, deliveries={"slack": fresh_delivery()}
    )
    now = utc_now()
    lease = timedelta(minutes=10)
    assert claim_delivery("raw_file:a", 1, "slack", "first", lease=lease, now=now)
    assert not claim_delivery("raw_file:a", 1, "slack", "second", lease=lease, now=now + timedelta(minutes=9))
    assert not claim_delivery("raw_file:a", 1, "email", "second", lease=lease, now=now)  # not a pending channel
    # The first sender died mid-send: once its lease ran out another may send (twice rather than never).
    assert claim_delivery("raw_file:a", 1, "slack", "second", lease=lease, now=now + timedelta(minutes=11))
    assert not finish_delivery("raw_file:a", 1, "slack", "first", status=DeliveryStatus.SENT)  # no longer its claim
    assert finish_delivery("raw_file:a", 1, "slack", "second", status=DeliveryStatus.SENT)
    record = AlertRecord.objects(id="raw_file:a").get()
    assert record.pending_channels == [] and record.deliveries["slack"]["attempts"] == 2


def test_one_message_per_change_a_summary_for_a_storm_and_the_first_check_as_baseline(
    tmp_path: Path, mongo_uri: str, senders: dict[str, Collector]
) -> None:
    settings = _settings(tmp_path, max_messages_per_check=3)
    _failed("old.raw", hours_ago=100)
    first = _check(settings, senders)
    assert first.recorded.baseline and senders["email"].subjects() == ["ledger:baseline"]
    for n in range(5):
        _failed(f"new-{n}.raw")
    for _ in range(3):
        _check(settings, senders)
    subjects = senders["webhook"].subjects()
    assert subjects[1:4] == ["raw_file:new-0.raw", "raw_file:new-1.raw", "raw_file:new-2.raw"]
    assert subjects[4].startswith("summary:") and len(subjects) == 5
    summary = senders["webhook"].messages[4]
    assert summary["lines"] == [
        "- Backup failed: new-3.raw (thermo1) at compute_checksum",
        "- Backup failed: new-4.raw (thermo1) at compute_checksum",
    ]
    assert senders["email"].subjects() == senders["slack"].subjects() == subjects


def test_a_recovery_goes_only_where_the_problem_went_and_in_transit_is_no_recovery(
    tmp_path: Path, mongo_uri: str, senders: dict[str, Collector]
) -> None:
    settings = _settings(tmp_path)
    _check(settings, senders)  # baseline
    create_raw_file(
        "u.raw",
        instrument_id="thermo1",
        created_at=utc_now(),
        backup_status="upload_failed",
        backup_status_details="S3 down",
        s3_upload_attempts=1,
    )
    senders["slack"].down = True
    _check(settings, senders)
    assert AlertRecord.objects(id="raw_file:u.raw").get().deliveries["slack"]["status"] == "pending"
    # A retry is running: neither a new alert nor a recovery, however often the check runs.
    update_raw_file(
        "u.raw",
        backup_status="upload_in_progress",
        upload_claim_owner="w",
        upload_claim_expires_at=utc_now() + timedelta(minutes=10),
    )
    for _ in range(2):
        _check(settings, senders)
    update_raw_file("u.raw", backup_status="upload_done", upload_claim_owner=None)
    senders["slack"].down = False
    for _ in range(2):
        _check(settings, senders)
    assert senders["email"].subjects()[1:] == ["raw_file:u.raw", "raw_file:u.raw"]
    assert [m["state"] for m in senders["email"].messages[1:]] == ["upload_failed", "ok"]
    # Slack never heard of the failure (it was down), so it gets no recovery either, and the failure is dropped.
    assert senders["slack"].subjects() == ["ledger:baseline"]
    record = AlertRecord.objects(id="raw_file:u.raw").get()
    assert record.deliveries["slack"]["status"] == "skipped" and record.pending_channels == []


def test_two_concurrent_checks_send_each_message_once(
    tmp_path: Path, mongo_uri: str, senders: dict[str, Collector]
) -> None:
    settings = _settings(tmp_path)
    _check(settings, senders)  # baseline
    for n in range(6):
        _failed(f"f-{n}.raw")
    barrier = threading.Barrier(2)

    def check() -> None:
        barrier.wait()
        _check(settings, senders)

    threads = [threading.Thread(target=check) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for collector in senders.values():
        assert sorted(collector.subjects()[1:]) == [f"raw_file:f-{n}.raw" for n in range(6)]


def test_undeliverable_messages_expire_and_vanished_raw_files_are_closed(
    tmp_path: Path, mongo_uri: str, senders: dict[str, Collector]
) -> None:
    settings = _settings(tmp_path)
    _check(settings, senders)  # baseline
    _failed("gone.raw")
    senders["webhook"].down = True
    _check(settings, senders)
    # The webhook stays down for more than a day: the message is given up, not sent a day late.
    report = deliver_pending(senders, now=utc_now() + timedelta(hours=25))
    assert report.expired == 1 and senders["webhook"].subjects() == ["ledger:baseline"]
    assert AlertRecord.objects(id="raw_file:gone.raw").get().deliveries["webhook"]["status"] == "expired"
    # Deleted from the database: closed with one message, to the channels that heard of it.
    from shared.db.models import RawFile

    RawFile.objects(id="gone.raw").delete()
    senders["webhook"].down = False
    _check(settings, senders)
    assert senders["email"].messages[-1]["lines"] == ["gone.raw is no longer in the database (collection raw_file)."]
    assert senders["webhook"].subjects() == ["ledger:baseline"]


def test_the_digest_is_recorded_once_per_day(tmp_path: Path, mongo_uri: str, senders: dict[str, Collector]) -> None:
    settings = _settings(tmp_path)
    day = utc_now().date()
    for _ in range(2):
        run_digest(settings, senders, day=day, disk_usage=_plenty)
    assert senders["slack"].subjects() == [f"digest:{day.isoformat()}"]
    lines = senders["slack"].messages[0]["lines"]
    assert "Oldest unprotected raw file: none, every raw file has a verified backup." in lines
    assert "Backed up to S3 in the last 24 h: nothing" in lines


def test_the_check_records_free_space_per_folder_for_the_backups_page(mongo_uri: str, tmp_path: Path) -> None:
    from shared.db.free_space import latest_free_space

    settings = _settings(tmp_path)
    now = datetime(2026, 11, 30, 12, tzinfo=UTC)
    _check(settings, {"webhook": Collector()}, now=now)
    found = latest_free_space(["instrument:thermo1", "backup", "instrument:gone"])
    assert set(found) == {"instrument:thermo1", "backup"}  # a folder never measured is left out
    assert found["backup"]["free_bytes"] == 100 * GB and found["backup"]["path"] == str(tmp_path / "backup")
    assert found["instrument:thermo1"]["measured_at"].replace(tzinfo=UTC) == now
    _check(settings, {"webhook": Collector()}, now=now + timedelta(minutes=5))  # replaced, not added
    assert latest_free_space(["backup"])["backup"]["measured_at"].replace(tzinfo=UTC) == now + timedelta(minutes=5)
