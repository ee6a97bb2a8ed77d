"""Object Lock and lifecycle configuration of rawvault's buckets, and the retention of each object.

**Object Lock** (``backup.s3.object_lock: {mode, days}``): a bucket rawvault
creates gets ``ObjectLockEnabledForBucket=True`` (:func:`bucket_creation_args`;
S3 turns versioning on with it) and a default retention of the same mode and
days (:func:`apply_object_lock`), a backstop for any object written without
one. Every object and manifest is written with its own retention
(:func:`object_retention_args`: ``ObjectLockMode``, ``ObjectLockRetainUntilDate``
= now + days; a multipart upload takes them at ``CreateMultipartUpload``;
:func:`apply_object_retention` sets them on an object that lacks them).
:func:`read_object_retention` / :func:`retention_problem` read an object's
retention back for ``verify``: missing, a weaker mode, or ending earlier than
``LastModified`` + days (S3 dates a multipart object by its upload's start,
when its retention was fixed too) is a problem. They read the HEAD headers,
which S3 sends only to callers with ``s3:GetObjectRetention`` (moto's server
answers no ``GetObjectRetention`` request; HEAD works on both). Compliance mode
is safe with rawvault: it never deletes or replaces backup data, so a lock
that forbids that changes nothing it does.

**Lifecycle** (``backup.s3.lifecycle``): :func:`lifecycle_rules` builds rules
whose ids start with ``rawvault-``; :func:`apply_lifecycle` replaces only those,
keeping every other rule of the bucket (S3 replaces a bucket's whole
lifecycle configuration at once). The transition rule applies only to objects
tagged :data:`DATA_TAG` (:func:`data_object_tagging` on the data objects'
PUT/CreateMultipartUpload), so manifests stay in STANDARD, readable at once.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from botocore.exceptions import ClientError

from rawvault.s3.errors import S3BackupError, classify, error_code, is_not_found

if TYPE_CHECKING:
    from shared.settings import LifecycleSettings, ObjectLockSettings

log = logging.getLogger(__name__)

RULE_PREFIX = "rawvault-"
ABORT_RULE_ID = f"{RULE_PREFIX}abort-incomplete-multipart"
TRANSITION_RULE_ID = f"{RULE_PREFIX}transition"
NONCURRENT_RULE_ID = f"{RULE_PREFIX}noncurrent-expiration"
DATA_TAG = ("rawvault-content", "data")
# The client computes the retain-until date, S3 the LastModified: allow for clocks apart and slow requests.
RETENTION_TOLERANCE = timedelta(hours=1)
MODE_STRENGTH = {"GOVERNANCE": 1, "COMPLIANCE": 2}
NO_OBJECT_LOCK_CODES = frozenset({"ObjectLockConfigurationNotFoundError", "ObjectLockConfigurationNotFound"})
NO_LIFECYCLE_CODES = frozenset({"NoSuchLifecycleConfiguration"})


@dataclass(frozen=True)
class BucketObjectLock:
    """A bucket's Object Lock configuration: enabled, and its default retention if any."""

    enabled: bool
    mode: str | None = None
    days: int | None = None


@dataclass(frozen=True)
class ObjectRetention:
    """An object's retention: mode and the instant it ends."""

    mode: str
    retain_until: datetime


def bucket_creation_args(object_lock: ObjectLockSettings | None) -> dict[str, Any]:
    """Extra ``CreateBucket`` arguments: Object Lock can only be switched on when a bucket is created."""
    return {"ObjectLockEnabledForBucket": True} if object_lock else {}


def object_lock_configuration(object_lock: ObjectLockSettings) -> dict[str, Any]:
    """The ``ObjectLockConfiguration`` of ``backup.s3.object_lock``: enabled, default retention mode and days."""
    return {
        "ObjectLockEnabled": "Enabled",
        "Rule": {"DefaultRetention": {"Mode": object_lock.mode, "Days": object_lock.days}},
    }


def apply_object_lock(client: Any, bucket: str, object_lock: ObjectLockSettings) -> None:
    """Set the bucket's default retention (the bucket must have been created with Object Lock)."""
    try:
        client.put_object_lock_configuration(
            Bucket=bucket, ObjectLockConfiguration=object_lock_configuration(object_lock)
        )
    except Exception as error:
        failure = classify(error, f"setting the Object Lock configuration of bucket {bucket!r}")
        raise type(failure)(
            f"{failure}; the bucket must have been created with Object Lock (auto-created buckets are) or have it "
            "enabled by an administrator, and the AWS identity needs s3:PutBucketObjectLockConfiguration"
        ) from error
    log.info("bucket %s: Object Lock default retention %s for %d days", bucket, object_lock.mode, object_lock.days)


