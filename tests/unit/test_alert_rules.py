"""Alert rules without a database: raw file states, free space, change planning, rendering, safe failure reasons."""

from __future__ import annotations

import smtplib
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from rawvault.alerts import render
from rawvault.alerts.channels import _url_parts, safe_reason
from rawvault.alerts.delivery import DeliveryError, describe
from rawvault.alerts.disks import disk_observations
from rawvault.alerts.model import Health, Observation, alert_message
from rawvault.alerts.raw_files import RuleContext, raw_file_alert_state, split_step, task_log_url
from rawvault.alerts.reconcile import plan_changes
from shared.db.models import RawFile
from shared.settings import parse_settings
from shared.settings.alerts import GB

NOW = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)
DAY = timedelta(hours=24)
S3 = RuleContext(now=NOW, deadline=DAY, s3=True, ui_base_url="https://af.example/", max_upload_attempts=5)
LOCAL = RuleContext(now=NOW, deadline=timedelta(hours=24), s3=False)


def _raw_file(hours_ago: float = 2, **fields: Any) -> RawFile:
    created = NOW - timedelta(hours=hours_ago)
    return RawFile(id="x.raw", original_name="x.raw", instrument_id="thermo1", created_at=created, **fields)


@pytest.mark.parametrize(
    ("fields", "ctx", "health", "state"),
    [
        ({"status": "error", "status_details": "compute_checksum: x"}, S3, "bad", "pipeline_error:compute_checksum"),
        (
            {"status": "error", "status_details": "file mover: refused", "backup_status": "upload_done"},
            S3,
            "bad",
            "pipeline_error:file mover",
        ),
        ({"status": "error", "status_details": "no step here"}, S3, "bad", "pipeline_error:unknown"),
        ({"backup_status": "copying_failed"}, LOCAL, "bad", "copying_failed"),
        ({"backup_status": "upload_failed", "s3_upload_attempts": 1}, S3, "bad", "upload_failed"),
        (
            {"backup_status": "upload_failed", "backup_status_details": "gave up after 5 attempts; ..."},
            S3,
            "bad",
            "upload_gave_up",
        ),
        (
            {"backup_status": "upload_in_progress", "upload_claim_expires_at": NOW - timedelta(hours=2)},
            S3,
            "bad",
            "upload_stuck",
        ),
        # An expired lease the sweeper has not had time to release yet is not stuck.
        (
            {"backup_status": "upload_in_progress", "upload_claim_expires_at": NOW - timedelta(minutes=20)},
            S3,
            "unknown",
            "ok",
        ),
        ({"backup_status": "copying_done", "hours_ago": 25}, S3, "bad", "deadline"),
        ({"backup_status": "copying_done", "hours_ago": 25}, LOCAL, "healthy", "ok"),  # local: the copy is the backup
        ({"status": "monitoring_acquisition", "hours_ago": 25}, LOCAL, "bad", "deadline"),
        ({"status": "purged", "hours_ago": 2000}, S3, "healthy", "ok"),
        ({"backup_status": "upload_done", "hours_ago": 100}, S3, "healthy", "ok"),
        (
            {"backup_status": "upload_in_progress", "upload_claim_expires_at": NOW + timedelta(minutes=5)},
            S3,
            "unknown",
            "ok",
        ),
        ({"status": "queued", "hours_ago": 1}, S3, "unknown", "ok"),
        # A scrub found the stored data missing or different; a clean scrub is healthy again.
        ({"backup_status": "upload_done", "scrub_status": "drift", "scrub_details": "x"}, S3, "bad", "scrub_drift"),
        ({"backup_status": "upload_done", "scrub_status": "ok"}, S3, "healthy", "ok"),
    ],
)
def test_raw_file_alert_state(fields: dict[str, Any], ctx: RuleContext, health: str, state: str) -> None:
    hours_ago = fields.pop("hours_ago", 2)
    observation = raw_file_alert_state(_raw_file(hours_ago, **fields), ctx)
    assert (observation.subject, observation.health.value, observation.state) == ("raw_file:x.raw", health, state)


