"""The ``upload_to_s3`` step: upload one raw file's local backup copy and record the outcome on its ``RawFile``.

- Bucket: ``<bucket_prefix>-<normalised project id>`` (the fallback project
  when the raw file has none); a project id that shares its bucket with
  another project fails.
- Key prefix: ``<backup_base_path>/``, mirroring the local backup
  (``<instrument_id>/<YYYY_MM>/``, plus ``<raw_file_id>/`` for a renamed raw
  file); see :mod:`rawvault.s3.keys`.
- Status: ``upload_in_progress`` while running; ``upload_done`` with
  ``s3_backup_key = s3://<bucket>/<key_prefix>`` and ``s3_etag`` only when
  every file is uploaded and verified and the manifest is written; otherwise
  ``upload_failed`` with the reason in ``backup_status_details`` and the
  time in ``s3_upload_failed_at`` (backup_sweeper's backoff counts from it),
  and the error is raised again so the task fails visibly.
- ``s3_etag``: for a raw file of one file (Thermo ``.raw``) the ETag S3
  reports for that object; for a set of several files (Bruker ``.d``, Sciex)
  the ETag S3 reports for the set's manifest object
  (``<key_prefix><raw_file_id>.rawvault-manifest.json``), which lists every
  file's key, size, MD5 and ETag.
- A retry is idempotent: verified objects are skipped, a complete set
  (manifest present and matching) uploads nothing, and an unfinished
  multipart upload is resumed (only missing parts are sent; see
  :mod:`rawvault.s3.multipart`). Its upload id is recorded in
  ``s3_multipart_uploads`` ({key: upload id}) while it is unfinished.

Concurrency: a claim with an owner and a lease
-----------------------------------------------
Two runs for one raw file (a double trigger, an Airflow retry racing a
zombie, backup_sweeper racing a manual clear) must never both upload it.

1. **Claim.** A run claims the raw file with one atomic compare-and-set on
   its document (:func:`shared.db.interface.update_raw_file` with
   ``expected=``): from ``copying_done``, ``upload_failed`` or
   ``upload_done``, or from ``upload_in_progress`` whose lease has expired
   (or that has none), it sets ``backup_status=upload_in_progress``,
   ``upload_claim_owner=<host>:<pid>:<random>`` and
   ``upload_claim_expires_at=now + backup.s3.stale_upload_minutes``. The
   expected values are the ones it read, so of two runs that read the same
   document only one matches.
2. **Lease.** A heartbeat thread renews the lease every third of its length
   (at most every minute), again conditional on still being the owner. If
   the owner changed, or the lease ran out without a renewal (MongoDB
   unreachable), the run has lost its claim: it stops before its next S3
   request that changes anything (:class:`UploadClaimLostError`) and leaves
   unfinished multipart uploads for the new owner to resume.
3. **Outcome.** Every status write at the end (``upload_done`` or
   ``upload_failed``, which also clear the claim) is conditional on still
   owning the claim, so a run that lost it can never overwrite the status of
   the run that took over.
4. **The loser** of a race for a raw file that another run is uploading
   (live lease) fails at once with :class:`UploadInProgressError`, naming the
   owner and the lease, and writes nothing. A raw file that is already
   ``upload_done`` with its manifest and recorded ETag in S3 is not claimed
   at all: the run returns ``already_complete`` and leaves the document as it
   is (two GET/HEAD requests, nothing uploaded).
5. **A dead owner** (SIGKILL, a lost worker) stops renewing; after
   ``stale_upload_minutes`` its lease has expired and the next run (an
   Airflow retry, or :mod:`rawvault.sweeper` via the ``backup_sweeper`` DAG)
   takes over and resumes its multipart uploads.

When MongoDB cannot be reached to record the outcome, the run fails with
:class:`UploadNotRecordedError` (the data in S3 is complete and verified);
the document stays ``upload_in_progress`` until the lease expires, and the
next run finds the set complete and records ``upload_done`` without
uploading again. Leases use the workers' clocks (keep them in sync, NTP).
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import uuid
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from rawvault.s3.buckets import bucket_name, check_no_bucket_collisions, ensure_bucket
from rawvault.s3.errors import BucketNameError, FileInfoError, PartSizeMismatchError, S3BackupError, S3PermanentError
from rawvault.s3.keys import key_prefix_for
from rawvault.s3.progress import DEFAULT_INTERVAL_SECONDS
from rawvault.s3.upload import ObjectSettings, UploadResult, upload_file_set, verify_complete_set
from shared.db.interface import DB_ERRORS, DatabaseError, get_projects, get_raw_file, update_raw_file, utc_now
from shared.db.models import BackupStatus, RawFile
from shared.settings import Settings

log = logging.getLogger(__name__)

CLAIMABLE_STATUSES = tuple(sorted(BackupStatus.CLAIMABLE))  # sorted: the error message lists them
MAX_DETAILS_CHARS = 2000
MAX_HEARTBEAT_SECONDS = 60.0


class UploadNotReadyError(S3PermanentError):
    """The raw file cannot be uploaded yet (no verified local copy) or another run claimed it."""


class UploadInProgressError(UploadNotReadyError):
    """Another run holds a live claim on the raw file: this run stops and writes nothing."""


class UploadSupersededError(UploadNotReadyError):
    """Another run attempted the upload since a retry was scheduled: the retry stops and writes nothing."""


class UploadClaimLostError(S3PermanentError):
    """The run lost its claim (another run took over, or its lease expired): it stops and records nothing."""

    resumable = True  # the new owner resumes the unfinished multipart uploads


class UploadNotRecordedError(DatabaseError):
    """MongoDB could not be reached to record the outcome of the upload."""


def project_bucket(settings: Settings, project_id: str | None, known_project_ids: list[str]) -> str:
    """The bucket of ``project_id`` (or the fallback project), refusing names shared with another project."""
    s3 = settings.backup.s3
    assert s3 is not None
    project_id = project_id or settings.watcher.fallback_project_id
    name = bucket_name(s3.bucket_prefix, project_id)
    sharing = [project_id]
    for other in {*known_project_ids, settings.watcher.fallback_project_id} - {project_id}:
        try:
            if bucket_name(s3.bucket_prefix, other) == name:
                sharing.append(other)
        except BucketNameError:
            continue  # that project has problems of its own, reported when its raw files upload
    check_no_bucket_collisions(s3.bucket_prefix, sharing)
    return name


def _backup_base_path(raw_file: RawFile) -> str:
    if raw_file.backup_base_path:
        return raw_file.backup_base_path
    from rawvault.local_backup import backup_base_path  # the same rule the copy step used

    return backup_base_path(raw_file.instrument_id, raw_file.created_at, raw_file.id, raw_file.original_name)


def _normalised(file_info: dict[str, Any]) -> dict[str, list]:
    return {path: list(entry) if isinstance(entry, list | tuple) else entry for path, entry in file_info.items()}


def _resolve_file_info(raw_file: RawFile, file_info: dict[str, Any] | None) -> dict[str, list]:
    recorded = _normalised(dict(raw_file.file_info or {}))
    if file_info is None:
        if not recorded:
            raise FileInfoError(f"raw file {raw_file.id!r} has no file_info: run compute_checksum first")
        return recorded
    given = _normalised(file_info)
    if recorded and given != recorded:
        raise FileInfoError(
            f"the file info passed to upload_to_s3 (XCom of compute_checksum) differs from the file_info recorded "
            f"for raw file {raw_file.id!r}: re-run compute_checksum and copy_raw_file for this raw file"
        )
    return given


def _resolve_part_size(raw_file: RawFile, settings: Settings, part_size: int | None) -> int:
    recorded = getattr(raw_file, "etag_part_size", None)
    chosen = part_size or recorded or settings.part_size_bytes
    if recorded and chosen != recorded:
        raise PartSizeMismatchError(
            f"raw file {raw_file.id!r} was checksummed with {recorded} byte parts, but the upload was asked to use "
            f"{chosen}: upload with the part size of compute_checksum"
        )
    return chosen


def _reason(error: BaseException) -> str:
    text = str(error) if isinstance(error, S3BackupError) else f"{type(error).__name__}: {error}"
    text = f"upload to S3 failed: {text}"
    return text if len(text) <= MAX_DETAILS_CHARS else text[: MAX_DETAILS_CHARS - 3] + "..."


def _lease_alive(raw_file: RawFile, now: datetime) -> bool:
    expires = raw_file.upload_claim_expires_at
    return bool(raw_file.upload_claim_owner) and expires is not None and expires > now


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

    @property
    def lost(self) -> str | None:
        """Why the claim was lost (``None`` while it is held)."""
        with self._lock:
            return self._lost

    def mark_lost(self, why: str) -> None:
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

    def renew(self) -> None:
        """Extend the lease (conditional on still being the owner); called by the heartbeat."""
        if self.lost is not None:
            return
        expires = utc_now() + self.lease
        try:
            renewed = update_raw_file(
                self.raw_file_id, expected={"upload_claim_owner": self.owner}, upload_claim_expires_at=expires
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


class _Heartbeat:
    """Renews a claim's lease in a daemon thread until stopped."""

    def __init__(self, claim: Claim) -> None:
        self.claim = claim
        self.interval = max(0.2, min(claim.lease.total_seconds() / 3, MAX_HEARTBEAT_SECONDS))
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"rawvault-claim-{claim.raw_file_id}", daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.claim.renew()

    def __enter__(self) -> _Heartbeat:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=30)


