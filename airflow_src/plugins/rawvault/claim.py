"""THE upload claim: who may upload a raw file now, for how long, and the upload status it records.

This module is the only writer of ``upload_claim_owner``,
``upload_claim_expires_at`` and of the upload ``backup_status`` transitions
(``upload_in_progress``, ``upload_done``, ``upload_failed``), for the upload
(:mod:`rawvault.backup`) and the sweeper (:mod:`rawvault.sweeper`) alike.
Every write is a compare-and-set through :func:`shared.db.interface.update_raw_file`.

Two runs for one raw file (a double trigger, an Airflow retry racing a
zombie, backup_sweeper racing a manual clear) must never both upload it:
1. **Claim** (:func:`claim`). One atomic compare-and-set on the document:
   from ``copying_done``, ``upload_failed`` or ``upload_done``, or from an
   ``upload_in_progress`` that is stale (:func:`is_stale`), it sets
   ``backup_status=upload_in_progress``, ``upload_claim_owner=<host>:<pid>:<random>``
   and ``upload_claim_expires_at=now + backup.s3.stale_upload_minutes``. The
   expected values are the ones it read, so of two runs that read the same
   document only one matches.
2. **Lease** (:class:`Heartbeat`). A thread renews the lease every third of
   its length (at most every minute), again conditional on still being the
   owner. If the owner changed, or the lease ran out without a renewal
   (MongoDB unreachable), the run has lost its claim: :meth:`Claim.check`
   raises :class:`UploadClaimLostError` before its next S3 request that
   changes anything, and unfinished multipart uploads stay for the new owner.
3. **Outcome** (:func:`record`). Every status write at the end (``upload_done``
   or ``upload_failed``, which also clear the claim) is conditional on still
   owning the claim, so a run that lost it can never overwrite the status of
   the run that took over.
4. **The loser** of a race for a raw file that another run holds fails at
   once with :class:`UploadInProgressError` and writes nothing.
5. **A dead owner** (SIGKILL, a lost worker) stops renewing; once its lease
   has expired the next run (an Airflow retry, or the sweeper through
   :func:`release_stale`) takes over and resumes its multipart uploads.

**One staleness rule** (:func:`is_stale`): a claim with an owner and a lease
is held until the lease expires; an ``upload_in_progress`` document without
a lease (written before leases existed, or by hand) counts as held until it
has been untouched for a lease length (``db_updated_at + lease``). Leases use
the workers' clocks (keep them in sync, NTP).
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import uuid
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from rawvault.claim_errors import (
    UploadClaimLostError,
    UploadInProgressError,
    UploadNotReadyError,
    UploadNotRecordedError,
    UploadSupersededError,
    in_progress_error,
    superseded_error,
)
from shared.db.interface import DB_ERRORS, get_raw_file, update_raw_file, utc_now
from shared.db.models import BackupStatus, RawFile

# The claim's errors are re-exported: callers catch them as claim.<Error>.
__all__ = [
    "Claim", "Heartbeat", "UploadClaimLostError", "UploadInProgressError", "UploadNotReadyError",
    "UploadNotRecordedError", "UploadSupersededError", "claim", "held_until", "is_stale", "lease_alive",
    "multipart_recorder", "new_owner_token", "record", "record_done", "record_failed", "record_given_up",
    "release_stale", "superseded_error",
]  # fmt: skip

log = logging.getLogger(__name__)

CLAIMABLE_STATUSES = tuple(sorted(BackupStatus.CLAIMABLE))  # sorted: the error message lists them
MAX_DETAILS_CHARS = 2000
MAX_HEARTBEAT_SECONDS = 60.0
GAVE_UP_MARK = "gave up after"


# --- the staleness rule ----------------------------------------------------------------------------------------
def lease_alive(raw_file: RawFile, now: datetime) -> bool:
    """Whether the raw file has a claim owner whose lease has not expired at ``now``."""
    expires = raw_file.upload_claim_expires_at
    return bool(raw_file.upload_claim_owner) and expires is not None and expires > now


def held_until(raw_file: RawFile, lease: timedelta) -> datetime | None:
    """Until when the claim on the raw file holds: its lease, or (no lease) its last write plus a lease length."""
    if raw_file.upload_claim_owner and raw_file.upload_claim_expires_at is not None:
        return raw_file.upload_claim_expires_at
    updated = raw_file.db_updated_at
    return updated + lease if updated is not None else None


def is_stale(raw_file: RawFile, now: datetime, lease: timedelta) -> bool:
    """Whether the claim on the raw file no longer holds at ``now`` (see the module docstring)."""
    until = held_until(raw_file, lease)
    return until is None or until <= now


# --- the claim of one run --------------------------------------------------------------------------------------
def new_owner_token() -> str:
    """A claim owner that names the run: ``<host>:<pid>:<random>``."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