def test_scrub_drift_names_what_was_found_and_how_to_recheck() -> None:
    raw_file = _raw_file(
        backup_status="upload_done", scrub_status="drift", scrubbed_at=NOW - timedelta(hours=1),
        scrub_details="x.raw: local copy differs: /backup/thermo1/2026_11/x.raw (expected MD5 a, found MD5 b)",
    )  # fmt: skip
    observation = raw_file_alert_state(raw_file, S3)
    assert observation.kind == "data_drift" and observation.severity == "error"
    assert observation.title == "Stored data differs: x.raw (thermo1) failed its scrub"
    details = dict(observation.details)
    assert details["scrubbed"] == "2026-11-22 11:00 UTC" and "local copy differs" in details["found"]
    assert "verify --read-data --raw-file-id x.raw" in observation.hint
    assert observation.link == "https://af.example/dags/backup_verifier"


def test_a_failed_step_links_to_its_task_log_and_names_step_and_reason() -> None:
    raw_file = _raw_file(status="error", status_details="file mover: the target exists", project_id="PRJ1")
    observation = raw_file_alert_state(raw_file, S3)
    assert observation.link == (
        "https://af.example/dags/file_mover.thermo1/runs/rawvault__x.raw__"
        f"{observation.link.rsplit('__', 1)[1].split('/')[0]}/tasks/move_raw_file"
    )
    details = dict(observation.details)
    assert details["step"] == "file mover" and details["reason"] == "the target exists" and details["project"] == "PRJ1"
    assert task_log_url(None, "d", "r", "t") is None  # no UI address: no link
    assert task_log_url("http://h/", "a.b", "run 1", "t") == "http://h/dags/a.b/runs/run%201/tasks/t"
    assert split_step("compute_checksum: a: b") == ("compute_checksum", "a: b")
    assert split_step("C:\\data is gone") == ("", "C:\\data is gone")


def _env(**alerts: Any) -> Any:
    raw = {
        "instruments": {"thermo1": {"type": "thermo", "path": "/data/thermo1"}},
        "locations": {"backup": "/data/backup"},
        "backup": {"backup_type": "local"},
        "alerts": alerts,
    }
    return parse_settings(raw, Path("/etc/rawvault/test.yaml"))


def test_low_free_space_has_a_recovery_margin_and_unreadable_folders_change_nothing() -> None:
    limits = {"instrument_min_free_gb": 100, "backup_min_free_gb": 10, "instruments": {"thermo1": 50}}
    settings = _env(free_space=limits)

    def usage(free_gb: float) -> Any:
        return lambda path: SimpleNamespace(total=1000 * GB, used=0, free=free_gb * GB)

    low = {o.subject: o for o in disk_observations(settings, usage(49))}
    assert low["disk:instrument:thermo1"].health == Health.BAD  # its own limit (50), not the default (100)
    title = low["disk:instrument:thermo1"].title
    assert title == "Low free space on instrument folder thermo1: 49.0 GB free (limit 50 GB)"
    assert low["disk:backup"].health == Health.HEALTHY
    between = {o.subject: o.health for o in disk_observations(settings, usage(51))}
    assert between["disk:instrument:thermo1"] == Health.UNKNOWN  # above the limit, below limit + 5 %
    assert {o.health for o in disk_observations(settings, usage(53))} == {Health.HEALTHY}

    def unreadable(path: Path) -> Any:
        raise OSError(112, "Host is down")

    assert {o.health for o in disk_observations(settings, unreadable)} == {Health.UNKNOWN}


def _record(state: str, version: int = 1) -> Any:
    return SimpleNamespace(state=state, version=version, deliveries={}, message={}, kind="failed_backup")