def _attempts_query(attempts: int) -> dict[str, Any]:
    """Compare-and-set condition "the raw file has had ``attempts`` upload attempts" (missing counts as 0)."""
    return {"s3_upload_attempts__in": [0, None]} if attempts == 0 else {"s3_upload_attempts": attempts}


def _superseded_error(raw_file: RawFile, expected_attempts: int) -> UploadSupersededError:
    return UploadSupersededError(
        f"raw file {raw_file.id!r} had {expected_attempts} upload attempt(s) when this retry was scheduled and has "
        f"{raw_file.s3_upload_attempts or 0} now (backup_status {raw_file.backup_status!r}): another run (an Airflow "
        "retry of upload_to_s3 or a manual clear) attempted it since, so this retry stopped without changing "
        "anything; backup_sweeper schedules the next one after its backoff if that attempt fails"
    )


def _claim(raw_file: RawFile, lease: timedelta, expected_attempts: int | None = None) -> Claim:
    status = raw_file.backup_status
    if status not in CLAIMABLE_STATUSES:
        raise UploadNotReadyError(
            f"raw file {raw_file.id!r} has backup_status {status!r}: the upload needs a verified local copy "
            f"(backup_status one of {', '.join(CLAIMABLE_STATUSES)}); run copy_raw_file first"
        )
    now = utc_now()
    if status == BackupStatus.UPLOAD_IN_PROGRESS.value and _lease_alive(raw_file, now):
        raise _in_progress_error(raw_file)
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
        backup_status_details=f"uploading to S3 (attempt {attempt}, run {owner})",
        s3_upload_attempts=attempt,
        s3_upload_attempted_at=now,
        upload_claim_owner=owner,
        upload_claim_expires_at=expires,
    )
    if not claimed:
        current = get_raw_file(raw_file.id)
        if current.backup_status == BackupStatus.UPLOAD_IN_PROGRESS.value and _lease_alive(current, utc_now()):
            raise _in_progress_error(current)
        if expected_attempts is not None and (current.s3_upload_attempts or 0) != expected_attempts:
            raise _superseded_error(current, expected_attempts)
        raise UploadNotReadyError(
            f"the backup_status of raw file {raw_file.id!r} changed while the upload was starting (now "
            f"{current.backup_status!r}; another run?); retry the task once that run has finished"
        )
    log.info("%s: claimed for upload attempt %d by %s until %s", raw_file.id, attempt, owner, expires.isoformat())
    return Claim(raw_file.id, owner, lease, expires, attempt)


