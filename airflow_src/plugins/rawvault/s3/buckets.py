"""Buckets: one per project, ``<bucket_prefix>-<normalised project id>``.

Normalisation (:mod:`shared.bucket_names`, shared with the settings
validation): lower case; every run of characters other than ``a-z0-9``
becomes one ``-``; leading and trailing ``-`` are dropped. So ``_FALLBACK``
gives ``fallback`` and ``P_1``, ``p.1`` and ``p-1`` all give ``p-1`` — which
is why :func:`check_no_bucket_collisions` refuses to let two project ids share
a bucket. A name that breaks S3's rules (3-63 characters, reserved prefixes
and suffixes) is an error, never silently shortened.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from botocore.exceptions import ClientError

from rawvault.s3.errors import (
    EXPECTED_OWNER_FIELD,
    BucketMissingError,
    BucketNameCollisionError,
    BucketNameError,
    S3AccessDeniedError,
    classify,
    error_code,
    is_access_error,
    is_not_found,
)
from shared.bucket_names import bucket_name as _bucket_name
from shared.bucket_names import normalise_project_id as normalise_project_id  # re-exported

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client
    from mypy_boto3_s3.type_defs import ServerSideEncryptionByDefaultTypeDef, ServerSideEncryptionRuleTypeDef

log = logging.getLogger(__name__)

MANAGED_BY_TAG = ("managed-by", "rawvault")


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
) -> bool:
    """Make sure bucket ``name`` exists and is ours to use; return whether it was created.

    ``head_bucket`` first. A missing bucket is an error unless ``auto_create``:
    then it is created private (object ownership enforced, every public
    access block on), with versioning, default encryption and the tag
    ``managed-by=rawvault``. If configuring a just-created bucket fails, the
    (empty) bucket is deleted again so a retry starts clean.
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
    _create_bucket(client, name, region, server_side_encryption, kms_key_id)
    return True


def _create_bucket(
    client: S3Client, name: str, region: str, server_side_encryption: str | None, kms_key_id: str | None
) -> None:
    log.info("creating bucket %s in %s (private, versioned, encrypted, tagged %s=%s)", name, region, *MANAGED_BY_TAG)
    create_args: dict[str, Any] = {"Bucket": name, "ObjectOwnership": "BucketOwnerEnforced"}
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
        if error_code(error) != "BucketAlreadyOwnedByYou":  # created concurrently by another task: configure it too
            raise classify(error, f"creating bucket {name!r}", bucket=name) from error
    except Exception as error:
        raise classify(error, f"creating bucket {name!r}", bucket=name) from error
    try:
        client.put_public_access_block(
            Bucket=name,
            PublicAccessBlockConfiguration={
                "BlockPublicAcls": True,
                "IgnorePublicAcls": True,
                "BlockPublicPolicy": True,
                "RestrictPublicBuckets": True,
            },
        )
        client.put_bucket_versioning(Bucket=name, VersioningConfiguration={"Status": "Enabled"})
        client.put_bucket_encryption(
            Bucket=name,
            ServerSideEncryptionConfiguration={"Rules": [_encryption_rule(server_side_encryption, kms_key_id)]},
        )
        client.put_bucket_tagging(
            Bucket=name, Tagging={"TagSet": [{"Key": MANAGED_BY_TAG[0], "Value": MANAGED_BY_TAG[1]}]}
        )
    except Exception as error:
        failure = classify(error, f"configuring new bucket {name!r}", bucket=name)
        try:
            client.delete_bucket(Bucket=name)
            note = "the new bucket was deleted again, a retry starts clean"
        except Exception as delete_error:
            note = f"deleting the half-configured bucket failed too ({delete_error}); delete or configure it by hand"
        raise type(failure)(f"{failure} ({note})") from error
