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
          "verified_by": "etag" | "md5" | "checksum" | "content"
        }, ...
      }
    }

**A pure function of the set**: the recorded files and what S3 reports for
each object; no wall-clock time (manifests written before had ``completed_at``,
which is ignored). The same set in the same objects gives the same bytes, so a
re-run writes nothing and, where the ETag is the MD5 of the content, a
manifest written again has the same ETag.

Two manifests describe the same set when format, raw file id, part size and
every file's key, size, MD5 and recorded ETag agree (:func:`same_set`). One
describes the objects in S3 when every file's ``s3_etag`` and
``checksum_sha256`` are the ones S3 reports now (:func:`stale_files` lists
those that are not).

This module builds, encodes and decodes manifests and reads and writes them
in S3. :func:`write` never replaces an object (``If-None-Match: *``). The
manifest is the one object rawvault may replace, and only through
:func:`replace`: when a repair changed objects of the set, conditional on the
old manifest's ETag (``If-Match``: S3 refuses the write if another writer
changed it since it was read; a new version of the key in a versioned
bucket), after every object was verified. Both read what they wrote back and
compare it before returning its ETag.

On a store that does not enforce these conditions (``caps``, see
:mod:`rawvault.s3.capabilities`) both read the key right before writing and
act on what they find as they would on the store's refusal; the read-back
after the write catches a writer that came in between. With
``backup.s3.object_lock`` a manifest gets its retention like every object.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import Any, Final

from botocore.exceptions import ClientError

from rawvault.digests import CHECKSUM_ALGORITHM
from rawvault.s3.capabilities import StoreCapabilities, checksum_args, put_condition_args
from rawvault.s3.client import S3Client
from rawvault.s3.errors import (
    ExistingObjectMismatchError,
    S3TransientError,
    VerificationError,
    classify,
    is_conflict,
    is_not_found,
)
from rawvault.s3.keys import s3_url, validate_relative_path
from rawvault.s3.objects import etag_of, head, unless_missing
from rawvault.s3.put import ObjectSettings, s3_metadata

MANIFEST_FORMAT = "rawvault-manifest/1"
MANIFEST_SUFFIX = ".rawvault-manifest.json"
MANIFEST_STORAGE_CLASS: Final = "STANDARD"
_IDENTITY_FILE_FIELDS = ("key", "size", "md5", "etag")
# What S3 reports for an object: a manifest whose files record other values no longer describes S3.
_S3_FILE_FIELDS = ("s3_etag", "checksum_sha256")


class ManifestUnreadableError(ValueError):
    """The object where a manifest belongs is not a rawvault manifest."""


class ManifestChangedError(S3TransientError):
    """The manifest changed in S3 between reading it and replacing it (another writer); nothing was replaced."""


def manifest_key(key_prefix: str, raw_file_id: str) -> str:
    """Key of the manifest of raw file ``raw_file_id`` under ``key_prefix``."""
    validate_relative_path(raw_file_id, what="raw file id")
    if "/" in raw_file_id:
        raise ValueError(f"raw file id {raw_file_id!r} contains '/'")
    return f"{key_prefix}{raw_file_id}{MANIFEST_SUFFIX}"


def encode(manifest: dict[str, Any]) -> bytes:
    """The manifest as UTF-8 JSON (sorted keys, indented: small, diff-able and the same bytes every time)."""
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


def stale_files(existing: Mapping[str, Any], current: Mapping[str, Any]) -> list[str]:
    """The files for which ``existing`` records other S3 values (ETag, SHA-256) than ``current`` (sorted).

    ``current`` is the manifest of the objects S3 holds now; an empty list
    means ``existing`` still describes them and is kept as it is.
    """
    old_files, new_files = existing.get("files") or {}, current.get("files") or {}
    return sorted(
        path
        for path in {*old_files, *new_files}
        if any((old_files.get(path) or {}).get(f) != (new_files.get(path) or {}).get(f) for f in _S3_FILE_FIELDS)
    )


def _equivalent(a: dict[str, Any], b: dict[str, Any]) -> bool:
    """Same set, same objects: what another run wrote meanwhile serves as well as ``b``."""
    return same_set(a, b) and not stale_files(a, b)


