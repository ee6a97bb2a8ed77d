"""Use case "coverage": every raw file past ``backup.deadline_hours`` without a verified backup, with why.

``scripts/rawvault.sh coverage`` prints it and exits 1 when there is any
(:mod:`rawvault.cli`). The rule itself is :mod:`shared.db.coverage` (the one
"unprotected" predicate); this module only turns raw files into report rows.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from typing import Any

from shared.db.coverage import unprotected_raw_files
from shared.db.interface import utc_now
from shared.db.models import RawFile, RawFileStatus
from shared.settings import Settings

MAX_REASON_CHARS = 300


@dataclass(frozen=True)
class UnprotectedRow:
    """One raw file without a verified backup past the deadline."""

    raw_file_id: str
    instrument_id: str
    created_at: str
    age_hours: float
    status: str
    backup_status: str
    reason: str


@dataclass
class CoverageReport:
    """The unprotected raw files of one check."""

    deadline_hours: float
    verified: str  # what counts as protected: "a verified S3 copy" or "a verified local backup"
    instrument: str | None
    checked_at: str
    rows: list[UnprotectedRow] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.rows

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "unprotected": len(self.rows)}

    def table(self) -> str:
        """A summary line, then one line per raw file (oldest first)."""
        scope = f" of instrument {self.instrument}" if self.instrument else ""
        summary = (
            f"{len(self.rows)} raw file(s){scope} acquired more than {self.deadline_hours:g} h ago without "
            f"{self.verified}"
        )
        if not self.rows:
            return summary
        header = ("RAW FILE", "INSTRUMENT", "AGE", "STATUS", "BACKUP STATUS", "REASON")
        lines = [header] + [
            (r.raw_file_id, r.instrument_id, f"{r.age_hours:.0f} h", r.status, r.backup_status, r.reason)
            for r in self.rows
        ]
        widths = [max(len(line[i]) for line in lines) for i in range(len(header) - 1)]
        body = ["  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=False)) + "  " + line[-1]
                for line in lines]  # fmt: skip
        return "\n".join([summary + ":", "", *body])


def reason_of(raw_file: RawFile) -> str:
    """Why a raw file is not protected yet, in a line: the failure recorded, else where it waits."""
    if raw_file.backup_status_details:
        text = raw_file.backup_status_details
    elif raw_file.status == RawFileStatus.ERROR.value or raw_file.status_details:
        text = raw_file.status_details or "a pipeline step failed (no reason recorded)"
    elif raw_file.backup_status:
        text = f"its backup is {raw_file.backup_status}"
    else:
        text = f"its acquisition handler has not copied it yet ({raw_file.status or 'no status'})"
    text = " ".join(text.split())
    return text if len(text) <= MAX_REASON_CHARS else text[: MAX_REASON_CHARS - 1] + "…"


def coverage_report(
    settings: Settings, *, instrument: str | None = None, now: datetime | None = None
) -> CoverageReport:
    """Every raw file acquired more than ``backup.deadline_hours`` ago without a verified backup (S3 or local)."""
    now = now or utc_now()
    deadline = timedelta(hours=settings.backup.deadline_hours)
    s3 = settings.s3_enabled
    report = CoverageReport(
        deadline_hours=settings.backup.deadline_hours,
        verified="a verified S3 copy (upload_done)" if s3 else "a verified local backup (copying_done)",
        instrument=instrument,
        checked_at=now.isoformat(timespec="seconds"),
    )
    for raw_file in unprotected_raw_files(s3=s3, overdue_before=now - deadline, instrument=instrument):
        report.rows.append(
            UnprotectedRow(
                raw_file_id=raw_file.id,
                instrument_id=raw_file.instrument_id,
                created_at=raw_file.created_at.isoformat(timespec="seconds"),
                age_hours=round((now - raw_file.created_at).total_seconds() / 3600, 1),
                status=raw_file.status or "-",
                backup_status=raw_file.backup_status or "not started",
                reason=reason_of(raw_file),
            )
        )
    return report