class Claim:
    """A run's claim on a raw file: owner token, lease, and whether it was lost."""

    def __init__(self, raw_file_id: str, owner: str, lease: timedelta, expires_at: datetime, attempt: int) -> None:
        self.raw_file_id = raw_file_id
        self.owner = owner
        self.lease = lease
        self.expires_at = expires_at
        self.attempt = attempt
        self._lost: str | None = None
        self._lock = threading.Lock()
        self._progress: Callable[[], dict[str, Any]] | None = None

    @property
    def lost(self) -> str | None:
        """Why the claim was lost (``None`` while it is held)."""
        with self._lock:
            return self._lost

    def mark_lost(self, why: str) -> None:
        """Remember that the claim is lost (the first reason wins)."""
        with self._lock:
            if self._lost is None:
                self._lost = why
                log.error("%s: lost the upload claim: %s", self.raw_file_id, why)

    def check(self) -> None:
        """Raise :class:`UploadClaimLostError` unless this run still owns the raw file."""
        if self.lost is None and utc_now() >= self.expires_at:
            self.mark_lost(
                f"its lease expired at {self.expires_at:%Y-%m-%d %H:%M:%S} UTC without a renewal (MongoDB unreachable?)"
            )
        if self.lost is not None:
            raise UploadClaimLostError(
                f"this run ({self.owner}) stopped uploading raw file {self.raw_file_id!r}: {self.lost}. Another run "
                "may own it now and resumes what this run left; nothing was recorded by this run"
            )

    def watch_progress(self, source: Any) -> None:
        """Record ``source.snapshot()`` (bytes done/total, rate, ETA) with every lease renewal from now on."""
        self._progress = source.snapshot

    def _progress_fields(self, now: datetime) -> dict[str, Any]:
        try:
            return {"upload_progress": {**self._progress(), "at": now}} if self._progress else {}
        except Exception as error:  # progress is a nicety: never lose the lease over it
            log.warning("%s: upload progress not recorded: %s", self.raw_file_id, error)
            return {}

    def renew(self) -> None:
        """Extend the lease (conditional on still being the owner), with the upload's progress; the heartbeat's."""
        if self.lost is not None:
            return
        now = utc_now()
        expires = now + self.lease
        try:
            renewed = update_raw_file(
                self.raw_file_id,
                expected={"upload_claim_owner": self.owner},
                upload_claim_expires_at=expires,
                **self._progress_fields(now),
            )
        except Exception as error:
            log.warning("%s: could not renew the upload claim (will retry): %s", self.raw_file_id, error)
            if utc_now() >= self.expires_at:
                self.mark_lost(f"its lease expired while MongoDB could not be reached ({type(error).__name__})")
            return
        if renewed:
            with self._lock:
                self.expires_at = expires
        else:
            self.mark_lost("another run took over its claim (its lease had expired)")


class Heartbeat:
    """Renews a claim's lease in a daemon thread while the ``with`` block runs."""

    def __init__(self, claim: Claim) -> None:
        self.claim = claim
        self.interval = max(0.2, min(claim.lease.total_seconds() / 3, MAX_HEARTBEAT_SECONDS))
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"rawvault-claim-{claim.raw_file_id}", daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.claim.renew()

    def __enter__(self) -> Heartbeat:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=30)


