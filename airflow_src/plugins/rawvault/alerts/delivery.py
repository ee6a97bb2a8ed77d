"""Send the messages the ledger holds as pending, once per channel, without ever raising for a channel.

A sender is a callable taking the stored message; it raises
:class:`DeliveryError` (a description safe to log: never a URL or password)
or anything else (then only the exception's type is logged). Each delivery is
claimed in the ledger before it is sent, so two checks never send the same
message to the same channel. A channel that fails is logged with its name and
the reason, skipped for the rest of this check (a channel that is down costs
one timeout per check, not one per message) and tried again by the next
check; after :data:`RETRY_WINDOW` the message is given up for that channel.
"""

from __future__ import annotations

import logging
import os
import secrets
import socket
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from shared.db.alerts import (
    DeliveryStatus,
    claim_delivery,
    expire_delivery,
    finish_delivery,
    records_with_pending_deliveries,
)
from shared.db.models import utc_now

log = logging.getLogger(__name__)

Sender = Callable[[dict[str, Any]], None]
RETRY_WINDOW = timedelta(hours=24)
# A claim outlives any send: the providers' own timeouts and retries end well within it.
CLAIM_LEASE = timedelta(minutes=10)


class DeliveryError(RuntimeError):
    """A channel could not take a message; the text is safe to log and to store (no secret, no URL)."""


@dataclass
class DeliveryReport:
    """What one round of deliveries did, per channel."""

    sent: dict[str, int] = field(default_factory=dict)
    failed: dict[str, str] = field(default_factory=dict)  # channel -> why it is down
    waiting: dict[str, int] = field(default_factory=dict)  # messages left pending for the next check
    expired: int = 0

    def every_channel_failed(self, channels: list[str]) -> bool:
        """Whether each of ``channels`` (the configured ones) failed in this round: nobody could be told."""
        return bool(channels) and set(channels) <= set(self.failed)


def owner_id() -> str:
    """Who claims deliveries: ``<host>:<pid>:<random>``."""
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"


def describe(error: BaseException) -> str:
    """A description of a send failure that is safe to log: ours as it is, anybody else's by type only."""
    if isinstance(error, DeliveryError):
        return str(error)
    # Exceptions of HTTP and SMTP libraries quote URLs (which may hold a webhook token) and server replies.
    return f"{type(error).__name__} (details withheld: they may contain the channel's URL)"


def _send(record: Any, channel: str, sender: Sender, owner: str, now: datetime, report: DeliveryReport) -> None:
    if not claim_delivery(record.id, record.version, channel, owner, lease=CLAIM_LEASE, now=now):
        return  # another check is sending it, or the subject changed since it was read
    try:
        sender(dict(record.message or {}))
    except Exception as error:  # a channel never raises into the check: it is retried next time
        reason = describe(error)
        finish_delivery(record.id, record.version, channel, owner, status=DeliveryStatus.PENDING, error=reason)
        report.failed[channel] = reason
        report.waiting[channel] = report.waiting.get(channel, 0) + 1
        log.warning("alert channel %s failed: %s; %s stays pending for the next check", channel, reason, record.id)
        return
    finish_delivery(record.id, record.version, channel, owner, status=DeliveryStatus.SENT)
    report.sent[channel] = report.sent.get(channel, 0) + 1
    log.info("alert channel %s: sent %s (%s)", channel, record.id, (record.message or {}).get("title", ""))


def deliver_pending(
    senders: Mapping[str, Sender], *, owner: str | None = None, now: datetime | None = None
) -> DeliveryReport:
    """Send every pending message to its pending channels; see the module docstring."""
    owner = owner or owner_id()
    report = DeliveryReport()
    # A storm's summary ("N more changes") is recorded before the changes it follows: send it after them.
    pending = sorted(records_with_pending_deliveries(), key=lambda r: (r.changed_at, r.id.startswith("summary:")))
    for record in pending:
        now_ = now or utc_now()
        for channel in list(record.pending_channels or []):
            sender = senders.get(channel)
            if sender is None:
                if expire_delivery(record.id, record.version, channel, "channel no longer configured"):
                    report.expired += 1
                continue
            if record.changed_at + RETRY_WINDOW < now_:
                if expire_delivery(record.id, record.version, channel, f"not delivered within {RETRY_WINDOW}"):
                    report.expired += 1
                    log.error("alert channel %s: gave up %s after %s of failures", channel, record.id, RETRY_WINDOW)
                continue
            if channel in report.failed:
                report.waiting[channel] = report.waiting.get(channel, 0) + 1
                continue
            _send(record, channel, sender, owner, now_, report)
    for channel, count in report.waiting.items():
        log.warning(
            "alert channel %s is down (%s): %d message(s) wait for the next check",
            channel,
            report.failed[channel],
            count,
        )
    return report
