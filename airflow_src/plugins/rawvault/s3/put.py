"""Writing one object without ever replacing one: the settings of every written object and the single PUT.

Every write carries ``If-None-Match: *`` (S3 refuses to replace an object
that is at the key), the storage class, server-side encryption and metadata
of ``backup.s3``, its Object Lock retention (``backup.s3.object_lock``, on a
bucket with Object Lock), the tag lifecycle transitions select (data objects,
with ``backup.s3.lifecycle.transition``), and a SHA-256 flexible checksum S3
validates.

On a store that does not refuse such a write (``If-None-Match`` ignored or
refused: :class:`~rawvault.s3.capabilities.StoreCapabilities`), the header is
left out where the store rejects it, and the key is checked (HEAD) right
before the write, under the caller's guard (its upload claim): an object
found there is never replaced. The write cannot be atomic there: the upload
verifies every object after writing it and again before the manifest.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from botocore.exceptions import ClientError

from rawvault.s3.body import PartReader, ProgressCallback
from rawvault.s3.capabilities import Conditional, StoreCapabilities, checksum_args, put_condition_args
from rawvault.s3.client import S3Client
from rawvault.s3.errors import LocalFileChangedError, ObjectAppearedError, classify, is_conflict
from rawvault.s3.objects import KMS_ENCRYPTION, etag_of, head
from rawvault.s3.retention import data_object_tagging, object_retention_args

if TYPE_CHECKING:
    from shared.settings import ObjectLockSettings, S3Settings

Guard = Callable[[], None]

OVERWRITING_OPERATIONS = ("PutObject", "CompleteMultipartUpload")


@dataclass(frozen=True)
class ObjectSettings:
    """Settings of every uploaded object, from ``backup.s3``."""

    storage_class: str = "STANDARD"
    server_side_encryption: str | None = "AES256"
    kms_key_id: str | None = None
    max_concurrency: int = 8
    object_lock: ObjectLockSettings | None = None  # the retention of every object and manifest
    tag_data: bool = False  # data objects carry the tag lifecycle transitions select (manifests do not)

    @classmethod
    def from_settings(cls, s3: S3Settings, caps: StoreCapabilities | None = None) -> ObjectSettings:
        """The object settings of a ``backup.s3`` section for a bucket with ``caps`` (``None``: AWS).

        Retention is sent unless the probe found the bucket without Object Lock
        (a store refuses it there; the probe's weakness says so).
        """
        lock = s3.object_lock if caps is None or caps.object_lock is not False else None
        return cls(
            storage_class=s3.storage_class,
            server_side_encryption=s3.server_side_encryption,
            kms_key_id=s3.kms_key_id,
            max_concurrency=s3.max_concurrency,
            object_lock=lock,
            tag_data=bool(s3.lifecycle and s3.lifecycle.transition),
        )

    @property
    def kms(self) -> bool:
        """Objects are encrypted with SSE-KMS: their ETag is no MD5."""
        return self.server_side_encryption in KMS_ENCRYPTION

    def encryption_args(self) -> dict[str, str]:
        """``ServerSideEncryption`` / ``SSEKMSKeyId`` request arguments."""
        args: dict[str, str] = {}
        if self.server_side_encryption:
            args["ServerSideEncryption"] = self.server_side_encryption
        if self.server_side_encryption == "aws:kms" and self.kms_key_id:
            args["SSEKMSKeyId"] = self.kms_key_id
        return args

    def retention_args(self) -> dict[str, Any]:
        """``ObjectLockMode`` / ``ObjectLockRetainUntilDate`` (from now) of a write, or nothing without lock."""
        return object_retention_args(self.object_lock)

    def data_args(self) -> dict[str, Any]:
        """Encryption, retention and the lifecycle tag of a data object's PUT or CreateMultipartUpload."""
        args: dict[str, Any] = {**self.encryption_args(), **self.retention_args()}
        if self.tag_data:
            args["Tagging"] = data_object_tagging()
        return args


def s3_metadata(values: Mapping[str, str]) -> dict[str, str]:
    """User metadata S3 accepts: lower-case keys, ASCII values (others percent-encoded)."""
    result = {}
    for name, value in values.items():
        text = str(value)
        result[name.lower()] = text if text.isascii() and text.isprintable() else quote(text, safe="")
    return result


def forbid_overwrites(client: S3Client, caps: StoreCapabilities | None = None) -> None:
    """Make every PutObject/CompleteMultipartUpload of ``client`` conditional on the key being free.

    Only for the operations the store (``caps``; ``None``: AWS) enforces
    ``If-None-Match`` on: a store that rejects the header would refuse every
    write, and one that ignores it gains nothing (its writes are guarded by
    :func:`check_key_free` instead). A write that is conditional already on the
    object it replaces (``IfMatch``: only the manifest's replacement,
    :func:`rawvault.s3.manifest.replace`) keeps its own condition.
    """

    def if_none_match(params: dict[str, Any], **_kwargs: Any) -> None:
        if "IfMatch" not in params:
            params.setdefault("IfNoneMatch", "*")

    enforced = {
        "PutObject": caps is None or caps.conditional_put is Conditional.ENFORCED,
        "CompleteMultipartUpload": caps is None or caps.conditional_complete is Conditional.ENFORCED,
    }
    for operation in OVERWRITING_OPERATIONS:
        if enforced[operation]:
            client.meta.events.register(
                f"before-parameter-build.s3.{operation}", if_none_match, unique_id=f"rawvault-if-none-match-{operation}"
            )


def check_key_free(client: S3Client, bucket: str, key: str, guard: Guard | None, *, what: str) -> None:
    """On a store that does not refuse overwrites: HEAD ``key`` right before writing it, under ``guard``.

    Raises :class:`~rawvault.s3.errors.ObjectAppearedError` when an object is
    there (the caller checks it like any object found at a key, and never
    replaces it); ``guard()`` raises when the caller lost its claim.
    """
    if guard is not None:
        guard()
    found = head(client, bucket, key)
    if found is not None:
        raise ObjectAppearedError(
            f"an object (ETag {etag_of(found)}, {found.get('ContentLength')} bytes) appeared at s3://{bucket}/{key} "
            f"before {what} was written; this store does not refuse overwrites (If-None-Match), so rawvault checked "
            "the key itself and did not write (rawvault never overwrites backup data): find out where it came from"
        )


def put_file(
    client: S3Client,
    bucket: str,
    key: str,
    source: Path,
    size: int,
    object_args: Mapping[str, Any],
    progress: ProgressCallback | None,
    *,
    what: str,
    caps: StoreCapabilities | None = None,
    guard: Guard | None = None,
) -> dict[str, Any]:
    """One PUT of ``source`` (``size`` bytes), streamed, with a SHA-256 checksum; never replaces an object.

    ``caps`` (``None``: AWS) decides the checksum and the condition sent; on a
    store that does not enforce ``If-None-Match`` the key is checked first
    (:func:`check_key_free`, under ``guard``). ``guard()`` is called once
    before the PUT (it raises when the caller lost its claim). ``what`` names the file in
    messages. Returns S3's answer. Raises
    :class:`~rawvault.s3.errors.ObjectAppearedError` when an object is at the
    key, :class:`~rawvault.s3.errors.LocalFileChangedError` when the file
    cannot be read, else a classified :class:`~rawvault.s3.errors.S3BackupError`.
    """
    target = f"s3://{bucket}/{key}"
    condition = put_condition_args(caps)
    if not condition:
        check_key_free(client, bucket, key, guard, what=what)  # calls guard() before its HEAD
    elif guard is not None:
        guard()
    checksum = checksum_args(caps)
    try:
        with PartReader(source, 0, size, progress) as body:
            return dict(
                client.put_object(
                    Bucket=bucket, Key=key, Body=body if size else b"", ContentLength=size,
                    **checksum, **condition, **object_args,
                )
            )  # fmt: skip
    except ClientError as error:
        if is_conflict(error):
            raise ObjectAppearedError(
                f"another object appeared at {target} during the upload of {what}; S3 refused to replace it "
                "(rawvault never overwrites backup data): find out where it came from"
            ) from error
        raise classify(error, f"uploading {what} to {target}", bucket=bucket, key=key) from error
    except OSError as error:
        raise LocalFileChangedError(
            f"cannot read the local backup copy {source} of {what} ({error.strerror}): run copy_raw_file again"
        ) from error
    except Exception as error:
        raise classify(error, f"uploading {what} to {target}", bucket=bucket, key=key) from error