def _attempts_query(attempts: int) -> dict[str, Any]:
    """Compare-and-set condition "the raw file has had ``attempts`` upload attempts" (missing counts as 0)."""
    return {"s3_upload_attempts__in": [0, None]} if attempts == 0 else {"s3_upload_attempts": attempts}


def claim(
    raw_file: RawFile, lease: timedelta, expected_attempts: int | None = None, activity: str = "uploading to S3"
) -> Claim:
    """Claim ``raw_file`` (as read) for one upload attempt; see the module docstring.

    ``activity`` opens the ``backup_status_details`` while the claim is held
    (e.g. "repairing the S3 backup: ..." for a set recorded ``upload_done``).

    Raises :class:`UploadNotReadyError` (no verified local copy, or the status
    changed meanwhile), :class:`UploadInProgressError` (another run holds it)
    or :class:`UploadSupersededError` (``expected_attempts`` no longer matches).
    """
    status = raw_file.backup_status
    if status not in CLAIMABLE_STATUSES:
        raise UploadNotReadyError(
            f"raw file {raw_file.id!r} has backup_status {status!r}: the upload needs a verified local copy "
            f"(backup_status one of {', '.join(CLAIMABLE_STATUSES)}); run copy_raw_file first"
        )
    now = utc_now()
    if status == BackupStatus.UPLOAD_IN_PROGRESS.value and not is_stale(raw_file, now, lease):
        raise in_progress_error(raw_file, held_until(raw_file, lease))
    owner = new_owner_token()
    attempt = (raw_file.s3_upload_attempts or 0) + 1
    expires = now + lease
    expected: dict[str, Any] = {
        "backup_status": status,
        "upload_claim_owner": raw_file.upload_claim_owner,
        "upload_claim_expires_at": raw_file.upload_claim_expires_at,
    }
    if expected_attempts is not None:
        expected.update(_attempts_query(expected_attempts))
    claimed = update_raw_file(
        raw_file.id,
        expected=expected,
        backup_status=BackupStatus.UPLOAD_IN_PROGRESS.value,
        backup_status_details=f"{activity} (attempt {attempt}, run {owner})"[:MAX_DETAILS_CHARS],
        s3_upload_attempts=attempt,
        s3_upload_attempted_at=now,
        upload_claim_owner=owner,
        upload_claim_expires_at=expires,
        upload_progress=None,  # an earlier attempt's
    )
    if not claimed:
        raise _claim_refused(raw_file.id, lease, expected_attempts)
    log.info("%s: claimed for upload attempt %d by %s until %s", raw_file.id, attempt, owner, expires.isoformat())
    return Claim(raw_file.id, owner, lease, expires, attempt)


def _claim_refused(raw_file_id: str, lease: timedelta, expected_attempts: int | None) -> UploadNotReadyError:
    """Why the compare-and-set of a claim matched nothing: the document changed since it was read."""
    current = get_raw_file(raw_file_id)
    if current.backup_status == BackupStatus.UPLOAD_IN_PROGRESS.value and not is_stale(current, utc_now(), lease):
        return in_progress_error(current, held_until(current, lease))
    if expected_attempts is not None and (current.s3_upload_attempts or 0) != expected_attempts:
        return superseded_error(current, expected_attempts)
    return UploadNotReadyError(
        f"the backup_status of raw file {raw_file_id!r} changed while the upload was starting (now "
        f"{current.backup_status!r}; another run?); retry the task once that run has finished"
    )


# --- writes while holding the claim ----------------------------------------------------------------------------


