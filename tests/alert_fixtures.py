"""Alert channels for tests: a real SMTP server and two real webhook receivers, their Airflow connections, settings."""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from devtools.receivers import SmtpReceiver, WebhookReceiver
from tests.pipeline_env import PipelineEnv, activate, write_pipeline_env

SMTP_LOGIN = "rawvault-alerts"
# Secrets of the connections, random per session: none of them may show up in a log or a message.
SMTP_PASSWORD = f"smtp-pw-{secrets.token_hex(8)}"
SLACK_TOKEN = f"T0000/B0000/slack{secrets.token_hex(8)}"
WEBHOOK_TOKEN = f"hook{secrets.token_hex(8)}"
UI_BASE_URL = "http://airflow.facility.test:8080"
S3_BACKUP = {
    "backup_type": "s3",
    "s3": {"region": "us-east-1", "bucket_prefix": "rv-alerts", "part_size_mb": 5, "max_upload_attempts": 3},
}


@dataclass
class Channels:
    """The three receivers behind the channels email, slack and webhook."""

    smtp: SmtpReceiver
    slack: WebhookReceiver
    webhook: WebhookReceiver

    def counts(self) -> dict[str, int]:
        return {
            "email": len(self.smtp.received()),
            "slack": len(self.slack.received()),
            "webhook": len(self.webhook.received()),
        }

    def webhook_bodies(self) -> list[dict[str, Any]]:
        return [post.body for post in self.webhook.received()]

    def everything_received(self) -> str:
        """Every received message as text (headers and bodies), to search for secrets."""
        mails = [f"{mail.message.as_string()}\n{mail.body()}" for mail in self.smtp.received()]
        posts = [json.dumps(post.body) for post in self.slack.received() + self.webhook.received()]
        return "\n".join(mails + posts)


@pytest.fixture
def channels(monkeypatch: pytest.MonkeyPatch) -> Iterator[Channels]:
    """The receivers, started, with ``AIRFLOW_CONN_RAWVAULT_{SMTP,SLACK,WEBHOOK}`` pointing at them."""
    with (
        SmtpReceiver(login=SMTP_LOGIN, password=SMTP_PASSWORD) as smtp,
        WebhookReceiver() as slack,
        WebhookReceiver() as webhook,
    ):
        smtp_extra = {"disable_ssl": True, "disable_tls": True, "retry_limit": 0, "timeout": 5}
        smtp_conn = {
            "conn_type": "smtp",
            "host": "127.0.0.1",
            "port": smtp.port,
            "login": SMTP_LOGIN,
            "password": SMTP_PASSWORD,
            "extra": smtp_extra,
        }
        monkeypatch.setenv("AIRFLOW_CONN_RAWVAULT_SMTP", json.dumps(smtp_conn))
        # Slack: the whole incoming-webhook URL in the password, as the slack provider documents.
        slack_conn = {"conn_type": "slackwebhook", "password": f"{slack.url}/services/{SLACK_TOKEN}"}
        monkeypatch.setenv("AIRFLOW_CONN_RAWVAULT_SLACK", json.dumps(slack_conn))
        # A generic webhook whose token is part of its URL (like Teams or a chat bridge).
        webhook_conn = {"conn_type": "http", "host": f"{webhook.url}/hooks/{WEBHOOK_TOKEN}"}
        monkeypatch.setenv("AIRFLOW_CONN_RAWVAULT_WEBHOOK", json.dumps(webhook_conn))
        monkeypatch.setenv("AIRFLOW__API__BASE_URL", UI_BASE_URL)
        yield Channels(smtp, slack, webhook)


def alerts_section(**overrides: Any) -> dict[str, Any]:
    """An ``alerts:`` section with all three channels and no free space limits."""
    section: dict[str, Any] = {
        "enabled": True,
        "label": "test facility",
        "channels": {
            "email": {
                "conn_id": "rawvault_smtp",
                "to": ["backup-team@facility.test"],
                "from_address": "rawvault@facility.test",
            },
            "slack": {"conn_id": "rawvault_slack"},
            "webhook": {"conn_id": "rawvault_webhook"},
        },
        "free_space": {"instrument_min_free_gb": 0, "backup_min_free_gb": 0},
        "digest": {"enabled": True, "schedule": "07:00"},
    }
    section.update(overrides)
    return section


def alerts_env(root: Path, monkeypatch: pytest.MonkeyPatch, **alert_overrides: Any) -> PipelineEnv:
    """An S3 environment with alerts on, active for the DAG files and tasks of this process."""
    env = write_pipeline_env(root, backup=S3_BACKUP, alerts=alerts_section(**alert_overrides))
    env.backup_root.mkdir(parents=True, exist_ok=True)
    activate(env, monkeypatch)
    return env


def secrets_in(text: str) -> list[str]:
    """Which of the connections' secrets appear in ``text``."""
    return [
        name
        for name, value in (
            ("SMTP password", SMTP_PASSWORD),
            ("Slack token", SLACK_TOKEN),
            ("webhook token", WEBHOOK_TOKEN),
        )
        if value in text
    ]
