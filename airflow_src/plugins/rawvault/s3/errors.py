"""Error types of the S3 upload and the translation of botocore errors into them.

Two families:

- :class:`S3PermanentError`: a retry cannot help until a person fixes
  something (credentials, permissions, a missing bucket, a conflicting object,
  a changed local file). The task layer turns it into a failure without
  automatic retries.
- :class:`S3TransientError`: the network or S3 failed even after botocore's
  own retries with backoff (standard retry mode); a later retry may succeed.

:attr:`S3BackupError.resumable` says what happens to an unfinished multipart
upload when the error stops it: a resumable error (transient failures, a lost
claim, an interruption) keeps it so that the next run resumes it; any other
error aborts it (see :mod:`rawvault.s3.multipart`).

An access error names what is missing: bad credentials say so; a refused
operation names the IAM action(s) it needs on the bucket or object
(:mod:`rawvault.s3.permissions`, the table the policy test checks); a 403 to a
request that carried ``ExpectedBucketOwner`` (:func:`rawvault.s3.client.expect_bucket_owner`
marks it in the error) is a :class:`BucketOwnerMismatchError`.
"""

from __future__ import annotations

from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    CredentialRetrievalError,
    NoCredentialsError,
    ParamValidationError,
    PartialCredentialsError,
)

from rawvault.s3.permissions import POLICY_FILE, missing_permission


class S3BackupError(RuntimeError):
    """The S3 upload of a raw file failed; the message says why and what to do."""

    #: Keep an unfinished multipart upload for the next run to resume (instead of aborting it).
    resumable: bool = False


class S3PermanentError(S3BackupError):
    """A failure that retrying cannot fix until a person acts: fail without automatic retries."""


class S3TransientError(S3BackupError):
    """S3 or the network failed after botocore's retries; retrying later may succeed."""

    resumable = True


class S3AccessDeniedError(S3PermanentError):
    """Authentication or authorisation failed (wrong keys, missing IAM permission, foreign bucket)."""


class BucketOwnerMismatchError(S3AccessDeniedError):
    """S3 refused a request that required the bucket to belong to ``backup.s3.expected_bucket_owner``."""


class BucketNameError(S3PermanentError, ValueError):
    """A project id gives no valid S3 bucket name."""


class BucketNameCollisionError(BucketNameError):
    """Two different project ids normalise to the same bucket name."""


class BucketMissingError(S3PermanentError):
    """The bucket does not exist and may not be created automatically."""


class UnsafePathError(S3PermanentError, ValueError):
    """A path in ``file_info`` (or a key prefix) could escape the raw file's key prefix."""


class FileInfoError(S3PermanentError, ValueError):
    """``file_info`` is malformed or inconsistent with the part size."""


class PartSizeMismatchError(FileInfoError):
    """A recorded ETag was computed with another part size than the upload would use."""


class ExistingObjectMismatchError(S3PermanentError):
    """A different object already exists at the key; rawvault never overwrites it."""


class ObjectAppearedError(ExistingObjectMismatchError):
    """S3 refused a write (If-None-Match): an object appeared at the key meanwhile."""


class UploadVanishedError(S3TransientError):
    """The multipart upload no longer exists (completed or aborted by another run, or by a lost response)."""


class VerificationError(S3PermanentError):
    """The uploaded object does not match the recorded size/ETag/checksum."""


class LocalFileChangedError(VerificationError):
    """The local backup copy no longer matches the size/MD5/ETag recorded when it was checksummed."""


# Answers to a conditional write (If-None-Match: *) whose key is taken.
CONFLICT_CODES = frozenset({"PreconditionFailed", "ConditionalRequestConflict", "412", "409"})
NO_SUCH_UPLOAD = "NoSuchUpload"

# Error codes S3 (and S3-compatible servers) use for bad credentials: the keys, not a permission, are wrong.
CREDENTIAL_ERROR_CODES = frozenset(
    {
        "AccountProblem",
        "AllAccessDisabled",
        "ExpiredToken",
        "InvalidAccessKeyId",
        "InvalidClientTokenId",
        "InvalidSecurity",
        "InvalidToken",
        "NotSignedUp",
        "SignatureDoesNotMatch",
        "TokenRefreshRequired",
    }
)
KMS_ERROR_CODES = frozenset({"KMS.AccessDeniedException", "KMS.DisabledException"})
# ... plus those of a missing permission: every authentication or authorisation error.
ACCESS_ERROR_CODES = CREDENTIAL_ERROR_CODES | KMS_ERROR_CODES | {"AccessDenied", "Forbidden", "403"}
# Where rawvault.s3.client.expect_bucket_owner notes, in a refused request's error, the owner it required.
EXPECTED_OWNER_FIELD = "RawvaultExpectedBucketOwner"
# Codes botocore already retried (throttling and server errors): retrying later may help.
TRANSIENT_ERROR_CODES = frozenset(
    {
        "InternalError",
        "RequestTimeout",
        "RequestTimeTooSkewed",
        "ServiceUnavailable",
        "SlowDown",
        "Throttling",
        "ThrottlingException",
        "RequestLimitExceeded",
        "TooManyRequests",
        "500",
        "502",
        "503",
        "504",
    }
)