def read_object_lock(client: Any, bucket: str) -> BucketObjectLock:
    """The bucket's Object Lock configuration (disabled when it has none).

    A store that answers with an empty configuration (``rclone serve s3``
    answers any bucket sub-resource it does not know like a listing) counts
    as disabled too.
    """
    try:
        response = client.get_object_lock_configuration(Bucket=bucket)
    except ClientError as error:
        if error_code(error) in NO_OBJECT_LOCK_CODES or is_not_found(error):
            return BucketObjectLock(False)
        raise classify(error, f"reading the Object Lock configuration of bucket {bucket!r}") from error
    configuration = response.get("ObjectLockConfiguration") or {}
    default = (configuration.get("Rule") or {}).get("DefaultRetention") or {}
    days = default.get("Days") or (default.get("Years") or 0) * 365 or None
    return BucketObjectLock(configuration.get("ObjectLockEnabled") == "Enabled", default.get("Mode"), days)


def bucket_lock_problem(lock: BucketObjectLock, object_lock: ObjectLockSettings) -> str | None:
    """Why a bucket cannot hold objects to ``backup.s3.object_lock`` (``None``: it can).

    Checked before trusting an object's retention headers: a store without
    Object Lock may still echo them back (``rclone serve s3`` does).
    """
    if not lock.enabled:
        return (
            f"the bucket has no Object Lock, so no retention is enforced ({object_lock.mode} for {object_lock.days} "
            "days configured); Object Lock is switched on when a bucket is created (auto-created buckets get it) "
            "or by an administrator"
        )
    return None


def object_retention_args(object_lock: ObjectLockSettings | None, now: datetime | None = None) -> dict[str, Any]:
    """``ObjectLockMode`` / ``ObjectLockRetainUntilDate`` for a PUT or CreateMultipartUpload (empty without lock)."""
    if object_lock is None:
        return {}
    start = now or datetime.now(UTC)
    return {"ObjectLockMode": object_lock.mode, "ObjectLockRetainUntilDate": start + timedelta(days=object_lock.days)}


def apply_object_retention(
    client: Any, bucket: str, key: str, version_id: str | None, retain_until: datetime, mode: str
) -> None:
    """Set one object version's retention (``PutObjectRetention``; S3 lets it only be kept or extended).

    For an object that lacks it: moto's server (5.2.5) drops the retention given
    at ``CreateMultipartUpload``, and a store may do the same; AWS keeps it.
    """
    args: dict[str, Any] = {"Bucket": bucket, "Key": key, "Retention": {"Mode": mode, "RetainUntilDate": retain_until}}
    if version_id:
        args["VersionId"] = version_id
    try:
        client.put_object_retention(**args)
    except Exception as error:
        failure = classify(error, f"setting the retention of s3://{bucket}/{key}")
        raise type(failure)(f"{failure}; the AWS identity needs s3:PutObjectRetention") from error


def retention_from_head(head: Mapping[str, Any]) -> ObjectRetention | None:
    """An object's retention from its HEAD answer, or ``None`` when it has none (or we may not see it)."""
    mode = head.get("ObjectLockMode")
    until = head.get("ObjectLockRetainUntilDate")
    if not mode or not isinstance(until, datetime):
        return None
    return ObjectRetention(str(mode), until if until.tzinfo else until.replace(tzinfo=UTC))


def read_object_retention(
    client: Any, bucket: str, key: str, version_id: str | None = None
) -> tuple[ObjectRetention | None, datetime | None]:
    """``(retention or None, LastModified)`` of one object (one HEAD)."""
    args: dict[str, Any] = {"Bucket": bucket, "Key": key}
    if version_id:
        args["VersionId"] = version_id
    try:
        head = client.head_object(**args)
    except Exception as error:
        raise classify(error, f"reading the retention of s3://{bucket}/{key}") from error
    return retention_from_head(head), head.get("LastModified")


def retention_problem(
    retention: ObjectRetention | None, object_lock: ObjectLockSettings, written_at: datetime | None
) -> str | None:
    """Why an object's retention falls short of ``backup.s3.object_lock`` (``None``: it does not)."""
    wanted = f"{object_lock.mode} for {object_lock.days} days"
    if retention is None:
        return (
            f"it has no Object Lock retention ({wanted} configured); if the bucket has Object Lock, check that the "
            "AWS identity has s3:GetObjectRetention (S3 hides retention from others)"
        )
    if MODE_STRENGTH.get(retention.mode, 0) < MODE_STRENGTH[object_lock.mode]:
        return f"its retention mode {retention.mode} is weaker than the configured {object_lock.mode}"
    if written_at is not None:
        needed = written_at + timedelta(days=object_lock.days) - RETENTION_TOLERANCE
        if retention.retain_until < needed:
            return (
                f"its retention ends {retention.retain_until:%Y-%m-%d %H:%M} UTC, before {object_lock.days} days after "
                f"it was written ({written_at:%Y-%m-%d %H:%M} UTC)"
            )
    return None


