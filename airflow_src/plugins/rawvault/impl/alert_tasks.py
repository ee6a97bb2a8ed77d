"""Task callables of ``backup_alerts`` (one alert check) and ``backup_digest`` (one day's digest).

A channel that is down never fails these tasks: its messages stay pending
and the next run sends them. Only when every configured channel failed does
the task turn red (after recording everything), so that the Airflow UI shows
that nobody can be told. These DAGs never touch a backup.
"""

from __future__ import annotations

import logging
from typing import Any

from airflow.sdk.exceptions import AirflowFailException, AirflowSkipException

from shared.settings import get_settings

log = logging.getLogger(__name__)

DEFAULT_UI_BASE_URL = "http://localhost:8080/"  # Airflow's own fallback for [api] base_url in task log URLs


def ui_base_url() -> str:
    """Base URL of the Airflow UI for task log links (``[api] base_url``, as Airflow's own log_url uses)."""
    from airflow.sdk import conf

    return conf.get("api", "base_url", fallback=DEFAULT_UI_BASE_URL) or DEFAULT_UI_BASE_URL


def _fail_if_nobody_was_told(delivery: Any, channels: list[str]) -> None:
    if delivery.every_channel_failed(channels):
        reasons = "; ".join(delivery.failed.values())
        raise AirflowFailException(
            f"no alert channel could deliver ({reasons}); the messages stay pending and the next run sends them. "
            "Fix the channels' Airflow connections (alerts.channels in the settings name them)"
        )


def check_alerts(**context: Any) -> dict[str, Any]:
    """backup_alerts: one check of raw files and free space; record and send each change of state once."""
    from rawvault.alerts.channels import build_senders
    from rawvault.alerts.check import run_check
    from rawvault.impl.metrics import send_backup_state

    settings = get_settings()
    if not settings.alerts.enabled:
        raise AirflowSkipException("alerts.enabled is false in the settings")
    send_backup_state(settings)  # the state gauges (README "Metrics") at every check
    report = run_check(settings, build_senders(settings.alerts), ui_base_url=ui_base_url())
    _fail_if_nobody_was_told(report.delivery, settings.alerts.channels.names())
    return report.summary()


def send_digest(**context: Any) -> dict[str, Any]:
    """backup_digest: record today's digest once and send it (and anything else pending)."""
    from rawvault.alerts.channels import build_senders
    from rawvault.alerts.check import run_digest
    from shared.db.models import utc_now

    settings = get_settings()
    if not settings.alerts.enabled or not settings.alerts.digest.enabled:
        raise AirflowSkipException("alerts.enabled or alerts.digest.enabled is false in the settings")
    now = utc_now()
    delivery = run_digest(settings, build_senders(settings.alerts), day=now.date(), now=now)
    _fail_if_nobody_was_told(delivery, settings.alerts.channels.names())
    return {"day": now.date().isoformat(), "sent": dict(delivery.sent), "failed_channels": dict(delivery.failed)}