def error_code(error: BaseException) -> str:
    """The S3 error code of a botocore ``ClientError`` (or ``""``)."""
    if isinstance(error, ClientError):
        return str(error.response.get("Error", {}).get("Code", ""))
    return ""


def http_status(error: BaseException) -> int | None:
    """The HTTP status of a botocore ``ClientError`` (or ``None``)."""
    if isinstance(error, ClientError):
        return error.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    return None


def is_not_found(error: BaseException) -> bool:
    """True for a 404 / NoSuchKey / NoSuchBucket answer."""
    return error_code(error) in {"404", "NoSuchKey", "NoSuchBucket", "NotFound"} or http_status(error) == 404


def is_conflict(error: BaseException) -> bool:
    """True when S3 refused a conditional write because the key is taken (``If-None-Match: *``)."""
    return error_code(error) in CONFLICT_CODES


def is_access_error(error: BaseException) -> bool:
    """True for authentication and permission errors."""
    return error_code(error) in ACCESS_ERROR_CODES or http_status(error) == 403


def botocore_cause(error: BaseException) -> BaseException | None:
    """The botocore error behind ``error`` (boto3's ``S3UploadFailedError`` wraps it as its context)."""
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        if isinstance(current, ClientError | BotoCoreError):
            return current
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return None


def _access_error(cause: ClientError, action: str, bucket: str | None, key: str | None) -> S3AccessDeniedError:
    """The access error of a refused request, naming what is missing: keys, owner, KMS key or IAM action."""
    code = error_code(cause) or str(http_status(cause))
    message = cause.response.get("Error", {}).get("Message", "") or str(cause)
    refused = f"{action}: access denied by S3 ({code}: {message}) to {cause.operation_name}"
    if code in CREDENTIAL_ERROR_CODES:
        return S3AccessDeniedError(
            f"{refused}; the credentials are not valid: check the access key and secret of the Airflow AWS "
            "connection named in backup.s3.aws_conn_id"
        )
    if code in KMS_ERROR_CODES:
        return S3AccessDeniedError(
            f"{refused}; the IAM identity may not use the KMS key (kms:GenerateDataKey to write, kms:Decrypt to "
            f"read), or the key is disabled: see the statement OptionalSseKms of {POLICY_FILE}"
        )
    lacking = missing_permission(cause.operation_name, bucket, key)
    owner = cause.response.get("Error", {}).get(EXPECTED_OWNER_FIELD)
    if owner:
        named = f"bucket {bucket!r}" if bucket else "the bucket"
        return BucketOwnerMismatchError(
            f"{refused} although it was sent with ExpectedBucketOwner={owner} (backup.s3.expected_bucket_owner): "
            f"{named} belongs to another AWS account than {owner} (S3 answers 403 without naming the owner; bucket "
            "names are global, anyone may have created it), or the IAM identity lacks "
            f"{lacking or 'a permission'} (see {POLICY_FILE}). Nothing is written to a bucket of another account: "
            "check the bucket's owner, then choose another backup.s3.bucket_prefix or fix expected_bucket_owner"
        )
    if lacking:
        return S3AccessDeniedError(f"{refused}; the IAM identity lacks {lacking} (see {POLICY_FILE})")
    return S3AccessDeniedError(
        f"{refused}; check the access key and secret of the Airflow AWS connection and that its IAM identity has "
        f"the permissions of {POLICY_FILE} on this bucket"
    )


def classify(error: BaseException, action: str, *, bucket: str | None = None, key: str | None = None) -> S3BackupError:
    """Translate a boto3/botocore error into an :class:`S3BackupError` with a readable message.

    ``action`` says what was being done, e.g. ``"uploading s3://bucket/key"``;
    ``bucket`` and ``key`` (when known) name the resource in an access-denied
    message. Errors that are already :class:`S3BackupError` are returned unchanged.
    """
    if isinstance(error, S3BackupError):
        return error
    cause = botocore_cause(error) or error
    if isinstance(cause, NoCredentialsError | PartialCredentialsError | CredentialRetrievalError):
        return S3AccessDeniedError(
            f"{action}: no usable AWS credentials ({cause}); set login/password (access key id/secret) or a "
            "role in the Airflow AWS connection named in backup.s3.aws_conn_id"
        )
    if isinstance(cause, ClientError):
        if is_access_error(cause):
            return _access_error(cause, action, bucket, key)
        code = error_code(cause) or str(http_status(cause))
        message = cause.response.get("Error", {}).get("Message", "") or str(cause)
        status = http_status(cause) or 0
        if code in TRANSIENT_ERROR_CODES or status >= 500:
            return S3TransientError(f"{action}: S3 failed after retries ({code}: {message}); retry later")
        return S3PermanentError(f"{action}: S3 refused the request ({code}: {message})")
    if isinstance(cause, ParamValidationError):
        return S3PermanentError(f"{action}: invalid request ({cause})")
    if isinstance(cause, BotoCoreError):
        return S3TransientError(f"{action}: cannot reach S3 after retries ({type(cause).__name__}: {cause})")
    if isinstance(cause, OSError):
        return S3PermanentError(f"{action}: cannot read the local file ({cause})")
    return S3BackupError(f"{action}: {type(cause).__name__}: {cause}")
