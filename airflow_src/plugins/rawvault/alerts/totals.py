"""The totals per instrument and project the Backups page shows, recomputed by the alert check when due.

Why the alert check and not the daily digest: it runs every few minutes on the maintenance queue, so the
page's totals are at most about an hour old (the digest's would be a day old), and it already records what
the page may not compute itself (free space). Each instrument is recomputed at most once per
:data:`TOTALS_EVERY`: one aggregation over that instrument's raw files, bounded by its index.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta

from shared.db.models import BackupStatus
from shared.db.totals import fold_totals, latest_totals, record_totals, totals_groups
from shared.settings import Settings

log = logging.getLogger(__name__)

TOTALS_EVERY = timedelta(hours=1)


def verified_statuses(settings: Settings) -> tuple[str, frozenset[str]]:
    """What "verified" means for this deployment: ``("s3", {upload_done})`` or ``("local", verified local copy)``."""
    if settings.s3_enabled:
        return "s3", frozenset({BackupStatus.UPLOAD_DONE.value})
    return "local", frozenset(BackupStatus.LOCAL_COPY_VERIFIED)


def _aware(at: datetime) -> datetime:
    return at if at.tzinfo else at.replace(tzinfo=UTC)


def record_due_totals(settings: Settings, now: datetime) -> list[str]:
    """Recompute and record the totals of the configured instruments that are due; returns them.

    Due: never computed, computed with another meaning of verified, or older than :data:`TOTALS_EVERY`.
    """
    verified_by, statuses = verified_statuses(settings)
    last = latest_totals(settings.instruments)
    due = [
        instrument_id
        for instrument_id in settings.instruments
        if instrument_id not in last
        or last[instrument_id].get("verified_by") != verified_by
        or now - _aware(last[instrument_id]["measured_at"]) >= TOTALS_EVERY
    ]
    for instrument_id in due:
        projects = fold_totals(totals_groups(instrument_id), statuses)
        record_totals(instrument_id, projects, verified_by=verified_by, now=now)
    if due:
        log.info("totals recorded for %s", ", ".join(due))
    return due


__all__ = ["TOTALS_EVERY", "record_due_totals", "verified_statuses"]
