"""What one purge run did or would do: per candidate set a decision and why; free space before and after.

The same report is the file_remover task's log and return value and the
output of ``scripts/rawvault.sh purge --dry-run`` (a table, or ``--json``).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from pathlib import Path
from typing import Any

from rawvault.text_table import table_lines
from shared.settings.purge import GB


class Decision(StrEnum):
    """What happened to one candidate set."""

    DELETED = "deleted"
    WOULD_DELETE = "would delete"
    HELD_BACK = "kept: check failed"
    DELETE_STOPPED = "kept: deleting stopped"
    TOO_YOUNG = "kept: too young"
    NOT_NEEDED = "kept: enough free space"
    OVER_LIMIT = "kept: max_per_run reached"
    NOT_CHECKED = "kept: run stopped"


@dataclass
class SetOutcome:
    """One candidate set (a moved raw file of the instrument) and what the run decided."""

    raw_file_id: str
    created_at: datetime | None
    size: int | None  # recorded size of the set
    decision: Decision
    reason: str = ""
    check: str | None = None  # the check that failed (purge_errors.Check), for HELD_BACK and DELETE_STOPPED
    freed_bytes: int = 0  # deleted: measured on the file system; would delete: the files' allocated bytes
    resumed: bool = False  # finished a purge that a crash had interrupted


def gb(value: float) -> str:
    """Bytes in decimal GB (the unit of purge.min_free_gb), below 1 GB in MB."""
    return f"{value / GB:.2f} GB" if abs(value) >= GB else f"{value / 10**6:.1f} MB"


@dataclass
class PurgeReport:
    """One instrument's purge run."""

    instrument_id: str
    folder: Path
    dry_run: bool
    min_free_bytes: int
    free_before: int
    free_after: int = 0
    min_age_days: float = 0.0
    max_per_run: int = 0
    require: list[str] = field(default_factory=list)
    outcomes: list[SetOutcome] = field(default_factory=list)

    def of(self, *decisions: Decision) -> list[SetOutcome]:
        return [outcome for outcome in self.outcomes if outcome.decision in decisions]

    @property
    def missing_bytes(self) -> int:
        """How much more must be freed to reach ``min_free_gb`` (0 when reached)."""
        return max(0, self.min_free_bytes - self.free_after)

    @property
    def held_back(self) -> list[SetOutcome]:
        return self.of(Decision.HELD_BACK, Decision.DELETE_STOPPED)

    def blocking_checks(self) -> dict[str, int]:
        """Sets held back per failed check."""
        return dict(sorted(Counter(outcome.check or "unknown" for outcome in self.held_back).items()))

    def summary(self) -> str:
        """One paragraph: what was (or would be) deleted, free space, and what is still missing and why."""
        done = self.of(Decision.WOULD_DELETE if self.dry_run else Decision.DELETED)
        verb = "would delete" if self.dry_run else "deleted"
        freed = sum(outcome.freed_bytes for outcome in done)
        text = (
            f"{self.instrument_id}{' (dry run)' if self.dry_run else ''}: {verb} {len(done)} set(s), {gb(freed)}; "
            f"free space {gb(self.free_before)} -> {gb(self.free_after)}{' (estimated)' if self.dry_run else ''}, "
            f"purge.min_free_gb {gb(self.min_free_bytes)}"
        )
        if self.missing_bytes:
            reasons = []
            if self.held_back:
                reasons.append(f"{len(self.held_back)} held back by failed checks ({self._checks_text()})")
            young = self.of(Decision.TOO_YOUNG)
            if young:
                reasons.append(f"{len(young)} younger than purge.min_age_days ({self.min_age_days:g})")
            if self.of(Decision.OVER_LIMIT):
                reasons.append(f"{len(self.of(Decision.OVER_LIMIT))} left for the next run (max_per_run)")
            text += f". Still {gb(self.missing_bytes)} short: " + ("; ".join(reasons) or "no more moved sets")
        elif self.held_back:
            text += f". Held back by failed checks: {self._checks_text()}"
        return text

    def _checks_text(self) -> str:
        return ", ".join(f"{check}: {count}" for check, count in self.blocking_checks().items())

    def table(self) -> str:
        """The summary, then one row per candidate set."""
        header = ("RAW FILE", "ACQUIRED", "SIZE", "DECISION", "REASON")
        rows = [
            (
                outcome.raw_file_id,
                f"{outcome.created_at:%Y-%m-%d %H:%M}" if outcome.created_at else "?",
                gb(outcome.size or 0),
                outcome.decision.value + (" (resumed)" if outcome.resumed else ""),
                outcome.reason,
            )
            for outcome in self.outcomes
        ]
        lines = [self.summary()]
        if rows:
            lines += ["", *table_lines(header, rows)]
        return "\n".join(lines)

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form (the task's XCom, ``purge --json``)."""
        return {
            "instrument_id": self.instrument_id,
            "folder": str(self.folder),
            "dry_run": self.dry_run,
            "summary": self.summary(),
            "min_free_bytes": self.min_free_bytes,
            "free_before": self.free_before,
            "free_after": self.free_after,
            "missing_bytes": self.missing_bytes,
            "min_age_days": self.min_age_days,
            "max_per_run": self.max_per_run,
            "require": self.require,
            "blocking_checks": self.blocking_checks(),
            "sets": [
                {
                    "raw_file_id": outcome.raw_file_id,
                    "created_at": outcome.created_at.isoformat() if outcome.created_at else None,
                    "size": outcome.size,
                    "decision": outcome.decision.value,
                    "reason": outcome.reason,
                    "check": outcome.check,
                    "freed_bytes": outcome.freed_bytes,
                    "resumed": outcome.resumed,
                }
                for outcome in self.outcomes
            ],
        }
