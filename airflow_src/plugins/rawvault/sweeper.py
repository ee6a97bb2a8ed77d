"""backup_sweeper's logic: find S3 uploads to retry, so a transient outage heals without anybody clicking.

:func:`find_backups_to_retry` runs on the sweeper's schedule
(``backup.s3.sweep_schedule``) and returns the raw files whose upload the
sweeper retries now (each with :func:`rawvault.s3.backup.upload_raw_file_to_s3`,
which resumes unfinished multipart uploads):

- **Stale uploads**: ``upload_in_progress`` whose claim lease expired
  (``backup.s3.stale_upload_minutes`` without a renewal: the worker was
  killed or lost). Each is first marked ``upload_failed`` with the reason,
  with a compare-and-set on the owner and lease it read, so an upload that
  renewed its lease meanwhile is never touched; then it is treated like any
  other failed upload.
- **Failed uploads**: ``upload_failed`` with fewer than
  ``backup.s3.max_upload_attempts`` attempts (every attempt counts, the
  task's own Airflow retries too), once their backoff has passed since the
  last attempt started: ``upload_retry_delay_minutes x 2^attempts``, at most
  :data:`MAX_BACKOFF`. That is twice the delay of the task's own next Airflow
  retry, so the sweeper picks up what those retries left behind rather than
  racing them.
- **Given up**: ``upload_failed`` with ``max_upload_attempts`` attempts or
  more are logged and their ``backup_status_details`` say so once
  ("gave up after N attempts; clear upload_to_s3 to retry by hand"); a
  manual clear of ``upload_to_s3`` is not limited by the attempt count.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from shared.db.interface import connect_db, update_raw_file, utc_now
from shared.db.models import BackupStatus, RawFile
from shared.settings import Settings

log = logging.getLogger(__name__)

MAX_BACKOFF = timedelta(hours=6)
MAX_RETRIES_PER_SWEEP = 200
GAVE_UP_MARK = "gave up after"
MAX_DETAILS_CHARS = 2000


@dataclass
class SweepReport:
    """What one sweep found."""

    retry: list[str] = field(default_factory=list)
    stale: list[str] = field(default_factory=list)  # upload_in_progress with an expired lease, now upload_failed
    waiting: dict[str, datetime] = field(default_factory=dict)  # raw file id -> when it is due
    gave_up: list[str] = field(default_factory=list)


def backoff(attempts: int, base_minutes: float) -> timedelta:
    """How long after an attempt started the sweeper retries a raw file with ``attempts`` attempts."""
    return min(timedelta(minutes=base_minutes) * 2 ** max(attempts, 0), MAX_BACKOFF)


def sweep(settings: Settings, now: datetime | None = None) -> SweepReport:
    """Release stale uploads and sort failed ones into retry now / later / given up (see the module docstring)."""
    s3 = settings.backup.s3
    report = SweepReport()
    if not settings.s3_enabled or s3 is None:
        return report
    connect_db()
    now = now or utc_now()
    lease = timedelta(minutes=s3.stale_upload_minutes)
    for raw_file in RawFile.objects(backup_status=BackupStatus.UPLOAD_IN_PROGRESS.value):
        if _stale(raw_file, now, lease) and _release(raw_file):
            report.stale.append(raw_file.id)
    candidates = RawFile.objects(backup_status=BackupStatus.UPLOAD_FAILED.value).only(
        "id", "s3_upload_attempts", "s3_upload_attempted_at", "backup_status_details"
    )
    due: list[tuple[datetime, str]] = []
    for raw_file in candidates:
        attempts = raw_file.s3_upload_attempts or 0
        if attempts >= s3.max_upload_attempts:
            report.gave_up.append(raw_file.id)
            _mark_given_up(raw_file, attempts)
            continue
        last = raw_file.s3_upload_attempted_at
        when = (last + backoff(attempts, s3.upload_retry_delay_minutes)) if last else now
        if when <= now:
            due.append((when, raw_file.id))
        else:
            report.waiting[raw_file.id] = when
    report.retry = [raw_file_id for _when, raw_file_id in sorted(due)[:MAX_RETRIES_PER_SWEEP]]
    return report


def find_backups_to_retry(settings: Settings, now: datetime | None = None) -> list[str]:
    """The raw file ids whose S3 upload the sweeper retries now (oldest due first), after logging the sweep."""
    report = sweep(settings, now)
    for raw_file_id in report.stale:
        log.warning("%s: upload_in_progress with an expired claim (worker died?): marked upload_failed", raw_file_id)
    if report.gave_up:
        log.error(
            "%d raw file(s) failed their S3 upload %d times or more; the sweeper gave up on them (clear "
            "upload_to_s3 of their acquisition_handler run to retry by hand): %s",
            len(report.gave_up),
            settings.backup.s3.max_upload_attempts if settings.backup.s3 else 0,
            ", ".join(report.gave_up),
        )
    if report.waiting:
        log.info(
            "%d failed upload(s) wait for their backoff, next at %s",
            len(report.waiting),
            min(report.waiting.values()).isoformat(timespec="seconds"),
        )
    log.info("retrying %d upload(s): %s", len(report.retry), ", ".join(report.retry) or "-")
    return report.retry


def _stale(raw_file: RawFile, now: datetime, lease: timedelta) -> bool:
    expires = raw_file.upload_claim_expires_at
    if raw_file.upload_claim_owner and expires is not None:
        return expires <= now
    # No lease (written before leases existed): stale once untouched for a lease length.
    updated = raw_file.db_updated_at
    return updated is None or updated + lease <= now


def _release(raw_file: RawFile) -> bool:
    expires = raw_file.upload_claim_expires_at
    reason = (
        f"upload to S3 failed: the run {raw_file.upload_claim_owner or '(unknown)'} stopped renewing its claim"
        + (f" (it expired at {expires:%Y-%m-%d %H:%M:%S} UTC)" if expires else "")
        + "; its worker was probably killed or lost. backup_sweeper retries it and resumes what it uploaded"
    )
    return update_raw_file(
        raw_file.id,
        expected={
            "backup_status": BackupStatus.UPLOAD_IN_PROGRESS.value,
            "upload_claim_owner": raw_file.upload_claim_owner,
            "upload_claim_expires_at": expires,
        },
        backup_status=BackupStatus.UPLOAD_FAILED.value,
        backup_status_details=reason,
        upload_claim_owner=None,
        upload_claim_expires_at=None,
    )


def _mark_given_up(raw_file: RawFile, attempts: int) -> None:
    details = raw_file.backup_status_details or ""
    if GAVE_UP_MARK in details:
        return
    text = f"gave up after {attempts} attempts; clear upload_to_s3 to retry by hand. Last error: {details}"
    update_raw_file(
        raw_file.id,
        expected={"backup_status": BackupStatus.UPLOAD_FAILED.value, "s3_upload_attempts": raw_file.s3_upload_attempts},
        backup_status_details=text[:MAX_DETAILS_CHARS],
    )
