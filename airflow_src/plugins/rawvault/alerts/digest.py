"""The daily digest: counts per status, new failures, the oldest unprotected raw file, bytes backed up, free space."""

from __future__ import annotations

from collections import Counter
from datetime import date, datetime, timedelta
from typing import Any

from rawvault.alerts.disks import DiskUsage, disk_observations
from rawvault.alerts.model import Health, Kind, summary_message
from rawvault.alerts.raw_files import SUBJECT_PREFIX
from shared.db.alert_queries import (
    backed_up_since,
    count_failed,
    counts_by_backup_status,
    counts_by_status,
    oldest_unprotected,
)
from shared.db.alerts import OK_STATE, latest_record, open_alert_records, records_gone_bad_since
from shared.settings import Settings
from shared.settings.alerts import GB

SUBJECT_PREFIX_DIGEST = "digest:"
MAX_LISTED = 20
BACKED_UP_PERIOD = timedelta(hours=24)


def digest_subject(day: date) -> str:
    """The ledger subject of one day's digest (one digest per day, however often it is triggered)."""
    return f"{SUBJECT_PREFIX_DIGEST}{day.isoformat()}"


def _counts(counts: dict[str, int]) -> str:
    return ", ".join(f"{name} {n}" for name, n in sorted(counts.items(), key=lambda item: (-item[1], item[0]))) or "-"


def _size(size: int) -> str:
    return f"{size / GB:,.2f} GB"


def _new_failures(since: datetime) -> list[str]:
    records = records_gone_bad_since(since, SUBJECT_PREFIX)
    lines = [f"New problems since {since:%Y-%m-%d %H:%M} UTC: {len(records)}"]
    for record in records[:MAX_LISTED]:
        title = (record.message or {}).get("title") if record.state != OK_STATE else record.last_bad_state
        status = " (resolved since)" if record.state == OK_STATE else ""
        lines.append(f"- {title or record.id}{status}")
    if len(records) > MAX_LISTED:
        lines.append(f"- ... and {len(records) - MAX_LISTED} more")
    return lines


def _oldest_unprotected(settings: Settings, now: datetime) -> str:
    raw_file = oldest_unprotected(s3=settings.s3_enabled)
    if raw_file is None:
        return "Oldest unprotected raw file: none, every raw file has a verified backup."
    hours = (now - raw_file.created_at).total_seconds() / 3600 if raw_file.created_at else 0
    return (
        f"Oldest unprotected raw file: {raw_file.id} ({raw_file.instrument_id}), acquired "
        f"{raw_file.created_at:%Y-%m-%d %H:%M} UTC ({hours:.0f} h ago), status {raw_file.status}, "
        f"backup status {raw_file.backup_status or 'none yet'}"
    )


def _backed_up(settings: Settings, now: datetime) -> list[str]:
    per_instrument = backed_up_since(now - BACKED_UP_PERIOD, s3=settings.s3_enabled)
    where = "to S3" if settings.s3_enabled else "locally"
    lines = [f"Backed up {where} in the last 24 h:"]
    lines += [f"- {iid}: {done.raw_files} raw file(s), {_size(done.bytes)}" for iid, done in per_instrument.items()]
    return lines if per_instrument else [lines[0] + " nothing"]


def digest_message(
    settings: Settings, *, day: date, now: datetime, disk_usage: DiskUsage | None = None
) -> dict[str, Any]:
    """The digest message of ``day``; new problems are those since the previous digest (or the last 24 h)."""
    previous = latest_record(SUBJECT_PREFIX_DIGEST)
    since = previous.changed_at if previous is not None else now - timedelta(hours=24)
    open_kinds = Counter(record.kind or "?" for record in open_alert_records([SUBJECT_PREFIX, "disk:"]).values())
    by_status = counts_by_status()
    by_backup = counts_by_backup_status(s3=settings.s3_enabled)
    failed = count_failed()
    lines = [
        f"Raw files by status: {_counts(by_status)}",
        f"Raw files by backup status: {_counts(by_backup)}",
        f"Open alerts: {_counts(dict(open_kinds)) if open_kinds else 'none'}",
        "",
        *_new_failures(since),
        "",
        _oldest_unprotected(settings, now),
        "",
        *_backed_up(settings, now),
        "",
        "Free space:",
    ]
    kwargs = {"disk_usage": disk_usage} if disk_usage else {}
    for observation in disk_observations(settings, **kwargs):
        free = dict(observation.details).get("free", "unknown")
        low = " (LOW)" if observation.health == Health.BAD else ""
        lines.append(f"- {observation.subject.removeprefix('disk:')}: {free}{low}")
    title = f"Daily backup digest {day.isoformat()}: {failed} failed, {open_kinds.get('deadline', 0)} overdue"
    return summary_message(Kind.DIGEST, title, lines, label=settings.alerts.label, now=now, subject=digest_subject(day))
