"""Writing one object without ever replacing one: the settings of every written object and the single PUT.

Every write carries ``If-None-Match: *`` (S3 refuses to replace an object
that is at the key), the storage class, server-side encryption and metadata
of ``backup.s3``, and a SHA-256 flexible checksum S3 validates.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from botocore.exceptions import ClientError

from rawvault.digests import CHECKSUM_ALGORITHM
from rawvault.s3.body import PartReader, ProgressCallback
from rawvault.s3.errors import LocalFileChangedError, ObjectAppearedError, classify, is_conflict
from rawvault.s3.objects import KMS_ENCRYPTION

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

    from shared.settings import S3Settings

OVERWRITING_OPERATIONS = ("PutObject", "CompleteMultipartUpload")


@dataclass(frozen=True)
class ObjectSettings:
    """Settings of every uploaded object, from ``backup.s3``."""

    storage_class: str = "STANDARD"
    server_side_encryption: str | None = "AES256"
    kms_key_id: str | None = None
    max_concurrency: int = 8

    @classmethod
    def from_settings(cls, s3: S3Settings) -> ObjectSettings:
        """The object settings of a ``backup.s3`` section."""
        return cls(
            storage_class=s3.storage_class,
            server_side_encryption=s3.server_side_encryption,
            kms_key_id=s3.kms_key_id,
            max_concurrency=s3.max_concurrency,
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


def s3_metadata(values: Mapping[str, str]) -> dict[str, str]:
    """User metadata S3 accepts: lower-case keys, ASCII values (others percent-encoded)."""
    result = {}
    for name, value in values.items():
        text = str(value)
        result[name.lower()] = text if text.isascii() and text.isprintable() else quote(text, safe="")
    return result


def forbid_overwrites(client: S3Client) -> None:
    """Make every PutObject/CompleteMultipartUpload of ``client`` conditional on the key being free.

    A write that is conditional already on the object it replaces (``IfMatch``: only the manifest's
    replacement, :func:`rawvault.s3.manifest.replace`) keeps its own condition.
    """

    def if_none_match(params: dict[str, Any], **_kwargs: Any) -> None:
        if "IfMatch" not in params:
            params.setdefault("IfNoneMatch", "*")

    for operation in OVERWRITING_OPERATIONS:
        client.meta.events.register(
            f"before-parameter-build.s3.{operation}", if_none_match, unique_id=f"rawvault-if-none-match-{operation}"
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
) -> None:
    """One PUT of ``source`` (``size`` bytes), streamed, with a SHA-256 checksum; never replaces an object.

    ``what`` names the file in messages. Raises
    :class:`~rawvault.s3.errors.ObjectAppearedError` when an object is at the
    key, :class:`~rawvault.s3.errors.LocalFileChangedError` when the file
    cannot be read, else a classified :class:`~rawvault.s3.errors.S3BackupError`.
    """
    target = f"s3://{bucket}/{key}"
    try:
        with PartReader(source, 0, size, progress) as body:
            client.put_object(
                Bucket=bucket,
                Key=key,
                Body=body if size else b"",
                ContentLength=size,
                ChecksumAlgorithm=CHECKSUM_ALGORITHM,
                IfNoneMatch="*",
                **object_args,
            )
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