def _in_progress_error(raw_file: RawFile) -> UploadInProgressError:
    return UploadInProgressError(
        f"raw file {raw_file.id!r} is being uploaded by another run ({raw_file.upload_claim_owner}, claim valid "
        f"until {raw_file.upload_claim_expires_at:%Y-%m-%d %H:%M:%S} UTC and renewed while that run lives): this run "
        "stopped without changing anything. If that run died, its claim expires after backup.s3.stale_upload_minutes "
        "and backup_sweeper (or clearing upload_to_s3 then) resumes the upload"
    )


def _record(claim: Claim, what: str, **fields: Any) -> bool:
    """Write the outcome if this run still owns the claim (and release it); raise when MongoDB is unreachable."""
    try:
        return update_raw_file(
            claim.raw_file_id,
            expected={"upload_claim_owner": claim.owner},
            upload_claim_owner=None,
            upload_claim_expires_at=None,
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


def _multipart_recorder(claim: Claim, known: dict[str, str]) -> Callable[[str, str | None], None]:
    """Record unfinished multipart uploads on the raw file (``s3_multipart_uploads``) while owning the claim."""
    lock = threading.Lock()

    def record(key: str, upload_id: str | None) -> None:
        with lock:
            if known.get(key) == upload_id:
                return
            if upload_id is None:
                known.pop(key, None)
            else:
                known[key] = upload_id
            uploads = dict(known)
        try:
            still_owner = update_raw_file(
                claim.raw_file_id, expected={"upload_claim_owner": claim.owner}, s3_multipart_uploads=uploads
            )
        except Exception as error:  # the upload is found by listing anyway
            log.warning("%s: could not record multipart upload %s of %s: %s", claim.raw_file_id, upload_id, key, error)
            return
        if not still_owner:
            claim.mark_lost("another run took over its claim")

    return record


def _verified_done(
    raw_file: RawFile, settings: Settings, file_info: dict[str, Any] | None, part_size: int | None, client: Any
) -> tuple[UploadResult | None, Any]:
    """For an ``upload_done`` raw file: the complete set as its manifest records it, if S3 confirms it (else None)."""
    if not (raw_file.s3_backup_key and raw_file.s3_etag):
        return None, client
    try:
        files = _resolve_file_info(raw_file, file_info)
        chosen_part_size = _resolve_part_size(raw_file, settings, part_size)
        key_prefix = key_prefix_for(_backup_base_path(raw_file))
        bucket = project_bucket(settings, raw_file.project_id, [project.id for project in get_projects()])
    except S3BackupError as error:
        log.warning("%s: upload_done, but %s: uploading again", raw_file.id, error)
        return None, client
    client = client or _client(settings)
    result = verify_complete_set(
        client,
        bucket=bucket,
        key_prefix=key_prefix,
        file_info=files,
        part_size=chosen_part_size,
        raw_file_id=raw_file.id,
        metadata=_metadata(raw_file, settings),
    )  # S3 errors propagate: an unreachable S3 must not turn upload_done into upload_failed
    if result is None or (result.s3_backup_key, result.s3_etag) != (raw_file.s3_backup_key, raw_file.s3_etag):
        log.warning(
            "%s: recorded as upload_done in %s, but S3 does not hold the complete set with ETag %s: uploading again",
            raw_file.id,
            raw_file.s3_backup_key,
            raw_file.s3_etag,
        )
        return None, client
    return result, client


def _client(settings: Settings) -> Any:
    from rawvault.s3.client import s3_client_from_connection

    s3 = settings.backup.s3
    assert s3 is not None
    return s3_client_from_connection(s3.aws_conn_id, s3.region, s3.max_concurrency + 4)


def _metadata(raw_file: RawFile, settings: Settings) -> dict[str, str]:
    return {
        "raw-file-id": raw_file.id,
        "instrument-id": raw_file.instrument_id,
        "project-id": raw_file.project_id or settings.watcher.fallback_project_id,
    }


def upload_raw_file_to_s3(
    raw_file_id: str,
    file_info: dict[str, Any] | None,
    backup_folder: Path | None,
    settings: Settings,
    client: Any = None,
    *,
    part_size: int | None = None,
    progress_interval: float = DEFAULT_INTERVAL_SECONDS,
    expected_attempts: int | None = None,
) -> UploadResult:
    """Upload raw file ``raw_file_id`` from its local backup folder to S3 and record the outcome.

    ``file_info`` and ``part_size`` come from compute_checksum's XCom (``None``:
    the recorded ones); ``backup_folder`` from copy_raw_file's (``None``:
    ``<locations.backup>/<backup_base_path>``). ``client`` defaults to one
    from the Airflow connection ``backup.s3.aws_conn_id``. Claims the raw
    file first (see the module docstring). With ``expected_attempts`` (a
    retry scheduled by backup_sweeper) the claim also requires that the raw
    file still has that many attempts, so a retry scheduled for a failure
    that another run has retried since stops (:class:`UploadSupersededError`).
    Raises the :class:`~rawvault.s3.errors.S3BackupError` (or other error)
    after recording ``upload_failed`` (with ``s3_upload_failed_at``);
    :class:`UploadInProgressError`, :class:`UploadSupersededError` and
    :class:`UploadClaimLostError` record nothing.
    """
    s3 = settings.backup.s3
    if not settings.s3_enabled or s3 is None:
        raise S3PermanentError("backup.backup_type is not 's3': there is nothing to upload to S3")
    raw_file = get_raw_file(raw_file_id)
    if expected_attempts is not None and (raw_file.s3_upload_attempts or 0) != expected_attempts:
        raise _superseded_error(raw_file, expected_attempts)
    if raw_file.backup_status == BackupStatus.UPLOAD_DONE.value:
        done, client = _verified_done(raw_file, settings, file_info, part_size, client)
        if done is not None:
            log.info("%s: already upload_done and complete in %s: nothing to do", raw_file_id, done.s3_backup_key)
            return done
    claim = _claim(raw_file, timedelta(minutes=s3.stale_upload_minutes), expected_attempts)
    try:
        with _Heartbeat(claim):
            files = _resolve_file_info(raw_file, file_info)
            chosen_part_size = _resolve_part_size(raw_file, settings, part_size)
            base_path = _backup_base_path(raw_file)
            key_prefix = key_prefix_for(base_path)
            bucket = project_bucket(settings, raw_file.project_id, [project.id for project in get_projects()])
            source_folder = backup_folder or settings.locations.backup / base_path
            client = client or _client(settings)
            ensure_bucket(
                client,
                bucket,
                s3.region,
                s3.auto_create_buckets,
                server_side_encryption=s3.server_side_encryption,
                kms_key_id=s3.kms_key_id,
            )
            claim.check()
            result = upload_file_set(
                client,
                bucket=bucket,
                key_prefix=key_prefix,
                source_folder=Path(source_folder),
                file_info=files,
                part_size=chosen_part_size,
                raw_file_id=raw_file.id,
                object_settings=ObjectSettings.from_settings(s3),
                metadata=_metadata(raw_file, settings),
                progress_interval=progress_interval,
                multipart_uploads=dict(raw_file.s3_multipart_uploads or {}),
                on_multipart_upload=_multipart_recorder(claim, dict(raw_file.s3_multipart_uploads or {})),
                guard=claim.check,
            )
            claim.check()
        resumed = f" ({result.parts_resumed} part(s) resumed from an earlier attempt)" if result.parts_resumed else ""
        recorded = _record(
            claim,
            "upload_done",
            backup_status=BackupStatus.UPLOAD_DONE.value,
            backup_status_details=(
                f"in {result.s3_backup_key}: {len(result.uploaded)} file(s) uploaded{resumed}, "
                f"{len(result.skipped)} already there, all verified; manifest {result.manifest_key}"
            ),
            s3_backup_key=result.s3_backup_key,
            s3_etag=result.s3_etag,
            s3_multipart_uploads={},
        )
        if not recorded:
            claim.mark_lost("another run took over its claim before the outcome was recorded")
            claim.check()
    except (UploadClaimLostError, UploadNotRecordedError) as error:
        log.error("%s: %s", raw_file_id, error)
        raise
    except BaseException as error:
        reason = _reason(error)
        log.error("%s: %s", raw_file_id, reason)
        try:
            if not _record(claim, "upload_failed", backup_status=BackupStatus.UPLOAD_FAILED.value,
                           backup_status_details=reason, s3_upload_failed_at=utc_now()):  # fmt: skip
                log.error("%s: upload_failed not recorded: another run owns the raw file now", raw_file_id)
        except Exception as db_error:
            log.error("%s: could not record upload_failed: %s", raw_file_id, db_error)
        raise
    log.info("%s: upload_done, s3_backup_key %s, s3_etag %s", raw_file_id, result.s3_backup_key, result.s3_etag)
    return result
