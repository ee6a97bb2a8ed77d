"""backup_sweeper's logic: find S3 uploads to retry, so a transient outage heals without anybody clicking.

:func:`find_upload_retries` runs on the sweeper's schedule
(``backup.s3.sweep_schedule``) and returns the raw files whose upload is
retried now; the sweeper DAG only finds and marks them and triggers one
``s3_upload_retry`` run per raw file (which calls
:func:`rawvault.backup.upload_raw_file`, resuming unfinished
multipart uploads), so a long upload never holds up the next sweep.

- **Stale uploads**: ``upload_in_progress`` whose claim no longer holds
  (:func:`rawvault.claim.is_stale`: ``backup.s3.stale_upload_minutes``
  without a renewal, the worker was killed or lost). Each is first marked
  ``upload_failed`` by :func:`rawvault.claim.release_stale`, with the reason and
  ``s3_upload_failed_at`` = when its lease expired, with a compare-and-set on
  the owner and lease it read, so an upload that renewed its lease meanwhile
  is never touched; then it is treated like any other failed upload.
- **Failed uploads**: ``upload_failed`` with fewer than
  ``backup.s3.max_upload_attempts`` attempts (every attempt counts, the
  task's own Airflow retries too), once their backoff has passed since the
  last attempt *failed* (``s3_upload_failed_at``; documents written before
  it existed: since the attempt started): ``upload_retry_delay_minutes x
  2^attempts``, at most :data:`MAX_BACKOFF`. Airflow schedules the task's
  own next retry from the failure too, ``upload_retry_delay_minutes x
  2^(attempts-1)`` (up to twice that with its jitter), so the sweeper waits
  at least as long as Airflow's retry and picks up what those retries left
  behind rather than racing them.
- **Never uploaded**: with ``backup_type: s3``, ``copying_done`` raw files
  (verified local copy, ``file_info`` and ``backup_base_path`` recorded)
  untouched for ``backup.s3.pending_upload_after_hours``: their
  ``upload_to_s3`` never ran (the handler run was marked failed, the pool
  was missing, backup_type was switched from local to s3).
- **Given up**: raw files with ``max_upload_attempts`` attempts or more are
  logged and their ``backup_status_details`` say so once ("gave up after N
  attempts; clear upload_to_s3 to retry by hand", :func:`rawvault.claim.record_given_up`); a manual clear of
  ``upload_to_s3`` is not limited by the attempt count.

Each retry carries the attempt count the sweep saw; the retry stops without
changing anything when another run has attempted the upload since
(:class:`rawvault.claim.UploadSupersededError`), so a retry that waited
in the pool never adds an attempt without backoff.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from rawvault.claim import record_given_up, release_stale
from rawvault.keys import MAX_UPLOAD_RETRY_DELAY
from shared.db.interface import (
    GIVEN_UP_NOTICE,
    failed_uploads,
    raw_files_uploading,
    uploads_pending_since,
    utc_now,
)
from shared.settings import Settings

log = logging.getLogger(__name__)

# The same cap as Airflow's max_retry_delay of upload_to_s3, so the sweeper's backoff never undercuts Airflow's.
MAX_BACKOFF = MAX_UPLOAD_RETRY_DELAY
MAX_RETRIES_PER_SWEEP = 200


@dataclass(frozen=True)
class UploadRetry:
    """One upload the sweeper retries now."""

    raw_file_id: str
    attempts: int  # s3_upload_attempts when the sweep picked it: the retry stops if it changed
    due: datetime  # when its backoff passed (or, never uploaded, when it became overdue)

    def retry_round(self, now: datetime) -> int:
        """Whole :data:`MAX_BACKOFF` periods it has been due: after one, a retry that never ran is triggered anew."""
        return max(0, int((now - self.due) / MAX_BACKOFF))


@dataclass
class SweepReport:
    """What one sweep found."""

    retries: list[UploadRetry] = field(default_factory=list)  # to retry now, oldest due first
    stale: list[str] = field(default_factory=list)  # upload_in_progress with an expired lease, now upload_failed
    never_uploaded: list[str] = field(default_factory=list)  # copying_done for too long: retried now
    waiting: dict[str, datetime] = field(default_factory=dict)  # raw file id -> when it is due
    gave_up: list[str] = field(default_factory=list)

    @property
    def retry(self) -> list[str]:
        """The raw file ids to retry now, oldest due first."""
        return [retry.raw_file_id for retry in self.retries]


def capped_backoff(attempts: int, base_minutes: float, cap: timedelta) -> timedelta:
    """``base_minutes x 2^attempts``, at most ``cap``, for any attempt count (never an OverflowError)."""
    if base_minutes <= 0:
        return timedelta(0)
    # Doubling in floats and capping before a timedelta is built: 2^attempts minutes overflow a timedelta
    # from about 37 attempts at 15 minutes (max_upload_attempts allows 100). 2^64 is past any cap.
    minutes = base_minutes * 2.0 ** min(max(attempts, 0), 64)
    return min(timedelta(minutes=min(minutes, cap.total_seconds() / 60)), cap)


def backoff(attempts: int, base_minutes: float) -> timedelta:
    """How long after an attempt failed the sweeper retries a raw file with ``attempts`` attempts."""
    return capped_backoff(attempts, base_minutes, MAX_BACKOFF)


def sweep(settings: Settings, now: datetime | None = None) -> SweepReport:
    """Release stale uploads and sort failed and never-uploaded ones into retry now / later / given up."""
    s3 = settings.backup.s3
    report = SweepReport()
    if not settings.s3_enabled or s3 is None:
        return report
    now = now or utc_now()
    lease = timedelta(minutes=s3.stale_upload_minutes)
    for raw_file in raw_files_uploading():
        if release_stale(raw_file, now, lease):
            report.stale.append(raw_file.id)
    due: list[UploadRetry] = []
    for raw_file in failed_uploads(max_attempts=s3.max_upload_attempts, given_up_since=now - GIVEN_UP_NOTICE):
        attempts = raw_file.s3_upload_attempts or 0
        if attempts >= s3.max_upload_attempts:
            report.gave_up.append(raw_file.id)
            record_given_up(raw_file, attempts)
            continue
        last = raw_file.s3_upload_failed_at or raw_file.s3_upload_attempted_at
        when = (last + backoff(attempts, s3.upload_retry_delay_minutes)) if last else now
        if when <= now:
            due.append(UploadRetry(raw_file.id, attempts, when))
        else:
            report.waiting[raw_file.id] = when
    overdue = timedelta(hours=s3.pending_upload_after_hours)
    pending = uploads_pending_since(
        now - overdue, max_attempts=s3.max_upload_attempts, given_up_since=now - GIVEN_UP_NOTICE
    )
    for raw_file in pending:
        if not raw_file.file_info or not raw_file.backup_base_path:
            log.warning(
                "%s: copying_done but without file_info or backup_base_path: not uploaded (re-run copy_raw_file)",
                raw_file.id,
            )
            continue
        attempts = raw_file.s3_upload_attempts or 0
        if attempts >= s3.max_upload_attempts:
            report.gave_up.append(raw_file.id)
            record_given_up(raw_file, attempts)
            continue
        report.never_uploaded.append(raw_file.id)
        due.append(UploadRetry(raw_file.id, attempts, (raw_file.db_updated_at or now - overdue) + overdue))
    due.sort(key=lambda retry: (retry.due, retry.raw_file_id))
    report.retries = due[:MAX_RETRIES_PER_SWEEP]
    return report


def find_upload_retries(settings: Settings, now: datetime | None = None) -> list[UploadRetry]:
    """The uploads the sweeper retries now (oldest due first), after logging the sweep."""
    report = sweep(settings, now)
    for raw_file_id in report.stale:
        log.warning("%s: upload_in_progress with an expired claim (worker died?): marked upload_failed", raw_file_id)
    if report.never_uploaded:
        log.warning(
            "%d raw file(s) have had a verified local copy (copying_done) for more than %s h without an upload "
            "(their upload_to_s3 never ran): uploading them now: %s",
            len(report.never_uploaded),
            settings.backup.s3.pending_upload_after_hours if settings.backup.s3 else "?",
            ", ".join(report.never_uploaded),
        )
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
    log.info("retrying %d upload(s): %s", len(report.retries), ", ".join(report.retry) or "-")
    return report.retries


def find_backups_to_retry(settings: Settings, now: datetime | None = None) -> list[str]:
    """The raw file ids whose S3 upload the sweeper retries now (oldest due first), after logging the sweep."""
    return [retry.raw_file_id for retry in find_upload_retries(settings, now)]
