"""Compare what a check observed with the ledger, and record each change of state exactly once.

- A subject whose observed bad state differs from the one last announced
  (or that has none) is a change: its new message goes to every channel.
- A subject observed healthy whose last announced state is bad is a
  recovery: one message, only to the channels that were told about the
  problem (a channel that never got it has nothing to recover from).
- Unknown (on its way, unreadable) and unchanged subjects change nothing,
  however many checks see them.
- The first check ever (no ``ledger:baseline`` record) records every open
  problem without a message each and sends ONE baseline summary instead, so
  old failures present at deployment never flood the channels.
- A check with more changes than ``alerts.max_messages_per_check`` sends the
  most urgent ones one by one and the rest as one summary message.

Each change is a compare-and-set on the subject's ledger record: of two
checks that see the same change, only one records and sends it.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from rawvault.alerts.model import (
    SEVERITY_ORDER,
    Health,
    Kind,
    Observation,
    alert_message,
    recovery_message,
    summary_message,
)
from shared.db.alerts import (
    BASELINE_SUBJECT,
    DELIVERED,
    OK_STATE,
    AlertRecord,
    DeliveryStatus,
    fresh_delivery,
    record_new_alert,
    record_state_change,
    set_message,
)

log = logging.getLogger(__name__)

MAX_SUMMARY_LINES = 200


@dataclass(frozen=True)
class Change:
    """One subject whose state differs from the one last announced."""

    observation: Observation
    record: AlertRecord | None  # the ledger record as read (None: never announced)

    @property
    def recovery(self) -> bool:
        return self.observation.health == Health.HEALTHY

    @property
    def severity(self) -> str:
        return "recovered" if self.recovery else self.observation.severity


@dataclass
class RecordedChanges:
    """What one check recorded in the ledger."""

    announced: list[str] = field(default_factory=list)  # subjects with a message of their own
    grouped: list[str] = field(default_factory=list)  # subjects announced in a summary
    lost_race: list[str] = field(default_factory=list)  # another check recorded them first
    summary_subject: str | None = None
    baseline: bool = False


def plan_changes(observations: Iterable[Observation], records: Mapping[str, AlertRecord]) -> list[Change]:
    """The changes of state among ``observations``, most urgent first (errors, warnings, recoveries)."""
    changes = []
    for observation in observations:
        record = records.get(observation.subject)
        announced = record.state if record is not None else None
        if observation.health == Health.BAD:
            changed = announced != observation.state
        else:  # healthy: a recovery only from a bad state; unknown: never a change
            changed = observation.health == Health.HEALTHY and announced not in (None, OK_STATE)
        if changed:
            changes.append(Change(observation, record))
    return sorted(changes, key=lambda change: (SEVERITY_ORDER.get(change.severity, 9), change.observation.subject))


def _told(record: AlertRecord | None) -> set[str]:
    """The channels that received (or were sent, or got a summary of) the record's current message."""
    if record is None:
        return set()
    return {channel for channel, item in (record.deliveries or {}).items() if item.get("status") in DELIVERED}


def _message(change: Change, label: str, now: datetime) -> dict[str, Any]:
    if not change.recovery:
        return alert_message(change.observation, label=label, now=now)
    record = change.record
    assert record is not None  # a recovery always has the record of its bad state
    since = record.last_bad_at or record.changed_at
    return recovery_message(change.observation, dict(record.message or {}), label=label, now=now, since=since)


def _deliveries(change: Change, channels: list[str], grouped_in: str | None) -> dict[str, dict[str, Any]]:
    told = _told(change.record) if change.recovery else set(channels)
    deliveries = {}
    for channel in channels:
        if channel not in told:
            deliveries[channel] = fresh_delivery(DeliveryStatus.SKIPPED)
        elif grouped_in:
            deliveries[channel] = fresh_delivery(DeliveryStatus.GROUPED, summary=grouped_in)
        else:
            deliveries[channel] = fresh_delivery()
    return deliveries


def _record(change: Change, channels: list[str], label: str, now: datetime, grouped_in: str | None) -> bool:
    observation = change.observation
    state = OK_STATE if change.recovery else observation.state
    kind = (change.record.kind if change.record and change.recovery else observation.kind) or ""
    fields: dict[str, Any] = {
        "state": state,
        "kind": kind,
        "message": _message(change, label, now),
        "deliveries": _deliveries(change, channels, grouped_in),
        "now": now,
    }
    if change.record is None:
        return record_new_alert(observation.subject, **fields)
    return record_state_change(observation.subject, expected_version=change.record.version, **fields)


def _summary_lines(changes: list[Change]) -> list[str]:
    lines = []
    for change in changes[:MAX_SUMMARY_LINES]:
        if change.recovery:
            previous = (change.record.message or {}).get("title") if change.record else None
            lines.append(f"- Resolved: {previous or change.observation.subject}")
        else:
            lines.append(f"- {change.observation.title}")
    if len(changes) > MAX_SUMMARY_LINES:
        lines.append(f"- ... and {len(changes) - MAX_SUMMARY_LINES} more (the Backups page lists them)")
    return lines


def _summary(changes: list[Change], *, baseline: bool, sent_alone: int, label: str, now: datetime) -> tuple[str, dict]:
    if baseline:
        subject = BASELINE_SUBJECT
        title = (
            f"Alerts are on: {len(changes)} problem(s) were already open"
            if changes
            else "Alerts are on: nothing needs attention right now"
        )
        hint = (
            "These were open before alerts started, so they come as this one summary. From now on each change of "
            "state gets one message (a recovery included)."
        )
    else:
        subject = f"summary:{now:%Y%m%dT%H%M%S}:{secrets.token_hex(3)}"
        title = f"{len(changes)} more change(s) in one check ({sent_alone} were sent one by one)"
        hint = "Too many changes at once for one message each (alerts.max_messages_per_check): here they are together."
    return subject, summary_message(
        Kind.SUMMARY, title, _summary_lines(changes), label=label, now=now, subject=subject, hint=hint
    )


def record_changes(
    changes: list[Change],
    *,
    channels: list[str],
    label: str,
    max_messages: int,
    baseline: bool,
    now: datetime,
) -> RecordedChanges:
    """Record ``changes`` in the ledger with their messages (pending delivery); see the module docstring."""
    result = RecordedChanges(baseline=baseline)
    alone, grouped = ([], changes) if baseline else (changes[:max_messages], changes[max_messages:])
    if baseline or grouped:
        # The summary is recorded before the subjects it covers: a crash in between sends it and, at the
        # next check, the subjects once more (twice rather than never).
        subject, message = _summary(grouped, baseline=baseline, sent_alone=len(alone), label=label, now=now)
        deliveries = {channel: fresh_delivery() for channel in channels}
        if not record_new_alert(
            subject, state="sent", kind=Kind.SUMMARY.value, message=message, deliveries=deliveries, now=now
        ):
            log.info("another alert check is recording the first baseline: this check records nothing")
            return result
        result.summary_subject = subject
    for change in alone:
        target = result.announced if _record(change, channels, label, now, None) else result.lost_race
        target.append(change.observation.subject)
    won = []
    for change in grouped:
        if _record(change, channels, label, now, result.summary_subject):
            result.grouped.append(change.observation.subject)
            won.append(change)
        else:
            result.lost_race.append(change.observation.subject)
    if result.summary_subject and len(won) != len(grouped):
        _, message = _summary(won, baseline=baseline, sent_alone=len(alone), label=label, now=now)
        message["subject"] = result.summary_subject
        set_message(result.summary_subject, 1, message)
    return result
