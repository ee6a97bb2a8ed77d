"""The IAM actions each S3 call of rawvault needs: one table, for access-denied messages and the policy test.

:data:`ACTIONS_OF` maps every boto3 S3 method rawvault calls to the IAM actions
AWS checks for it (AWS docs: "Actions, resources, and condition keys for Amazon
S3" and each API's "Permissions" section; reads and deletes of a version need
the ``*Version`` action). ``tests/unit/test_iam_policy.py`` finds every S3 call
in the code, fails when one has no row here, and checks that
``docs/iam-policy.json`` grants exactly these actions; :func:`missing_permission`
turns a refused operation into "s3:CreateBucket on arn:aws:s3:::<bucket>".
"""

from __future__ import annotations

from collections.abc import Mapping

from botocore import xform_name

POLICY_FILE = "docs/iam-policy.json"

ACTIONS_OF: Mapping[str, tuple[str, ...]] = {
    "head_bucket": ("s3:ListBucket",),
    # Which keys of a set exist before its upload and what they hold after its PUTs (s3/listing, s3/listed_check);
    # is a new bucket still empty (before removing it).
    "list_objects_v2": ("s3:ListBucket",),
    # The capability probe (backup.s3.compatibility: auto, the default) reads these bucket settings.
    "get_bucket_versioning": ("s3:GetBucketVersioning",),
    "get_bucket_encryption": ("s3:GetEncryptionConfiguration",),
    "list_multipart_uploads": ("s3:ListBucketMultipartUploads",),
    "list_parts": ("s3:ListMultipartUploadParts",),
    "abort_multipart_upload": ("s3:AbortMultipartUpload",),
    "create_multipart_upload": ("s3:PutObject",),
    "upload_part": ("s3:PutObject",),
    "complete_multipart_upload": ("s3:PutObject",),
    "put_object": ("s3:PutObject",),
    "head_object": ("s3:GetObject", "s3:GetObjectVersion"),
    "get_object": ("s3:GetObject", "s3:GetObjectVersion"),
    "download_fileobj": ("s3:GetObject", "s3:GetObjectVersion"),
    "delete_object": ("s3:DeleteObject", "s3:DeleteObjectVersion"),
    # Only with backup.s3.auto_create_buckets: the statement OptionalAutoCreateBuckets.
    "create_bucket": ("s3:CreateBucket", "s3:PutBucketOwnershipControls"),  # ObjectOwnership=BucketOwnerEnforced
    "put_public_access_block": ("s3:PutBucketPublicAccessBlock",),
    "put_bucket_versioning": ("s3:PutBucketVersioning",),
    "put_bucket_encryption": ("s3:PutEncryptionConfiguration",),
    "put_bucket_tagging": ("s3:PutBucketTagging",),
    "delete_bucket": ("s3:DeleteBucket",),  # rolls back a half-configured new bucket
    # Only with backup.s3.object_lock: the statement OptionalObjectLock.
    "put_object_lock_configuration": ("s3:PutBucketObjectLockConfiguration",),
    "get_object_lock_configuration": ("s3:GetBucketObjectLockConfiguration",),
    "put_object_retention": ("s3:PutObjectRetention",),
    # Only with backup.s3.lifecycle: the statement OptionalLifecycle.
    "get_bucket_lifecycle_configuration": ("s3:GetLifecycleConfiguration",),
    "put_bucket_lifecycle_configuration": ("s3:PutLifecycleConfiguration",),
}

# Request (and answer) fields that need an IAM action of their own, on top of the call's: a PUT with Tagging needs
# s3:PutObjectTagging; one with retention s3:PutObjectRetention, and S3 shows an object's retention on HEAD only
# to callers with s3:GetObjectRetention (backup.s3.lifecycle.transition and backup.s3.object_lock only).
PARAMETER_ACTIONS: Mapping[str, tuple[str, ...]] = {
    "Tagging": ("s3:PutObjectTagging",),
    "ObjectLockMode": ("s3:PutObjectRetention", "s3:GetObjectRetention"),
}

# Operations whose resource is the bucket itself (the others act on arn:aws:s3:::<bucket>/<key>).
BUCKET_OPERATIONS = frozenset(
    {
        "head_bucket", "list_objects_v2", "get_bucket_versioning", "get_bucket_encryption",
        "list_multipart_uploads", "create_bucket", "put_public_access_block", "put_bucket_versioning",
        "put_bucket_encryption", "put_bucket_tagging", "delete_bucket", "put_object_lock_configuration",
        "get_object_lock_configuration", "get_bucket_lifecycle_configuration", "put_bucket_lifecycle_configuration",
    }
)  # fmt: skip
# Operations that write or read object data: under SSE-KMS they need the KMS key too.
_KMS_NOTE_OF = {
    "put_object": "kms:GenerateDataKey",
    "create_multipart_upload": "kms:GenerateDataKey",
    "upload_part": "kms:GenerateDataKey",
    "complete_multipart_upload": "kms:GenerateDataKey",
    "get_object": "kms:Decrypt",
    "download_fileobj": "kms:Decrypt",
}


def method_name(operation: str) -> str:
    """The boto3 method of an S3 operation: ``HeadBucket`` -> ``head_bucket`` (a method name stays as it is)."""
    return operation if operation in ACTIONS_OF else xform_name(operation)


def resource_arn(operation: str, bucket: str, key: str | None = None) -> str:
    """The ARN IAM checks for ``operation`` on ``bucket`` (and ``key``, for an object operation)."""
    if method_name(operation) in BUCKET_OPERATIONS or key is None:
        return f"arn:aws:s3:::{bucket}"
    return f"arn:aws:s3:::{bucket}/{key}"


def missing_permission(operation: str, bucket: str | None = None, key: str | None = None) -> str | None:
    """What the IAM identity lacks when S3 refused ``operation``, e.g. ``s3:CreateBucket on arn:aws:s3:::b``.

    ``None`` for an operation outside the table. Without ``bucket`` the
    resource is described, not named.
    """
    method = method_name(operation)
    actions = ACTIONS_OF.get(method)
    if not actions:
        return None
    listed = actions[0] if len(actions) == 1 else "one of " + ", ".join(actions)
    if bucket:
        where = resource_arn(method, bucket, key)
    else:
        where = "the bucket" if method in BUCKET_OPERATIONS else "the objects of the bucket"
    text = f"{listed} on {where}"
    if method in _KMS_NOTE_OF:
        text += f" (with SSE-KMS also {_KMS_NOTE_OF[method]} on the KMS key)"
    return text
