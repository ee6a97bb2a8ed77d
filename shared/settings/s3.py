"""The backup sections: local only, or local plus S3 (buckets, credentials, part size, retries)."""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import Field, ValidationInfo, field_validator, model_validator

from shared.s3_limits import MIB, S3_MAX_PART_MB, S3_MAX_PARTS, S3_MIN_PART_MB
from shared.settings.base import CRON_FIX, FIXES, CronExpression, Section
from shared.settings.s3_compat import BandwidthSettings, LifecycleSettings, ObjectLockSettings
from shared.settings.scrub import ScrubSettings

DEFAULT_PART_SIZE_MB = 64

STORAGE_CLASSES = (
    "STANDARD",
    "STANDARD_IA",
    "ONEZONE_IA",
    "INTELLIGENT_TIERING",
    "GLACIER_IR",
    "GLACIER",
    "DEEP_ARCHIVE",
)

FIXES.update(
    {
        "backup.backup_type": "set it to 'local' (local copy only) or 's3' (local copy plus S3 upload)",
        "backup.s3": "add a backup.s3 section (region, bucket_prefix, ...) or set backup.backup_type: local",
        "backup.s3.region": "set it to the AWS region of your buckets, e.g. eu-central-1",
        "backup.s3.bucket_prefix": "set it to the prefix of your bucket names, e.g. myfacility-rawdata",
        "backup.s3.part_size_mb": (
            f"use a whole number of MiB from {S3_MIN_PART_MB} to {S3_MAX_PART_MB}; with at most "
            f"{S3_MAX_PARTS} parts per object, the largest raw file is part_size_mb x {S3_MAX_PARTS}"
        ),
        "backup.s3.storage_class": f"use one of {', '.join(STORAGE_CLASSES)}",
        "backup.s3.server_side_encryption": "use AES256 or aws:kms (with kms_key_id)",
        "backup.s3.expected_bucket_owner": (
            "write the 12-digit AWS account id that owns the buckets in quotes, e.g. '111122223333' "
            "(aws sts get-caller-identity), or remove the key for a store without AWS accounts"
        ),
        "backup.s3.max_upload_attempts": (
            "use a whole number from 1 to 100 (attempts of one raw file's upload in total)"
        ),
        "backup.s3.stale_upload_minutes": (
            "use minutes above 0 (at most a day) and below backup.s3.upload_retry_delay_minutes (when upload_retries "
            "is above 0), so an Airflow retry of upload_to_s3 finds the lease of a dead run expired"
        ),
        "backup.s3.pending_upload_after_hours": "use hours above 0 (at most a year), e.g. 6",
        "backup.s3.sweep_schedule": CRON_FIX,
        "backup.deadline_hours": "use hours above 0 (at most a year), e.g. 24",
    }
)


class S3Settings(Section):
    """The S3 upload: buckets, credentials, part size and object settings."""

    region: str
    bucket_prefix: str
    aws_conn_id: str = "aws_default"
    part_size_mb: Annotated[int, Field(ge=S3_MIN_PART_MB, le=S3_MAX_PART_MB)] = DEFAULT_PART_SIZE_MB
    auto_create_buckets: bool = False
    storage_class: Literal[STORAGE_CLASSES] = "STANDARD"  # type: ignore[valid-type]
    server_side_encryption: Literal["AES256", "aws:kms"] | None = "AES256"
    kms_key_id: str | None = None
    # The AWS account that must own every bucket (sent as ExpectedBucketOwner); strongly recommended on AWS.
    expected_bucket_owner: str | None = None
    max_concurrency: Annotated[int, Field(ge=1, le=64)] = 8
    # One try of upload_to_s3 (and of s3_upload_retry): its execution_timeout, then Airflow's own retries of it
    # and the wait before the first (doubled per retry; also the base of the sweeper's backoff).
    upload_timeout_hours: Annotated[float, Field(gt=0)] = 24.0
    upload_retries: Annotated[int, Field(ge=0, le=20)] = 3
    upload_retry_delay_minutes: Annotated[float, Field(ge=0)] = 15.0
    # Lease of a running upload on its raw file (renewed while it runs); an upload_in_progress raw file whose
    # lease expired is stale (its worker died) and may be taken over. With upload_retries, shorter than the
    # retry delay above (the settings model checks it), so an Airflow retry finds a dead try's lease expired.
    stale_upload_minutes: Annotated[float, Field(gt=0, le=24 * 60)] = 10.0
    # backup_sweeper: when it looks for failed, stale and never-started uploads; the attempts a raw file's upload
    # gets in all (Airflow's retries count); after how long untouched a copying_done raw file counts as never
    # started (its upload_to_s3 never ran).
    sweep_schedule: CronExpression = "*/15 * * * *"
    max_upload_attempts: Annotated[int, Field(ge=1, le=100)] = 5
    pending_upload_after_hours: Annotated[float, Field(gt=0, le=24 * 365)] = 6.0
    # S3-compatible stores (see shared.settings.s3_compat and README "S3-compatible stores").
    compatibility: Literal["auto", "aws", "strict"] = "auto"
    reprobe_after_days: Annotated[float, Field(gt=0, le=365)] = 7.0
    bandwidth: BandwidthSettings | None = None
    object_lock: ObjectLockSettings | None = None
    lifecycle: LifecycleSettings | None = None

    @field_validator("region", "bucket_prefix")
    @classmethod
    def _not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("must not be empty")
        return value

    @field_validator("expected_bucket_owner", mode="before")
    @classmethod
    def _aws_account_id(cls, value: object) -> object:
        if value is None:
            return None
        if isinstance(value, int) and not isinstance(value, bool):
            # YAML reads an unquoted account id as a number, which loses its leading zeros.
            if len(str(value)) == 12:
                return str(value)
            raise ValueError(f"got the number {value}: quote the account id so that its leading zeros stay")
        if not isinstance(value, str) or not re.fullmatch(r"[0-9]{12}", value):
            raise ValueError(f"{value!r} is not an AWS account id (12 digits)")
        return value

    @field_validator("bucket_prefix")
    @classmethod
    def _bucket_prefix_shape(cls, value: str) -> str:
        if not re.fullmatch(r"[a-z0-9][a-z0-9-]{1,40}", value):
            raise ValueError(
                "must be 2-41 characters of lower-case letters, digits and '-', starting with a letter or digit"
            )
        return value

    @model_validator(mode="after")
    def _kms_needs_key(self) -> S3Settings:
        if self.kms_key_id and self.server_side_encryption != "aws:kms":
            raise ValueError("kms_key_id is set but server_side_encryption is not 'aws:kms'")
        return self

    @property
    def part_size_bytes(self) -> int:
        return self.part_size_mb * MIB


class BackupSettings(Section):
    """Which backup to make: local only, or local plus S3."""

    backup_type: Literal["local", "s3"]
    s3: Annotated[S3Settings | None, Field(validate_default=True)] = None
    # A raw file acquired longer ago than this without a verified backup (S3: upload_done; local:
    # copying_done) is overdue: alerted once (rawvault.alerts) and counted by the coverage check.
    deadline_hours: Annotated[float, Field(gt=0, le=24 * 365)] = 24.0
    # backup_verifier re-reads the data of this many raw files per run (see shared.settings.scrub).
    scrub: ScrubSettings = ScrubSettings()

    @field_validator("s3", mode="after")
    @classmethod
    def _s3_section_when_s3(cls, value: S3Settings | None, info: ValidationInfo) -> S3Settings | None:
        if value is None and info.data.get("backup_type") == "s3":
            raise ValueError("backup_type is 's3' but this section is missing")
        return value
