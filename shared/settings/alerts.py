"""The ``alerts`` section: where alerts go (Airflow connections only), when checks and the digest run, thresholds."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Annotated, Any

from pydantic import AfterValidator, BeforeValidator, Field, ValidationInfo, field_validator

from shared.settings.base import CRON_FIX, FIXES, CronExpression, Section

if TYPE_CHECKING:
    from shared.settings.model import Settings

GB = 10**9  # thresholds are decimal gigabytes, as disks are sold and `df -H` shows them
CONN_ID_RE = re.compile(r"^[A-Za-z0-9_.-]{1,250}$")
EMAIL_RE = re.compile(r"^[^@\s,;<>]+@[^@\s,;<>]+$")
TIME_OF_DAY_RE = re.compile(r"^([01]?\d|2[0-3]):([0-5]\d)$")

_CONN_FIX = (
    "name an Airflow connection (letters, digits, '_', '.', '-'); its secrets live in the connection "
    "(e.g. AIRFLOW_CONN_<ID in upper case>), never in this file"
)
FIXES.update(
    {
        "alerts.channels": (
            "add at least one of channels.email, channels.slack, channels.webhook, or set alerts.enabled: false"
        ),
        "alerts.channels.email.conn_id": _CONN_FIX,
        "alerts.channels.email.to": "list one or more e-mail addresses, e.g. [backup-team@facility.org]",
        "alerts.channels.email.from_address": "write one e-mail address, or leave it out to use the connection's",
        "alerts.channels.slack.conn_id": _CONN_FIX,
        "alerts.channels.webhook.conn_id": _CONN_FIX,
        "alerts.channels.webhook.endpoint": (
            "write the path after the connection's host, e.g. /alerts, or leave it out; keep tokens in the "
            "connection, not here"
        ),
        "alerts.check_schedule": CRON_FIX,
        "alerts.digest.schedule": f"write a time of day as 'HH:MM' (24 h, quoted), or {CRON_FIX}",
        "alerts.free_space.instrument_min_free_gb": "use GB of 0 or more (0: no alert for instrument folders)",
        "alerts.free_space.backup_min_free_gb": "use GB of 0 or more (0: no alert for the backup root)",
        "alerts.free_space.instruments": "list <instrument_id>: <GB> for the instruments that need their own limit",
        "alerts.max_messages_per_check": "use a whole number from 1 to 1000",
        "alerts.send_timeout_seconds": "use seconds above 0, at most 300",
        "alerts.label": "write a short name of this deployment, e.g. 'facility production'",
    }
)


def _conn_id(value: str) -> str:
    if not CONN_ID_RE.fullmatch(value):
        raise ValueError(f"{value!r} is not an Airflow connection id")
    return value


def _email(value: str) -> str:
    if not EMAIL_RE.fullmatch(value.strip()):
        raise ValueError(f"{value!r} is not an e-mail address")
    return value.strip()


def _cron_or_time_of_day(value: Any) -> Any:
    # A facility thinks "07:00", Airflow schedules "0 7 * * *": accept the first, keep the second.
    if isinstance(value, str) and (match := TIME_OF_DAY_RE.fullmatch(value.strip())):
        return f"{int(match.group(2))} {int(match.group(1))} * * *"
    return value


ConnId = Annotated[str, AfterValidator(_conn_id)]
EmailAddress = Annotated[str, AfterValidator(_email)]
CronOrTimeOfDay = Annotated[CronExpression, BeforeValidator(_cron_or_time_of_day)]
Gigabytes = Annotated[float, Field(ge=0)]


class EmailChannel(Section):
    """E-mail through the smtp provider's ``SmtpNotifier`` (host, port, login, password in the connection)."""

    conn_id: ConnId = "rawvault_smtp"
    to: Annotated[list[EmailAddress], Field(min_length=1)]
    from_address: EmailAddress | None = None  # None: the connection's extra "from_email"


class SlackChannel(Section):
    """Slack through the slack provider's ``SlackWebhookNotifier`` (the webhook URL is the connection's password)."""

    conn_id: ConnId = "rawvault_slack"


class WebhookChannel(Section):
    """A JSON POST through the http provider's ``HttpNotifier`` (URL and credentials in the connection)."""

    conn_id: ConnId = "rawvault_webhook"
    endpoint: str = ""

    @field_validator("endpoint")
    @classmethod
    def _plain_path(cls, value: str) -> str:
        if "?" in value or "@" in value or "://" in value:
            raise ValueError("must be a plain path: put the URL with any token or query in the connection's host")
        return value


class ChannelSettings(Section):
    """The channels every alert goes to; each one is optional."""

    email: EmailChannel | None = None
    slack: SlackChannel | None = None
    webhook: WebhookChannel | None = None

    def names(self) -> list[str]:
        """The configured channels' names, in a fixed order."""
        return [name for name in ("email", "slack", "webhook") if getattr(self, name) is not None]


class FreeSpaceSettings(Section):
    """Low free space alerts: below these many GB on an instrument folder or the backup root (0: off)."""

    instrument_min_free_gb: Gigabytes = 50.0
    backup_min_free_gb: Gigabytes = 100.0
    instruments: dict[str, Gigabytes] = {}  # per instrument id: its own limit

    def instrument_limit_gb(self, instrument_id: str) -> float:
        """The free space limit of one instrument folder in GB (0: no alert)."""
        return self.instruments.get(instrument_id, self.instrument_min_free_gb)


class DigestSettings(Section):
    """The daily digest: counts per status, new failures, oldest unprotected raw file, bytes backed up."""

    enabled: bool = True
    schedule: CronOrTimeOfDay = "0 7 * * *"


class AlertSettings(Section):
    """Alerts: one message per subject per change of state, through Airflow connections."""

    enabled: bool = False
    label: Annotated[str, Field(min_length=1, max_length=80)] = "rawvault"
    check_schedule: CronExpression = "*/10 * * * *"
    channels: Annotated[ChannelSettings, Field(validate_default=True)] = ChannelSettings()
    free_space: FreeSpaceSettings = FreeSpaceSettings()
    digest: DigestSettings = DigestSettings()
    # A check that finds more changes than this sends them one by one up to here and the rest as one summary.
    max_messages_per_check: Annotated[int, Field(ge=1, le=1000)] = 20
    send_timeout_seconds: Annotated[float, Field(gt=0, le=300)] = 30.0

    @field_validator("channels", mode="after")
    @classmethod
    def _channels_when_enabled(cls, value: ChannelSettings, info: ValidationInfo) -> ChannelSettings:
        if info.data.get("enabled") and not value.names():
            raise ValueError("alerts.enabled is true but no channel is configured")
        return value


def alert_cross_checks(settings: Settings) -> list[tuple[str, str, str]]:
    """Problems of the alerts section that involve other sections, as ``(key path, message, fix)``."""
    unknown = sorted(set(settings.alerts.free_space.instruments) - set(settings.instruments))
    if not unknown:
        return []
    return [
        (
            "alerts.free_space.instruments",
            f"names instrument(s) {', '.join(map(repr, unknown))} that are not under instruments",
            f"use ids of configured instruments ({', '.join(sorted(settings.instruments))}) or remove the line",
        )
    ]
