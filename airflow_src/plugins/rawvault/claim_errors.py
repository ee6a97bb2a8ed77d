"""The errors of the upload claim (:mod:`rawvault.claim`, which re-exports them)."""

from __future__ import annotations

from rawvault.s3.errors import S3PermanentError
from shared.db.interface import DatabaseError


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
