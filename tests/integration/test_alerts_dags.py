"""backup_alerts and backup_digest in real DAG runs (dag.test) with a real SMTP server and real webhook receivers.

Channels go through Airflow connections given as ``AIRFLOW_CONN_*`` variables:
e-mail (aiosmtpd with AUTH), Slack (an incoming-webhook URL) and a JSON
webhook whose URL holds its token. Each test asserts what every channel
received, and that no secret shows up in the task logs or the messages.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from rawvault.keys import run_id_for
from shared.db.alerts import AlertRecord
from shared.db.interface import create_raw_file, update_raw_file, utc_now
from shared.db.totals import latest_totals
from shared.settings import get_settings
from tests.airflow_harness import init_airflow_db, load_dags, run_dag
from tests.alert_fixtures import UI_BASE_URL, Channels, alerts_env, channels, secrets_in
from tests.pipeline_env import write_pipeline_env

__all__ = ["channels"]  # the fixture
pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]
REASON = "NAME.raw changed while it was read {{ not a template }} <b>"


@pytest.fixture
def logs(caplog: pytest.LogCaptureFixture, capfd: pytest.CaptureFixture[str]) -> Iterator[Any]:
    """Everything logged (records and the console output of the task runs) since the test started."""
    caplog.set_level(logging.DEBUG)
    seen: list[str] = []

    def text() -> str:
        out = capfd.readouterr()
        seen.append(out.out + out.err)
        return caplog.text + "".join(seen)

    yield text
    get_settings.cache_clear()


@pytest.fixture
def dags(tmp_path: Path, mongo_uri: str, channels: Channels, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """The DAGs of an environment with alerts on (its channels' receivers running), Airflow's database ready."""
    init_airflow_db()
    alerts_env(tmp_path, monkeypatch)
    return load_dags()


def _states(dags: dict[str, Any], dag_id: str = "backup_alerts") -> dict[str, Any]:
    return run_dag(dags[dag_id])


def _new(channels: Channels, before: dict[str, int]) -> dict[str, int]:
    return {name: count - before[name] for name, count in channels.counts().items()}


def _raw_file(name: str, hours_ago: float, **fields: Any) -> None:
    create_raw_file(
        name, instrument_id="thermo1", created_at=utc_now() - timedelta(hours=hours_ago), size=1000, **fields
    )


def _bad_raw_files() -> dict[str, str]:
    """One raw file per event that can be detected today; raw file id -> the ledger state it must get."""
    now = utc_now()
    gave_up = "gave up after 3 attempts; clear upload_to_s3 to retry by hand. Last error: x"
    stuck = {"upload_claim_owner": "worker-9:42:dead", "upload_claim_expires_at": now - timedelta(hours=2)}
    live = {"upload_claim_owner": "worker-1:7:live", "upload_claim_expires_at": now + timedelta(minutes=5)}
    raw_files: list[tuple[str, float, str | None, dict[str, Any]]] = [
        ("checksum-error.raw", 2, "pipeline_error:compute_checksum",
         {"status": "error", "status_details": f"compute_checksum: {REASON}"}),
        ("copy-failed.raw", 2, "copying_failed",
         {"backup_status": "copying_failed", "backup_status_details": "the backup folder is not writable"}),
        ("upload-failed.raw", 2, "upload_failed",
         {"backup_status": "upload_failed", "backup_status_details": "S3 was down", "s3_upload_attempts": 1}),
        ("gave-up.raw", 30, "upload_gave_up",
         {"backup_status": "upload_failed", "backup_status_details": gave_up, "s3_upload_attempts": 3}),
        ("stuck.raw", 5, "upload_stuck", {"backup_status": "upload_in_progress", **stuck}),
        ("overdue.raw", 30, "deadline", {"status": "moved", "backup_status": "copying_done"}),
        # Healthy or on their way: never a message.
        ("done.raw", 30, None, {"status": "moved", "backup_status": "upload_done"}),
        ("uploading.raw", 3, None, {"backup_status": "upload_in_progress", **live}),
        ("new.raw", 0.1, None, {"status": "monitoring_acquisition"}),
    ]  # fmt: skip
    for name, hours_ago, _, fields in raw_files:
        _raw_file(name, hours_ago, **{"status": "checksumming_done", **fields})
    return {name: state for name, _, state, _ in raw_files if state}


def _assert_failure_message(channels: Channels, body: dict[str, Any]) -> None:
    """A failed backup's message on every channel: what, where, why, and the link to the task log."""
    assert body["format"] == "rawvault-alert/1" and body["severity"] == "error"
    expected = {"raw file": "checksum-error.raw", "instrument": "thermo1", "step": "compute_checksum", "reason": REASON}
    assert dict(body["details"]).items() >= expected.items()
    run_id = run_id_for("checksum-error.raw")
    assert body["link"] == f"{UI_BASE_URL}/dags/acquisition_handler.thermo1/runs/{run_id}/tasks/compute_checksum"
    mail = next(m for m in channels.smtp.received() if "checksum-error.raw" in m.subject)
    assert mail.rcpt_tos == ["backup-team@facility.test"] and mail.mail_from == "rawvault@facility.test"
    assert mail.subject == "[test facility] Backup failed: checksum-error.raw (thermo1) at compute_checksum"
    assert "{{ not a template }} &lt;b&gt;" in mail.body() and f'href="{body["link"]}"' in mail.body()
    slack = next(p.body["text"] for p in channels.slack.received() if "checksum-error.raw" in p.body["text"])
    assert f"<{body['link']}|Task log in Airflow>" in slack and "&lt;b&gt;" in slack


def test_each_event_is_sent_once_never_repeated_and_its_recovery_once(
    tmp_path: Path, channels: Channels, monkeypatch: pytest.MonkeyPatch, logs: Any, dags: dict[str, Any]
) -> None:
    alerts_dag = dags["backup_alerts"]
    assert alerts_dag.schedule == "*/10 * * * *" and alerts_dag.max_active_runs == 1
    assert alerts_dag.get_task("check_alerts").queue == "test_rawvault_maintenance"
    assert dags["backup_digest"].schedule == "0 7 * * *"  # "07:00" in the YAML

    # The first check ever has nothing open: one message says the channels work.
    assert _states(dags)["__dagrun__"] == "success"
    assert channels.counts() == {"email": 1, "slack": 1, "webhook": 1}
    assert channels.webhook_bodies()[0]["title"] == "Alerts are on: nothing needs attention right now"

    expected = _bad_raw_files()
    # The backup root runs low on space (limit above its size).
    update = {"free_space": {"instrument_min_free_gb": 0, "backup_min_free_gb": 10**9}}
    alerts_env(tmp_path, monkeypatch, **update)
    before = channels.counts()
    for run in range(3):
        states = _states(dags)
        assert states["__dagrun__"] == "success", (run, states)
    events = len(expected) + 1
    assert _new(channels, before) == {"email": events, "slack": events, "webhook": events}
    bodies = {body["subject"]: body for body in channels.webhook_bodies()[1:]}
    assert {subject: body["state"] for subject, body in bodies.items()} == {
        **{f"raw_file:{raw_file_id}": state for raw_file_id, state in expected.items()},
        "disk:backup": "low_free_space",
    }
    assert {body["kind"] for body in bodies.values()} == {"failed_backup", "stuck_upload", "deadline", "low_free_space"}
    _assert_failure_message(channels, bodies["raw_file:checksum-error.raw"])
    assert bodies["raw_file:upload-failed.raw"]["link"].endswith("/tasks/upload_to_s3")
    assert bodies["raw_file:overdue.raw"]["title"].startswith("No verified S3 copy after 30 h: overdue.raw")

    # Resolved: the upload succeeds, the backup root has room again. One recovery each, then silence.
    update_raw_file(
        "upload-failed.raw",
        backup_status="upload_in_progress",
        upload_claim_owner="w:1:x",
        upload_claim_expires_at=utc_now() + timedelta(minutes=5),
    )
    before = channels.counts()
    assert _states(dags)["__dagrun__"] == "success"
    assert _new(channels, before) == {"email": 0, "slack": 0, "webhook": 0}  # a retry running is no recovery
    update_raw_file("upload-failed.raw", backup_status="upload_done", upload_claim_owner=None)
    alerts_env(tmp_path, monkeypatch)
    for _ in range(3):
        assert _states(dags)["__dagrun__"] == "success"
    assert _new(channels, before) == {"email": 2, "slack": 2, "webhook": 2}
    recoveries = {body["subject"]: body for body in channels.webhook_bodies()[-2:]}
    assert set(recoveries) == {"raw_file:upload-failed.raw", "disk:backup"}
    upload = recoveries["raw_file:upload-failed.raw"]
    assert (upload["state"], upload["severity"]) == ("ok", "recovered")
    assert upload["title"] == "Resolved: Backup failed: upload-failed.raw (thermo1) at upload_to_s3"
    assert upload["recovered_from"]["state"] == "upload_failed"
    assert AlertRecord.objects(id="raw_file:upload-failed.raw").get().state == "ok"

    leaked = secrets_in(logs() + channels.everything_received())
    assert not leaked, f"{leaked} found in the task logs or the messages"


def test_a_channel_that_is_down_fails_no_run_blocks_no_channel_and_gets_its_messages_later(
    tmp_path: Path, channels: Channels, monkeypatch: pytest.MonkeyPatch, logs: Any, dags: dict[str, Any]
) -> None:
    assert _states(dags)["__dagrun__"] == "success"  # the baseline message
    _raw_file("failed-1.raw", 1, status="error", status_details="monitor_acquisition: the share is unreachable")

    channels.webhook.stop()  # connection refused
    before = channels.counts()
    states = _states(dags)
    assert states["__dagrun__"] == "success" and states["check_alerts"] == "success"
    assert _new(channels, before) == {"email": 1, "slack": 1, "webhook": 0}
    record = AlertRecord.objects(id="raw_file:failed-1.raw").get()
    assert record.deliveries["webhook"]["status"] == "pending" and record.pending_channels == ["webhook"]
    assert record.deliveries["webhook"]["last_error"] == "webhook via connection 'rawvault_webhook': connection refused"
    assert "alert channel webhook failed: webhook via connection 'rawvault_webhook': connection refused" in logs()

    # Up again but answering 500: still pending, and the other channels get nothing twice.
    channels.webhook.start()
    channels.webhook.fail_with = 500
    assert _states(dags)["__dagrun__"] == "success"
    assert _new(channels, before) == {"email": 1, "slack": 1, "webhook": 0}
    assert (
        AlertRecord.objects(id="raw_file:failed-1.raw").get().deliveries["webhook"]["last_error"].endswith("HTTP 500")
    )

    # Healthy: the waiting message goes out once, to the webhook only.
    channels.webhook.fail_with = None
    for _ in range(2):
        assert _states(dags)["__dagrun__"] == "success"
    assert _new(channels, before) == {"email": 1, "slack": 1, "webhook": 1}
    assert channels.webhook_bodies()[-1]["subject"] == "raw_file:failed-1.raw"
    assert AlertRecord.objects(id="raw_file:failed-1.raw").get().pending_channels == []

    # Every channel down: the check turns red (nobody could be told) and loses nothing.
    channels.smtp.stop()
    channels.slack.stop()
    channels.webhook.stop()
    _raw_file("failed-2.raw", 1, status="error", status_details="compute_checksum: disk read error")
    states = _states(dags)
    assert states["check_alerts"] == "failed", states
    assert AlertRecord.objects(id="raw_file:failed-2.raw").get().pending_channels == ["email", "slack", "webhook"]
    channels.smtp.start()
    channels.slack.start()
    channels.webhook.start()
    assert _states(dags)["__dagrun__"] == "success"
    assert _new(channels, before) == {"email": 2, "slack": 2, "webhook": 2}
    assert not secrets_in(logs() + channels.everything_received())


def test_a_hanging_channel_times_out_with_a_reason_and_no_secret(
    tmp_path: Path, mongo_uri: str, channels: Channels, monkeypatch: pytest.MonkeyPatch, logs: Any
) -> None:
    from rawvault.alerts.channels import build_senders
    from rawvault.alerts.delivery import DeliveryError

    env = alerts_env(tmp_path, monkeypatch, send_timeout_seconds=1)
    senders = build_senders(env.settings.alerts)
    channels.webhook.delay_seconds = channels.slack.delay_seconds = 4
    for name in ("webhook", "slack"):
        started = time.monotonic()
        with pytest.raises(DeliveryError) as info:
            senders[name]({"title": "hello", "subject": "test"})
        assert time.monotonic() - started < 3.5, f"{name} waited past its timeout"
        assert str(info.value) == f"{name} via connection 'rawvault_{name}': timed out"
    assert not secrets_in(logs() + str(info.value))


def test_old_failures_at_first_deployment_come_as_one_summary(
    tmp_path: Path, mongo_uri: str, channels: Channels, monkeypatch: pytest.MonkeyPatch, logs: Any
) -> None:
    init_airflow_db()
    alerts_env(tmp_path, monkeypatch)
    for n in range(30):
        _raw_file(
            f"old-{n:02d}.raw",
            24 * 40,
            status="checksumming_done",
            backup_status="upload_failed",
            backup_status_details="upload to S3 failed: access denied",
            s3_upload_attempts=1,
        )
    dags = load_dags()
    for _ in range(3):
        assert _states(dags)["__dagrun__"] == "success"
    assert channels.counts() == {"email": 1, "slack": 1, "webhook": 1}
    (summary,) = channels.webhook_bodies()
    assert summary["title"] == "Alerts are on: 30 problem(s) were already open"
    assert summary["kind"] == "summary" and len(summary["lines"]) == 30
    assert summary["lines"][0] == "- Backup failed: old-00.raw (thermo1) at upload_to_s3"
    assert AlertRecord.objects(id__startswith="raw_file:", state="upload_failed").count() == 30

    # Later changes are one message each again.
    update_raw_file("old-07.raw", backup_status="upload_done")
    assert _states(dags)["__dagrun__"] == "success"
    assert channels.counts() == {"email": 2, "slack": 2, "webhook": 2}
    assert channels.webhook_bodies()[-1]["title"] == "Resolved: Backup failed: old-07.raw (thermo1) at upload_to_s3"


def test_the_daily_digest_tells_counts_new_failures_oldest_unprotected_and_bytes_once_a_day(
    tmp_path: Path, channels: Channels, monkeypatch: pytest.MonkeyPatch, logs: Any, dags: dict[str, Any]
) -> None:
    assert _states(dags)["__dagrun__"] == "success"  # baseline: nothing open
    now = utc_now()
    for n, size in enumerate((2 * 10**9, 5 * 10**8)):
        create_raw_file(
            f"today-{n}.d",
            instrument_id="tims1",
            created_at=now - timedelta(hours=3),
            size=size,
            status="moved",
            backup_status="upload_done",
            s3_upload_attempted_at=now - timedelta(hours=2),
        )
    create_raw_file(
        "last-week.raw",
        instrument_id="thermo1",
        created_at=now - timedelta(days=7),
        size=10**9,
        status="moved",
        backup_status="upload_done",
        s3_upload_attempted_at=now - timedelta(days=7),
    )
    _raw_file("broken.raw", 50, status="error", status_details="compute_checksum: unreadable")
    _raw_file("waiting.raw", 1, status="checksumming_done", backup_status="copying_done")
    assert _states(dags)["__dagrun__"] == "success"  # announces broken.raw
    before = channels.counts()

    for _ in range(2):  # a second run the same day sends nothing new
        assert _states(dags, "backup_digest")["__dagrun__"] == "success"
    assert _new(channels, before) == {"email": 1, "slack": 1, "webhook": 1}
    digest = channels.webhook_bodies()[-1]
    assert digest["kind"] == "digest" and digest["subject"] == f"digest:{utc_now().date().isoformat()}"
    assert digest["title"] == f"Daily backup digest {utc_now().date().isoformat()}: 1 failed, 0 overdue"
    lines = digest["lines"]
    assert "Raw files by status: moved 3, checksumming_done 1, error 1" in lines
    assert "Raw files by backup status: upload_done 3, copying_done 1, none 1" in lines
    assert any(line.startswith("New problems since ") and line.endswith(": 1") for line in lines)
    assert "- Backup failed: broken.raw (thermo1) at compute_checksum" in lines
    oldest = next(line for line in lines if line.startswith("Oldest unprotected raw file:"))
    assert oldest.startswith("Oldest unprotected raw file: broken.raw (thermo1), acquired ")
    assert "Backed up to S3 in the last 24 h:" in lines and "- tims1: 2 raw file(s), 2.50 GB" in lines
    assert not any("thermo1: " in line and "raw file(s)" in line for line in lines)  # last week's is not counted
    mail = channels.smtp.received()[-1]
    assert mail.subject == f"[test facility] {digest['title']}" and "broken.raw" in mail.body()
    assert not secrets_in(logs() + channels.everything_received())


def test_the_alert_check_records_totals_per_instrument_and_project_at_most_hourly(
    tmp_path: Path, channels: Channels, monkeypatch: pytest.MonkeyPatch, logs: Any, dags: dict[str, Any]
) -> None:
    """Issue 17 item 2: raw files, bytes and the share verified in S3, per (instrument, project), for the page."""
    for name, instrument, project, size, backup_status in (
        ("a.raw", "thermo1", "P1", 1000, "upload_done"),
        ("b.raw", "thermo1", "P1", 500, "upload_failed"),
        ("c.raw", "thermo1", "P2", 2000, "upload_done"),
        ("d.d", "tims1", "P3", 10**9, "copying_done"),
    ):
        create_raw_file(name, instrument_id=instrument, project_id=project, created_at=utc_now(), size=size,
                        status="moved", backup_status=backup_status)  # fmt: skip
    assert _states(dags)["__dagrun__"] == "success"
    totals = latest_totals(["thermo1", "tims1", "zeno1"])
    assert {instrument: t["verified_by"] for instrument, t in totals.items()} == dict.fromkeys(totals, "s3")
    assert totals["thermo1"]["projects"] == [
        {"project_id": "P1", "raw_files": 2, "bytes": 1500, "verified_raw_files": 1, "verified_bytes": 1000},
        {"project_id": "P2", "raw_files": 1, "bytes": 2000, "verified_raw_files": 1, "verified_bytes": 2000},
    ]
    assert totals["tims1"]["projects"] == [
        {"project_id": "P3", "raw_files": 1, "bytes": 10**9, "verified_raw_files": 0, "verified_bytes": 0}
    ]
    assert totals["zeno1"]["projects"] == []
    # The next check (minutes later) leaves them: one aggregation per instrument at most once an hour.
    _raw_file("e.raw", 1, status="moved", backup_status="upload_done")
    assert _states(dags)["__dagrun__"] == "success"
    again = latest_totals(["thermo1"])["thermo1"]
    assert (again["measured_at"], again["projects"]) == (
        totals["thermo1"]["measured_at"],
        totals["thermo1"]["projects"],
    )


def test_no_alert_dags_while_alerts_are_off(tmp_path: Path, mongo_uri: str, monkeypatch: pytest.MonkeyPatch) -> None:
    from tests.pipeline_env import activate

    activate(write_pipeline_env(tmp_path), monkeypatch)  # no alerts section: off
    dags = load_dags()
    assert "backup_alerts" not in dags and "backup_digest" not in dags
    get_settings.cache_clear()
