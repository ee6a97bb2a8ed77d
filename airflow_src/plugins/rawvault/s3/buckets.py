"""Buckets: one per project, ``<bucket_prefix>-<normalised project id>``.

Normalisation (:mod:`shared.bucket_names`, shared with the settings
validation): lower case; every run of characters other than ``a-z0-9``
becomes one ``-``; leading and trailing ``-`` are dropped. So ``_FALLBACK``
gives ``fallback`` and ``P_1``, ``p.1`` and ``p-1`` all give ``p-1`` — which
is why :func:`check_no_bucket_collisions` refuses to let two project ids share
a bucket. A name that breaks S3's rules (3-63 characters, reserved prefixes
and suffixes) is an error, never silently shortened.

A bucket rawvault creates (``auto_create_buckets``) is configured step by
step: public access block, versioning, Object Lock default retention (with
``backup.s3.object_lock``; the bucket is created with Object Lock enabled),
default encryption, tags, lifecycle rules (with ``backup.s3.lifecycle``). A
store that does not implement a step (``NotImplemented``; ``rclone serve s3``
answers ``BucketAlreadyExists`` to every bucket configuration request) is
warned about, naming the protection that is weaker, when ``degrade`` (with
``backup.s3.compatibility: auto``), or refused (``strict``, ``aws``). Any other
failure is raised. A bucket whose configuration failed is deleted again only
when this call created it and it is still empty: never one that holds data.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from botocore.exceptions import ClientError

from rawvault.s3.client import S3Client
from rawvault.s3.errors import (
    EXPECTED_OWNER_FIELD,
    BucketMissingError,
    BucketNameCollisionError,
    BucketNameError,
    S3AccessDeniedError,
    S3PermanentError,
    botocore_cause,
    classify,
    error_code,
    http_status,
    is_access_error,
    is_not_found,
)
from rawvault.s3.retention import apply_lifecycle, apply_object_lock, bucket_creation_args
from shared.bucket_names import bucket_name as _bucket_name
from shared.bucket_names import normalise_project_id as normalise_project_id  # re-exported

if TYPE_CHECKING:
    from mypy_boto3_s3.type_defs import ServerSideEncryptionByDefaultTypeDef, ServerSideEncryptionRuleTypeDef

    from shared.settings import LifecycleSettings, ObjectLockSettings

log = logging.getLogger(__name__)

MANAGED_BY_TAG = ("managed-by", "rawvault")
# Answers of a store that does not implement a bucket configuration request (rclone serve s3 takes a PUT of an
# unknown bucket sub-resource for CreateBucket and answers BucketAlreadyExists).
NOT_IMPLEMENTED_CODES = frozenset({"NotImplemented", "XNotImplemented", "MethodNotAllowed", "BucketAlreadyExists"})


def bucket_name(bucket_prefix: str, project_id: str) -> str:
    """The bucket of ``project_id``: ``<bucket_prefix>-<normalised project id>``, checked against S3's rules.

    One implementation for the settings validation and the upload: :func:`shared.bucket_names.bucket_name`;
    a name S3 would refuse raises :class:`BucketNameError`.
    """
    return _bucket_name(bucket_prefix, project_id, BucketNameError)


def check_no_bucket_collisions(bucket_prefix: str, project_ids: Iterable[str]) -> None:
    """Raise :class:`BucketNameCollisionError` if two different project ids map to the same bucket."""
    by_bucket: dict[str, set[str]] = defaultdict(set)
    for project_id in project_ids:
        by_bucket[bucket_name(bucket_prefix, project_id)].add(project_id)
    collisions = {bucket: ids for bucket, ids in by_bucket.items() if len(ids) > 1}
    if collisions:
        described = "; ".join(
            f"{', '.join(repr(i) for i in sorted(ids))} -> {bucket}" for bucket, ids in sorted(collisions.items())
        )
        raise BucketNameCollisionError(
            f"different project ids would share one bucket ({described}): bucket names are lower case and "
            "turn '_' and '.' into '-'; rename one of the projects so each has a bucket of its own"
        )


def _encryption_rule(server_side_encryption: str | None, kms_key_id: str | None) -> ServerSideEncryptionRuleTypeDef:
    if server_side_encryption == "aws:kms":
        default: ServerSideEncryptionByDefaultTypeDef = {"SSEAlgorithm": "aws:kms"}
        if kms_key_id:
            default["KMSMasterKeyID"] = kms_key_id
        return {"ApplyServerSideEncryptionByDefault": default, "BucketKeyEnabled": True}
    return {"ApplyServerSideEncryptionByDefault": {"SSEAlgorithm": "AES256"}}


def ensure_bucket(
    client: S3Client,
    name: str,
    region: str,
    auto_create: bool,
    *,
    server_side_encryption: str | None = "AES256",
    kms_key_id: str | None = None,
    object_lock: ObjectLockSettings | None = None,
    lifecycle: LifecycleSettings | None = None,
    degrade: bool = False,
) -> bool:
    """Make sure bucket ``name`` exists and is ours to use; return whether it was created.

    ``head_bucket`` first. A missing bucket is an error unless ``auto_create``:
    then it is created private (object ownership enforced, every public
    access block on), with versioning, Object Lock (``object_lock``), default
    encryption, the tag ``managed-by=rawvault`` and rawvault's lifecycle rules
    (``lifecycle``). A configuration the store does not implement is a warning
    with ``degrade``, else an error. If configuring a bucket this call created
    fails, the bucket is deleted again while it is empty, so a retry starts clean.
    """
    try:
        client.head_bucket(Bucket=name)
        return False
    except ClientError as error:
        if error.response.get("Error", {}).get(EXPECTED_OWNER_FIELD):
            raise classify(error, f"checking bucket {name!r}", bucket=name) from None  # another account's?
        if is_access_error(error):
            raise S3AccessDeniedError(
                f"access denied to bucket {name!r} (HeadBucket answered {error_code(error)}): the Airflow AWS "
                f"connection's IAM identity needs s3:ListBucket on arn:aws:s3:::{name} (and s3:PutObject, "
                f"s3:GetObject, s3:AbortMultipartUpload, s3:ListBucketMultipartUploads on arn:aws:s3:::{name}/*), "
                "or the bucket belongs to another AWS account (bucket names are global)"
            ) from None
        if not is_not_found(error):
            raise classify(error, f"checking bucket {name!r}", bucket=name) from error
    except Exception as error:
        raise classify(error, f"checking bucket {name!r}", bucket=name) from error

    if not auto_create:
        raise BucketMissingError(
            f"bucket {name!r} does not exist: create it (private, versioning on, default encryption) or set "
            "backup.s3.auto_create_buckets: true"
        )
    created = _create_bucket(client, name, region, object_lock)
    steps = _configuration_steps(client, name, server_side_encryption, kms_key_id, object_lock, lifecycle)
    _configure_new_bucket(client, name, steps, created=created, degrade=degrade)
    return True


def _create_bucket(client: S3Client, name: str, region: str, object_lock: ObjectLockSettings | None) -> bool:
    """CreateBucket; whether this call created it (``False``: another task did, concurrently)."""
    log.info("creating bucket %s in %s (private, versioned, encrypted, tagged %s=%s)", name, region, *MANAGED_BY_TAG)
    create_args: dict[str, Any] = {"Bucket": name, "ObjectOwnership": "BucketOwnerEnforced"}
    create_args.update(bucket_creation_args(object_lock))
    if region != "us-east-1":
        create_args["CreateBucketConfiguration"] = {"LocationConstraint": region}
    try:
        client.create_bucket(**create_args)
    except ClientError as error:
        if error_code(error) == "BucketAlreadyExists":
            raise S3AccessDeniedError(
                f"bucket {name!r} exists in another AWS account (bucket names are global): choose another "
                "backup.s3.bucket_prefix"
            ) from None
        if error_code(error) != "BucketAlreadyOwnedByYou":
            raise classify(error, f"creating bucket {name!r}", bucket=name) from error
        return False  # created concurrently by another task: configure it too
    except Exception as error:
        raise classify(error, f"creating bucket {name!r}", bucket=name) from error
    return True


# (what is configured, what is weaker without it, the request)
_Step = tuple[str, str, Callable[[], object]]


def _configuration_steps(
    client: S3Client,
    name: str,
    server_side_encryption: str | None,
    kms_key_id: str | None,
    object_lock: ObjectLockSettings | None,
    lifecycle: LifecycleSettings | None,
) -> list[_Step]:
    """The configuration of a new bucket, in order (Object Lock's default retention needs versioning on)."""
    block = {
        "BlockPublicAcls": True,
        "IgnorePublicAcls": True,
        "BlockPublicPolicy": True,
        "RestrictPublicBuckets": True,
    }
    encryption = {"Rules": [_encryption_rule(server_side_encryption, kms_key_id)]}
    tags = {"TagSet": [{"Key": MANAGED_BY_TAG[0], "Value": MANAGED_BY_TAG[1]}]}
    steps: list[_Step] = [
        ("the public access block", "the bucket relies on the store's own access rules",
         lambda: client.put_public_access_block(Bucket=name, PublicAccessBlockConfiguration=block)),  # type: ignore[arg-type]
        ("versioning", "an object replaced or deleted by hand cannot be recovered",
         lambda: client.put_bucket_versioning(Bucket=name, VersioningConfiguration={"Status": "Enabled"})),
    ]  # fmt: skip
    if object_lock is not None:
        steps.append(("Object Lock", "objects get no retention", lambda: apply_object_lock(client, name, object_lock)))
    steps += [
        ("default encryption", "objects are encrypted only as each write asks (rawvault's always ask)",
         lambda: client.put_bucket_encryption(Bucket=name, ServerSideEncryptionConfiguration=encryption)),  # type: ignore[arg-type]
        ("tags", f"the bucket is not tagged {MANAGED_BY_TAG[0]}={MANAGED_BY_TAG[1]}",
         lambda: client.put_bucket_tagging(Bucket=name, Tagging=tags)),  # type: ignore[arg-type]
    ]  # fmt: skip
    if lifecycle is not None:
        steps.append(
            ("lifecycle rules", "the store itself does not abort incomplete multipart uploads, move or expire "
             "objects (use its own tools)", lambda: apply_lifecycle(client, name, lifecycle))
        )  # fmt: skip
    return steps


def _not_implemented(error: BaseException) -> str | None:
    """The error code when ``error`` says the store does not implement the request, else ``None``."""
    cause = botocore_cause(error) or error
    code = error_code(cause)
    if code in NOT_IMPLEMENTED_CODES or http_status(cause) == 501:
        return code or "501"
    return None


def _configure_new_bucket(client: S3Client, name: str, steps: list[_Step], *, created: bool, degrade: bool) -> None:
    """Run ``steps``; a step the store does not implement is warned about (``degrade``) or refused."""
    missing: list[str] = []
    for what, weaker, request in steps:
        try:
            request()
        except Exception as error:
            code = _not_implemented(error)
            if code is None:
                failure = classify(error, f"configuring new bucket {name!r} ({what})", bucket=name)
                raise type(failure)(f"{failure} ({_remove_new_bucket(client, name, created)})") from error
            if degrade:
                log.warning(
                    "cannot configure %s on new bucket %s: the store answered %s, it does not implement it; "
                    "%s (backup.s3.compatibility: auto)", what, name, code, weaker,
                )  # fmt: skip
            missing.append(f"{what} ({code}: {weaker})")
    if missing and not degrade:
        raise S3PermanentError(
            f"new bucket {name!r} cannot be configured as rawvault requires: the store does not implement "
            f"{'; '.join(missing)}; {_remove_new_bucket(client, name, created)}. Create and configure the bucket by "
            "hand, or set backup.s3.compatibility: auto to accept the store as it is (each gap is logged as a warning)"
        )


def _remove_new_bucket(client: S3Client, name: str, created: bool) -> str:
    """Delete the bucket after a failed configuration, only if this call created it and it holds nothing; a note."""
    if not created:
        return "the bucket was created by another run at the same time and is left as it is"
    try:
        if client.list_objects_v2(Bucket=name, MaxKeys=1).get("KeyCount", 0):
            return "the bucket holds data already (another run uploads into it) and is left as it is"
        client.delete_bucket(Bucket=name)
    except Exception as error:
        return f"deleting the half-configured bucket failed ({error}); delete or configure it by hand"
    return "the new bucket was deleted again, a retry starts clean"