def build(
    *,
    raw_file_id: str,
    bucket: str,
    key_prefix: str,
    part_size: int,
    metadata: Mapping[str, str],
    files: Mapping[str, Mapping[str, Any]],
) -> dict[str, Any]:
    """A manifest of the set whose ``files`` map paths to ``key``, ``size``, ``md5``, ``etag`` (and S3's values).

    A pure function of its arguments (no time, nothing random): see the module docstring.
    """
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
        "files": {path: dict(entry) for path, entry in sorted(files.items())},
    }


def read(client: S3Client, bucket: str, key: str) -> tuple[dict[str, Any], str] | None:
    """The manifest at ``key`` and its S3 ETag, or ``None`` when there is none.

    Raises :class:`ManifestUnreadableError` when the object is not a rawvault
    manifest and an :class:`~rawvault.s3.errors.S3BackupError` when S3 fails.
    """

    def get() -> tuple[bytes, dict[str, Any]]:
        response = client.get_object(Bucket=bucket, Key=key)
        return response["Body"].read(), dict(response)

    found = unless_missing(get, "reading manifest", bucket, key)
    if found is None:
        return None
    body, response = found
    try:
        return decode(body), etag_of(response)
    except ValueError as error:
        raise ManifestUnreadableError(f"{s3_url(bucket, key)} is not a readable rawvault manifest ({error})") from None


def _read_or_none(client: S3Client, bucket: str, key: str) -> tuple[dict[str, Any], str] | None:
    try:
        return read(client, bucket, key)
    except ManifestUnreadableError:
        return None


def _put_verified(
    client: S3Client,
    where: tuple[str, str],
    manifest: dict[str, Any],
    settings: ObjectSettings,
    metadata: Mapping[str, str],
    caps: StoreCapabilities | None,
    *,
    condition: dict[str, str],
    action: str,
    refused: Callable[[tuple[dict[str, Any], str] | None], Exception],
    on_missing: Callable[[], str] | None = None,
) -> str:
    """PUT the manifest at ``where`` (bucket, key) under ``condition``, read it back; its ETag.

    ``condition`` (``IfNoneMatch`` or ``IfMatch``) goes with the request where the store
    enforces it, else it is checked right before. When the condition fails, another writer's
    same manifest is kept (its ETag); anything else raises ``refused(what is there)``.
    ``on_missing``: what to do when S3 answers that the key is not there (``None``: an error).
    """
    bucket, key = where
    args: dict[str, Any] = {
        "Bucket": bucket,
        "Key": key,
        "Body": encode(manifest),
        "ContentType": "application/json",
        "StorageClass": MANIFEST_STORAGE_CLASS,
        "Metadata": s3_metadata(metadata),
        **checksum_args(caps),
        **(condition if put_condition_args(caps) else {}),
        **settings.encryption_args(),
        **settings.retention_args(),
    }
    try:
        refusal = _store_refusal(client, bucket, key, condition, caps)
        if refusal is not None:
            raise refusal
        etag = etag_of(client.put_object(**args))
    except ClientError as error:
        if on_missing is not None and is_not_found(error):
            return on_missing()
        if not is_conflict(error):
            raise classify(error, f"{action} {s3_url(bucket, key)}", bucket=bucket, key=key) from error
        return _keep_if_same(client, bucket, key, manifest, refused)
    except Exception as error:
        raise classify(error, f"{action} {s3_url(bucket, key)}", bucket=bucket, key=key) from error
    return _verified(client, bucket, key, manifest, etag)


def _keep_if_same(
    client: S3Client,
    bucket: str,
    key: str,
    manifest: dict[str, Any],
    refused: Callable[[tuple[dict[str, Any], str] | None], Exception],
) -> str:
    """After a conflict: the ETag of what is at ``key`` when another writer wrote this same manifest.

    Anything else there (or nothing readable) raises ``refused(what was read)``.
    """
    found = _read_or_none(client, bucket, key)
    if found is not None and _equivalent(found[0], manifest):
        return found[1]
    raise refused(found) from None


