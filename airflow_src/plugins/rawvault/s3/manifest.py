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
"""

from __future__ import annotations

import json
from typing import Any

from rawvault.s3.keys import validate_relative_path

MANIFEST_FORMAT = "rawvault-manifest/1"
MANIFEST_SUFFIX = ".rawvault-manifest.json"
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
