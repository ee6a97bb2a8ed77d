"""The alerts section and backup.deadline_hours: defaults, accepted forms, and errors that name the key and the fix."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest

from shared.settings import SettingsError, parse_settings

VALID: dict[str, Any] = {
    "instruments": {"thermo1": {"type": "thermo", "path": "/data/thermo1"}},
    "locations": {"backup": "/data/backup"},
    "backup": {"backup_type": "local"},
    "alerts": {
        "enabled": True,
        "channels": {"email": {"to": ["team@facility.org"]}, "slack": {}, "webhook": {"endpoint": "/alerts"}},
    },
}
SOURCE = Path("/etc/rawvault/test.yaml")


def _parse(change: Any = None) -> Any:
    raw = copy.deepcopy(VALID)
    if change:
        change(raw)
    return parse_settings(raw, SOURCE)


def test_defaults_and_forms() -> None:
    settings = _parse()
    alerts = settings.alerts
    assert alerts.channels.names() == ["email", "slack", "webhook"]
    assert (alerts.channels.email.conn_id, alerts.channels.slack.conn_id, alerts.channels.webhook.conn_id) == (
        "rawvault_smtp",
        "rawvault_slack",
        "rawvault_webhook",
    )
    assert alerts.check_schedule == "*/10 * * * *" and alerts.digest.schedule == "0 7 * * *"
    assert alerts.free_space.instrument_limit_gb("thermo1") == 50
    assert settings.backup.deadline_hours == 24
    later = _parse(lambda d: d["alerts"].update(digest={"schedule": "6:30"}))
    assert later.alerts.digest.schedule == "30 6 * * *"
    assert _parse(lambda d: d.pop("alerts")).alerts.enabled is False  # off unless configured


@pytest.mark.parametrize(
    ("change", "key", "fix"),
    [
        (lambda d: d["alerts"].update(channels={}), "alerts.channels", "add at least one of channels.email"),
        (lambda d: d["alerts"]["channels"]["email"].update(to=[]), "alerts.channels.email.to", "list one or more"),
        (
            lambda d: d["alerts"]["channels"]["email"].update(to=["not-an-address"]),
            "alerts.channels.email.to.0",
            "not an e-mail address",
        ),
        (
            lambda d: d["alerts"]["channels"]["slack"].update(conn_id="my slack"),
            "alerts.channels.slack.conn_id",
            "never in this file",
        ),
        (
            lambda d: d["alerts"]["channels"]["webhook"].update(endpoint="/hook?token=abc"),
            "alerts.channels.webhook.endpoint",
            "keep tokens in the connection",
        ),
        (
            lambda d: d["alerts"]["channels"]["slack"].update(webhook_url="https://hooks.slack.com/x"),
            "alerts.channels.slack.webhook_url",
            "unknown key",
        ),
        (lambda d: d["alerts"].update(digest={"schedule": "25:00"}), "alerts.digest.schedule", "'HH:MM'"),
        (lambda d: d["alerts"].update(check_schedule="every minute"), "alerts.check_schedule", "5 cron fields"),
        (
            lambda d: d["alerts"].update(free_space={"backup_min_free_gb": -1}),
            "alerts.free_space.backup_min_free_gb",
            "GB of 0 or more",
        ),
        (
            lambda d: d["alerts"].update(free_space={"instruments": {"tims9": 10}}),
            "alerts.free_space.instruments",
            "'tims9'",
        ),
        (lambda d: d["alerts"].update(max_messages_per_check=0), "alerts.max_messages_per_check", "1 to 1000"),
        (lambda d: d["backup"].update(deadline_hours=0), "backup.deadline_hours", "hours above 0"),
    ],
)
def test_invalid_alert_settings_name_key_and_fix(change: Any, key: str, fix: str) -> None:
    with pytest.raises(SettingsError) as info:
        _parse(change)
    message = str(info.value)
    assert f"\n  {key}: " in message and fix in message, message
