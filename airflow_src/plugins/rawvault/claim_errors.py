"""The errors of the upload claim (:mod:`rawvault.claim`, which re-exports them)."""

from __future__ import annotations

from datetime import datetime

from rawvault.s3.errors import S3PermanentError
from shared.db.interface import DatabaseError
from shared.db.models import RawFile


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


def superseded_error(raw_file: RawFile, expected_attempts: int) -> UploadSupersededError:
    """The error of a sweeper retry whose attempt another run has made since it was scheduled."""
    return UploadSupersededError(
        f"raw file {raw_file.id!r} had {expected_attempts} upload attempt(s) when this retry was scheduled and has "
        f"{raw_file.s3_upload_attempts or 0} now (backup_status {raw_file.backup_status!r}): another run (an Airflow "
        "retry of upload_to_s3 or a manual clear) attempted it since, so this retry stopped without changing "
        "anything; backup_sweeper schedules the next one after its backoff if that attempt fails"
    )


def in_progress_error(raw_file: RawFile, until: datetime | None) -> UploadInProgressError:
    """The error of a run that found another run's live claim (held until ``until``)."""
    return UploadInProgressError(
        f"raw file {raw_file.id!r} is being uploaded by another run ({raw_file.upload_claim_owner or 'no owner'}, "
        f"claim valid until {until:%Y-%m-%d %H:%M:%S} UTC and renewed while that run lives): this run "
        "stopped without changing anything. If that run died, its claim expires after backup.s3.stale_upload_minutes "
        "and backup_sweeper (or clearing upload_to_s3 then) resumes the upload"
    )