def record(claim: Claim, what: str, **fields: Any) -> bool:
    """Write the outcome if this run still owns the claim (and release it); raise when MongoDB is unreachable."""
    try:
        return update_raw_file(
            claim.raw_file_id,
            expected={"upload_claim_owner": claim.owner},
            upload_claim_owner=None,
            upload_claim_expires_at=None,
            upload_progress=None,
            **fields,
        )
    except DB_ERRORS as error:
        cause = str(error).split(" (configured")[0][:200]  # pymongo appends its whole topology description
        raise UploadNotRecordedError(
            f"MongoDB could not be reached to record {what} for raw file {claim.raw_file_id!r} "
            f"({type(error).__name__}: {cause}). It stays upload_in_progress, claimed by this run until "
            f"{claim.expires_at:%Y-%m-%d %H:%M:%S} UTC (backup.s3.stale_upload_minutes); after that a retry of "
            "upload_to_s3 or backup_sweeper takes over, skips whatever is verified in S3 already and records the "
            "outcome"
        ) from error


def record_done(claim: Claim, details: str, s3_backup_key: str, s3_etag: str) -> bool:
    """``upload_done`` with the key and ETag, if this run still owns the claim."""
    return record(
        claim,
        "upload_done",
        backup_status=BackupStatus.UPLOAD_DONE.value,
        backup_status_details=details,
        s3_backup_key=s3_backup_key,
        s3_etag=s3_etag,
        s3_multipart_uploads={},
    )


def record_failed(claim: Claim, reason: str) -> bool:
    """``upload_failed`` with the reason and the time (the sweeper's backoff counts from it), if still the owner."""
    return record(
        claim,
        "upload_failed",
        backup_status=BackupStatus.UPLOAD_FAILED.value,
        backup_status_details=reason[:MAX_DETAILS_CHARS],
        s3_upload_failed_at=utc_now(),
    )


def multipart_recorder(claim: Claim, known: dict[str, str]) -> Callable[[str, str | None], None]:
    """Record unfinished multipart uploads on the raw file (``s3_multipart_uploads``) while owning the claim."""
    lock = threading.Lock()

    def record_upload(key: str, upload_id: str | None) -> None:
        # The write under the lock too: files of a set upload side by side, and an older snapshot of the
        # uploads written after a newer one would lose an upload id.
        with lock:
            if known.get(key) == upload_id:
                return
            if upload_id is None:
                known.pop(key, None)
            else:
                known[key] = upload_id
            try:
                still_owner = update_raw_file(
                    claim.raw_file_id, expected={"upload_claim_owner": claim.owner}, s3_multipart_uploads=dict(known)
                )
            except Exception as error:  # the upload is found by listing anyway
                log.warning(
                    "%s: could not record multipart upload %s of %s: %s", claim.raw_file_id, upload_id, key, error
                )
                return
        if not still_owner:
            claim.mark_lost("another run took over its claim")

    return record_upload


# --- the sweeper's writes --------------------------------------------------------------------------------------


def release_stale(raw_file: RawFile, now: datetime, lease: timedelta) -> bool:
    """Mark a stale ``upload_in_progress`` raw file (as read) ``upload_failed``; return whether it did.

    A compare-and-set on the status, owner and lease it read, so an upload
    that renewed its lease meanwhile is never touched. ``s3_upload_failed_at``
    is when its claim stopped holding, so the sweeper's backoff counts from then.
    """
    if raw_file.backup_status != BackupStatus.UPLOAD_IN_PROGRESS.value or not is_stale(raw_file, now, lease):
        return False
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
        # The run was known alive until its lease ran out: the backoff counts from then, as Airflow's own
        # retry of a dead task counts from when it noticed the task was gone.
        s3_upload_failed_at=min(expires, now) if expires else now,
        upload_claim_owner=None,
        upload_claim_expires_at=None,
    )


def record_given_up(raw_file: RawFile, attempts: int) -> None:
    """Say once in ``backup_status_details`` that the sweeper gave up (the status itself is left as it is)."""
    details = raw_file.backup_status_details or ""
    if GAVE_UP_MARK in details:
        return
    text = f"gave up after {attempts} attempts; clear upload_to_s3 to retry by hand. Last error: {details}"
    update_raw_file(
        raw_file.id,
        expected={"backup_status": raw_file.backup_status, "s3_upload_attempts": raw_file.s3_upload_attempts},
        backup_status_details=text[:MAX_DETAILS_CHARS],
    )
