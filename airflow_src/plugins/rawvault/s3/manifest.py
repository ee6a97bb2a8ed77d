"""The manifest: a small JSON object written last, whose presence means "this set is complete".

Key: ``<key_prefix><raw_file_id>.rawvault-manifest.json``, next to the raw
file's objects, in storage class ``STANDARD`` (readable at once even when the
data went to a cold storage class). Content (``format: rawvault-manifest/1``)::

    {
      "format": "rawvault-manifest/1",
      "raw_file_id": "NAME.d",
      "bucket": "...", "key_prefix": "tims1/2026_11/",
      "part_size": 67108864,            # bytes per part of every multipart ETag
      "checksum_algorithm": "SHA256",   # flexible checksum S3 validated on upload
      "metadata": {"instrument-id": ..., "project-id": ...},
      "file_count": 2, "total_size": 123,
      "files": {
        "NAME.d/analysis.tdf": {
          "key": "tims1/2026_11/NAME.d/analysis.tdf",
          "size": 100, "md5": "<hex>", "etag": "<recorded ETag>",
          "s3_etag": "<ETag S3 reports>", "checksum_sha256": "<S3's SHA-256, base64>",
          "verified_by": "etag" | "checksum"
        }, ...
      },
      "completed_at": "2026-11-22T08:00:00Z"
    }

Two manifests describe the same set when format, raw file id, part size and
every file's key, size, MD5 and recorded ETag agree (S3's ETag, checksum and
the time may differ between uploads).

This module builds, encodes and decodes manifests and reads and writes them
in S3 (never replacing one).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Final

from botocore.exceptions import ClientError

from rawvault.digests import CHECKSUM_ALGORITHM
from rawvault.s3.errors import ExistingObjectMismatchError, classify, is_conflict, is_not_found
from rawvault.s3.keys import s3_url, validate_relative_path
from rawvault.s3.objects import etag_of
from rawvault.s3.put import ObjectSettings, s3_metadata

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

MANIFEST_FORMAT = "rawvault-manifest/1"
MANIFEST_SUFFIX = ".rawvault-manifest.json"
MANIFEST_STORAGE_CLASS: Final = "STANDARD"
_IDENTITY_FILE_FIELDS = ("key", "size", "md5", "etag")


def manifest_key(key_prefix: str, raw_file_id: str) -> str:
    """Key of the manifest of raw file ``raw_file_id`` under ``key_prefix``."""
    validate_relative_path(raw_file_id, what="raw file id")
    if "/" in raw_file_id:
        raise ValueError(f"raw file id {raw_file_id!r} contains '/'")
    return f"{key_prefix}{raw_file_id}{MANIFEST_SUFFIX}"


def encode(manifest: dict[str, Any]) -> bytes:
    """The manifest as UTF-8 JSON (sorted keys, indented: small and diff-able)."""
    return (json.dumps(manifest, indent=1, sort_keys=True, ensure_ascii=False) + "\n").encode("utf-8")


def decode(body: bytes) -> dict[str, Any]:
    """Parse a manifest; anything that is not a rawvault manifest raises ``ValueError``."""
    try:
        manifest = json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ValueError(f"not a rawvault manifest: {error}") from None
    if not isinstance(manifest, dict) or manifest.get("format") != MANIFEST_FORMAT:
        raise ValueError(f"not a {MANIFEST_FORMAT} manifest")
    return manifest


def identity(manifest: dict[str, Any]) -> dict[str, Any]:
    """The parts of a manifest that say which set it describes (see the module docstring)."""
    files = manifest.get("files") or {}
    return {
        "format": manifest.get("format"),
        "raw_file_id": manifest.get("raw_file_id"),
        "part_size": manifest.get("part_size"),
        "files": {
            path: {name: (entry or {}).get(name) for name in _IDENTITY_FILE_FIELDS} for path, entry in files.items()
        },
    }


def same_set(a: dict[str, Any], b: dict[str, Any]) -> bool:
    """Whether two manifests describe the same set."""
    return identity(a) == identity(b)


def build(
    *,
    raw_file_id: str,
    bucket: str,
    key_prefix: str,
    part_size: int,
    metadata: Mapping[str, str],
    files: Mapping[str, Mapping[str, Any]],
) -> dict[str, Any]:
    """A manifest of the set whose ``files`` map paths to ``key``, ``size``, ``md5``, ``etag`` (and S3's values)."""
    return {
        "format": MANIFEST_FORMAT,
        "raw_file_id": raw_file_id,
        "bucket": bucket,
        "key_prefix": key_prefix,
        "part_size": part_size,
        "checksum_algorithm": CHECKSUM_ALGORITHM,
        "metadata": dict(metadata),
        "file_count": len(files),
        "total_size": sum(int(entry["size"]) for entry in files.values()),
        "files": {path: dict(entry) for path, entry in files.items()},
        "completed_at": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
    }


class ManifestUnreadableError(ValueError):
    """The object where a manifest belongs is not a rawvault manifest."""


def read(client: S3Client, bucket: str, key: str) -> tuple[dict[str, Any], str] | None:
    """The manifest at ``key`` and its S3 ETag, or ``None`` when there is none.

    Raises :class:`ManifestUnreadableError` when the object is not a rawvault
    manifest and an :class:`~rawvault.s3.errors.S3BackupError` when S3 fails.
    """
    try:
        response = client.get_object(Bucket=bucket, Key=key)
        body = response["Body"].read()
    except ClientError as error:
        if is_not_found(error):
            return None
        raise classify(error, f"reading manifest {s3_url(bucket, key)}") from error
    except Exception as error:
        raise classify(error, f"reading manifest {s3_url(bucket, key)}") from error
    try:
        return decode(body), etag_of(response)
    except ValueError as error:
        raise ManifestUnreadableError(f"{s3_url(bucket, key)} is not a readable rawvault manifest ({error})") from None


def write(
    client: S3Client,
    bucket: str,
    key: str,
    manifest: dict[str, Any],
    settings: ObjectSettings,
    metadata: Mapping[str, str],
) -> str:
    """Write ``manifest`` at ``key`` unless an object is there (``If-None-Match``); return its S3 ETag.

    A manifest another run wrote first is fine when it describes the same set;
    anything else there raises :class:`~rawvault.s3.errors.ExistingObjectMismatchError`.
    """
    try:
        response = client.put_object(
            Bucket=bucket,
            Key=key,
            Body=encode(manifest),
            ContentType="application/json",
            ChecksumAlgorithm=CHECKSUM_ALGORITHM,
            StorageClass=MANIFEST_STORAGE_CLASS,
            Metadata=s3_metadata(metadata),
            IfNoneMatch="*",
            **settings.encryption_args(),  # type: ignore[arg-type]
        )
    except ClientError as error:
        if not is_conflict(error):
            raise classify(error, f"writing manifest s3://{bucket}/{key}") from error
        try:
            existing = read(client, bucket, key)
        except ManifestUnreadableError:
            existing = None
        if existing is not None and same_set(existing[0], manifest):
            return existing[1]
        raise ExistingObjectMismatchError(
            f"a different manifest appeared at s3://{bucket}/{key} during the upload; it was not overwritten"
        ) from None
    except Exception as error:
        raise classify(error, f"writing manifest s3://{bucket}/{key}") from error
    return etag_of(response)