class RetentionAudit:
    """``verify``'s retention checks: each bucket's Object Lock (read once), then each object's retention (its HEAD).

    Thread-safe (verify checks raw files concurrently). A bucket without Object
    Lock is one problem for all its objects: their retention headers prove
    nothing there (``rclone serve s3`` echoes them without enforcing them).
    """

    def __init__(self, client: Any, object_lock: ObjectLockSettings) -> None:
        self.client = client
        self.object_lock = object_lock
        self._buckets: dict[str, str | None] = {}
        self._lock = threading.Lock()

    def bucket_problem(self, bucket: str) -> str | None:
        """Why ``bucket`` cannot hold objects to ``backup.s3.object_lock`` (``None``: it can); read once per bucket."""
        with self._lock:
            if bucket in self._buckets:
                return self._buckets[bucket]
        try:
            problem = bucket_lock_problem(read_object_lock(self.client, bucket), self.object_lock)
        except S3BackupError as error:
            problem = f"its Object Lock configuration cannot be read ({error})"
        with self._lock:
            self._buckets[bucket] = problem
        return problem

    def object_problem(self, head: Mapping[str, Any]) -> str | None:
        """Why the object (its HEAD answer) has no, a weaker or a shorter retention than configured (``None``: ok)."""
        written = head.get("LastModified")
        return retention_problem(
            retention_from_head(head), self.object_lock, written if isinstance(written, datetime) else None
        )


def data_object_tagging() -> str:
    """The ``Tagging`` argument of a data object's PUT / CreateMultipartUpload (not of manifests)."""
    return f"{DATA_TAG[0]}={DATA_TAG[1]}"


def lifecycle_rules(lifecycle: LifecycleSettings) -> list[dict[str, Any]]:
    """The lifecycle rules rawvault sets for ``backup.s3.lifecycle`` (ids start with :data:`RULE_PREFIX`)."""
    whole_bucket = {"Prefix": ""}
    data_objects = {"Tag": {"Key": DATA_TAG[0], "Value": DATA_TAG[1]}}  # manifests stay where they are
    rules: list[dict[str, Any]] = []
    if (days := lifecycle.abort_incomplete_multipart_days) is not None:
        rules.append(_rule(ABORT_RULE_ID, whole_bucket, AbortIncompleteMultipartUpload={"DaysAfterInitiation": days}))
    if (transition := lifecycle.transition) is not None:
        moves = [{"Days": transition.days, "StorageClass": transition.storage_class}]
        rules.append(_rule(TRANSITION_RULE_ID, data_objects, Transitions=moves))
    if (days := lifecycle.noncurrent_version_expiration_days) is not None:
        rules.append(_rule(NONCURRENT_RULE_ID, whole_bucket, NoncurrentVersionExpiration={"NoncurrentDays": days}))
    return rules


def _rule(rule_id: str, applies_to: dict[str, Any], **action: Any) -> dict[str, Any]:
    """One enabled lifecycle rule: its id, the objects it applies to (``Filter``) and what it does."""
    return {"ID": rule_id, "Status": "Enabled", "Filter": applies_to, **action}


def read_lifecycle(client: Any, bucket: str) -> list[dict[str, Any]]:
    """The bucket's lifecycle rules (empty when it has none)."""
    try:
        response = client.get_bucket_lifecycle_configuration(Bucket=bucket)
    except ClientError as error:
        if error_code(error) in NO_LIFECYCLE_CODES:
            return []
        raise classify(error, f"reading the lifecycle configuration of bucket {bucket!r}") from error
    return list(response.get("Rules") or [])


def apply_lifecycle(client: Any, bucket: str, lifecycle: LifecycleSettings) -> list[dict[str, Any]]:
    """Put rawvault's rules into the bucket's lifecycle configuration, keeping every other rule; return them all."""
    foreign = [rule for rule in read_lifecycle(client, bucket) if not str(rule.get("ID", "")).startswith(RULE_PREFIX)]
    rules = foreign + lifecycle_rules(lifecycle)
    try:
        client.put_bucket_lifecycle_configuration(Bucket=bucket, LifecycleConfiguration={"Rules": rules})
    except Exception as error:
        failure = classify(error, f"setting the lifecycle configuration of bucket {bucket!r}")
        raise type(failure)(
            f"{failure}; the AWS identity needs s3:PutLifecycleConfiguration and s3:GetLifecycleConfiguration. A store "
            "without lifecycle rules (rclone serve s3 answers BucketAlreadyExists) cannot have them: remove "
            "backup.s3.lifecycle and clean up incomplete multipart uploads with the store's own tools"
        ) from error
    log.info(
        "bucket %s: lifecycle rules %s applied (%d other rule(s) kept)",
        bucket,
        ", ".join(rule["ID"] for rule in lifecycle_rules(lifecycle)),
        len(foreign),
    )
    return rules