def test_plan_changes_only_for_a_new_or_other_state_and_recoveries_from_bad() -> None:
    bad = Observation("raw_file:a", Health.BAD, state="upload_failed", kind="failed_backup")
    other = Observation("raw_file:b", Health.BAD, state="upload_gave_up", kind="stuck_upload")
    same = Observation("raw_file:c", Health.BAD, state="deadline", kind="deadline")
    healed = Observation("raw_file:d", Health.HEALTHY)
    healthy_unknown_before = Observation("raw_file:e", Health.HEALTHY)
    on_its_way = Observation("raw_file:f", Health.UNKNOWN)
    records = {
        "raw_file:b": _record("upload_failed"),
        "raw_file:c": _record("deadline"),
        "raw_file:d": _record("upload_failed"),
        "raw_file:f": _record("upload_failed"),
    }
    changes = plan_changes([healed, same, bad, other, healthy_unknown_before, on_its_way], records)  # type: ignore[arg-type]
    assert [(c.observation.subject, c.recovery) for c in changes] == [
        ("raw_file:a", False),  # errors first
        ("raw_file:b", False),
        ("raw_file:d", True),
    ]


def test_messages_escape_data_and_never_render_templates() -> None:
    observation = Observation(
        "raw_file:<x>",
        Health.BAD,
        state="upload_failed",
        kind="failed_backup",
        title="Backup failed: <script>{{ 7*7 }}",
        details=(("reason", "a & b <i>"),),
        link="https://af.example/dags/a/runs/r?x=1&y=2",
        hint="clear it",
    )
    message = alert_message(observation, label="lab <1>", now=datetime(2026, 1, 1, tzinfo=UTC))
    html_body = render.email_html(message)
    assert "&lt;script&gt;{{ 7*7 }}" in html_body and "a &amp; b &lt;i&gt;" in html_body
    assert 'href="https://af.example/dags/a/runs/r?x=1&amp;y=2"' in html_body
    assert render.email_subject(message) == "[lab <1>] Backup failed: <script>{{ 7*7 }}"
    text = render.slack_text(message)
    assert text.startswith(":red_circle: *Backup failed: &lt;script&gt;{{ 7*7 }}*") and "a &amp; b &lt;i&gt;" in text
    assert render.webhook_json(message)["details"] == [["reason", "a & b <i>"]]
    assert render.email_subject({**message, "title": "x\ny" + "z" * 300}).count("\n") == 0


@pytest.mark.parametrize(
    ("error", "reason"),
    [
        (ConnectionRefusedError(111, "Connection refused"), "connection refused"),
        (TimeoutError("timed out"), "timed out"),
        (smtplib.SMTPAuthenticationError(535, b"5.7.8 bad credentials"), "refused the login (535)"),
        (smtplib.SMTPRecipientsRefused({}), "refused the recipients"),
        (RuntimeError("500:Internal Server Error"), "HTTP 500"),
        (RuntimeError("Response body: 'no_team', Status Code: 404. See: https://api.slack.com/x"), "HTTP 404"),
        (RuntimeError("The conn_id `rawvault_slack` isn't defined"), "AIRFLOW_CONN_RAWVAULT_SLACK"),
        (ValueError("You should provide `from_email` or define it in the connection"), "from_address"),
        (KeyError("https://hooks.example/T0/B0/secret"), "KeyError (details withheld"),
    ],
)
def test_send_failures_are_described_without_urls_or_passwords(error: BaseException, reason: str) -> None:
    text = safe_reason(error, "rawvault_slack")
    assert reason in text and "secret" not in text and "hooks.example" not in text


def test_foreign_exceptions_are_logged_by_type_only() -> None:
    assert describe(DeliveryError("slack: HTTP 500")) == "slack: HTTP 500"
    assert "token" not in describe(RuntimeError("POST https://x/hooks/token failed"))


def test_every_part_of_a_webhook_url_that_may_hold_its_token_is_a_secret() -> None:
    parts = _url_parts("https://user:pw-123456@hooks.example/services/T0/B0/XYZ?code=abcdef")
    assert {"/services/T0/B0/XYZ", "code=abcdef", "pw-123456"} <= set(parts)
    assert _url_parts("https://x.example/") == ["https://x.example/"]  # "/" alone would redact every log line
