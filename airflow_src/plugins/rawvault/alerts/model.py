"""What a check observes about a subject, and the message it sends: plain data, JSON-ready, stored in the ledger."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any

from shared.db.alerts import OK_STATE

MESSAGE_FORMAT = "rawvault-alert/1"  # "format" of every webhook body; a new field keeps it, a renamed one bumps it


class Health(StrEnum):
    """What a check concluded about a subject."""

    BAD = "bad"  # announce if the ledger has another state
    HEALTHY = "healthy"  # announce a recovery if the ledger has a bad state
    UNKNOWN = "unknown"  # on its way (a retry running) or unreadable: leave the ledger as it is


class Kind(StrEnum):
    """The kinds of messages (``kind`` in the webhook JSON)."""

    FAILED_BACKUP = "failed_backup"
    STUCK_UPLOAD = "stuck_upload"
    DEADLINE = "deadline"
    DATA_DRIFT = "data_drift"  # a scrub re-read the stored data and found it missing or different
    LOW_FREE_SPACE = "low_free_space"
    DIGEST = "digest"
    SUMMARY = "summary"


SEVERITY: dict[str, str] = {
    Kind.FAILED_BACKUP: "error",
    Kind.STUCK_UPLOAD: "error",
    Kind.DEADLINE: "warning",
    Kind.DATA_DRIFT: "error",
    Kind.LOW_FREE_SPACE: "warning",
    Kind.DIGEST: "info",
    Kind.SUMMARY: "info",
}
SEVERITY_ORDER = {"error": 0, "warning": 1, "recovered": 2, "info": 3}


@dataclass(frozen=True)
class Observation:
    """One subject as a check saw it: bad (in ``state``), healthy, or unknown.

    ``title`` says in one line what is wrong (or, healthy, how it is now);
    ``details`` are (name, value) lines; ``hint`` says what to do.
    """

    subject: str
    health: Health
    state: str = OK_STATE
    kind: str = ""
    title: str = ""
    details: tuple[tuple[str, str], ...] = ()
    link: str | None = None
    hint: str = ""

    @property
    def severity(self) -> str:
        return SEVERITY.get(self.kind, "error") if self.kind else "info"


def unknown(subject: str) -> Observation:
    """An observation that changes nothing in the ledger."""
    return Observation(subject, Health.UNKNOWN)


def _iso(moment: datetime) -> str:
    return moment.isoformat(timespec="seconds")


def alert_message(observation: Observation, *, label: str, now: datetime) -> dict[str, Any]:
    """The message announcing a bad state."""
    return {
        "format": MESSAGE_FORMAT,
        "source": "rawvault",
        "label": label,
        "subject": observation.subject,
        "kind": observation.kind,
        "state": observation.state,
        "severity": observation.severity,
        "title": observation.title,
        "details": [list(pair) for pair in observation.details],
        "lines": [],
        "hint": observation.hint,
        "link": observation.link,
        "at": _iso(now),
        "recovered_from": None,
    }


def recovery_message(
    observation: Observation, previous: dict[str, Any], *, label: str, now: datetime, since: datetime | None
) -> dict[str, Any]:
    """The one message saying that a subject is healthy again; ``previous`` is the message of its bad state."""
    return {
        **alert_message(observation, label=label, now=now),
        "kind": previous.get("kind") or observation.kind,
        "state": OK_STATE,
        "severity": "recovered",
        "title": f"Resolved: {previous.get('title') or observation.subject}",
        "lines": [observation.title] if observation.title else [],
        "recovered_from": {
            "state": previous.get("state"),
            "title": previous.get("title"),
            "since": _iso(since) if since else None,
        },
    }


def summary_message(
    kind: Kind, title: str, lines: list[str], *, label: str, now: datetime, subject: str, hint: str = ""
) -> dict[str, Any]:
    """A message of many lines (the digest, a summary of many changes)."""
    return {
        "format": MESSAGE_FORMAT,
        "source": "rawvault",
        "label": label,
        "subject": subject,
        "kind": kind.value,
        "state": "sent",
        "severity": SEVERITY[kind],
        "title": title,
        "details": [],
        "lines": lines,
        "hint": hint,
        "link": None,
        "at": _iso(now),
        "recovered_from": None,
    }