def _store_refusal(
    client: S3Client, bucket: str, key: str, condition: dict[str, str], caps: StoreCapabilities | None
) -> ClientError | None:
    """On a store that does not enforce ``condition``: the refusal S3 would give it now (the key read right before).

    ``None``: the write may go ahead (or the store itself enforces the condition).
    """
    if put_condition_args(caps):
        return None
    found = head(client, bucket, key)
    if "IfMatch" in condition and found is None:
        return _refusal("NoSuchKey", 404)
    if "IfMatch" in condition:
        changed = etag_of(found or {}) != condition["IfMatch"].strip('"')
        return _refusal("PreconditionFailed", 412) if changed else None
    return _refusal("PreconditionFailed", 412) if found is not None else None


def _refusal(code: str, status: int) -> ClientError:
    return ClientError({"Error": {"Code": code}, "ResponseMetadata": {"HTTPStatusCode": status}}, "PutObject")


def _verified(client: S3Client, bucket: str, key: str, manifest: dict[str, Any], etag: str) -> str:
    """Read the manifest just written back: it must be ``manifest`` (with ``etag``, when S3 gave one); its ETag."""
    found = _read_or_none(client, bucket, key)
    if found is None or found[0] != manifest or (etag and found[1] != etag):
        what = "nothing readable" if found is None else f"another manifest (ETag {found[1]})"
        raise VerificationError(
            f"the manifest just written to {s3_url(bucket, key)} (ETag {etag or '?'}) reads back as {what}: another "
            "writer replaced it meanwhile, or the store does not keep what it acknowledged; run the upload again"
        )
    return found[1]


def write(
    client: S3Client,
    bucket: str,
    key: str,
    manifest: dict[str, Any],
    settings: ObjectSettings,
    metadata: Mapping[str, str],
    *,
    caps: StoreCapabilities | None = None,
) -> str:
    """Write ``manifest`` at ``key`` unless an object is there (``If-None-Match``); return its S3 ETag.

    A manifest another run wrote first is fine when it is the same manifest;
    anything else there raises :class:`~rawvault.s3.errors.ExistingObjectMismatchError`.
    What was written is read back and compared. ``caps``: the store's
    capabilities (``None``: AWS).
    """

    def refused(_found: object) -> Exception:
        where = s3_url(bucket, key)
        return ExistingObjectMismatchError(
            f"a different manifest appeared at {where} during the upload; it was not overwritten"
        )

    return _put_verified(
        client, (bucket, key), manifest, settings, metadata, caps,
        condition={"IfNoneMatch": "*"}, action="writing manifest", refused=refused,
    )  # fmt: skip


def replace(
    client: S3Client,
    bucket: str,
    key: str,
    manifest: dict[str, Any],
    *,
    old_etag: str,
    settings: ObjectSettings,
    metadata: Mapping[str, str],
    caps: StoreCapabilities | None = None,
) -> str:
    """Replace the manifest at ``key`` (read with ETag ``old_etag``) by ``manifest``; return the new ETag.

    Only after every object of the set was verified (the caller's duty): the
    new manifest describes them. The PUT carries ``If-Match: old_etag``, so S3
    refuses it when another writer changed the manifest since it was read
    (:class:`ManifestChangedError`, unless that writer wrote this same
    manifest); a manifest that vanished meanwhile is written as new. In a
    versioned bucket the old manifest stays as the previous version. What was
    written is read back and compared. ``caps``: the store's capabilities (``None``: AWS).
    """

    def refused(current: tuple[dict[str, Any], str] | None) -> Exception:
        return ManifestChangedError(
            f"the manifest {s3_url(bucket, key)} changed while this run repaired the set (it had ETag {old_etag}, "
            f"now {current[1] if current else 'unreadable'}): another writer; nothing was replaced, run the upload "
            "again"
        )

    return _put_verified(
        client, (bucket, key), manifest, settings, metadata, caps,
        condition={"IfMatch": f'"{old_etag}"'}, action="replacing manifest", refused=refused,
        on_missing=lambda: write(client, bucket, key, manifest, settings, metadata, caps=caps),
    )  # fmt: skip
