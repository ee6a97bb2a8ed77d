"""The purge's S3 check: the set's manifest and every object, read from S3 now (never the database's word alone).

Passes when the raw file's recorded ``s3_backup_key`` is where rawvault backs
it up (the project's bucket, the backup path as key prefix), the manifest
exists there and describes exactly the recorded ``file_info`` (keys, sizes,
MD5s, ETags, part size; for a multi-file set its ETag is the recorded
``s3_etag``), and every object, by HEAD, holds its recorded file
(:func:`rawvault.s3.objects.check_object`: size and ETag; under SSE-KMS S3's
ETag and SHA-256 as the manifest recorded them). The bucket owner check is the
S3 client's (``ExpectedBucketOwner`` on every request when configured).
No database: the caller passes the raw file and the expected bucket.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from rawvault.purge_errors import Check, PurgeBlockedError
from rawvault.s3 import manifest as manifests
from rawvault.s3.client import S3Client
from rawvault.s3.errors import S3BackupError
from rawvault.s3.keys import S3UrlError, object_key, parse_s3_url, s3_url
from rawvault.s3.objects import ExpectedObject, check_object, etag_of, head, version_of

_MANIFEST_FILE_FIELDS = ("size", "md5", "etag")


def _blocked(reason: str) -> PurgeBlockedError:
    return PurgeBlockedError(Check.S3, reason)


def _recorded_location(raw_file: Any, bucket: str, key_prefix: str) -> None:
    try:
        recorded = parse_s3_url(raw_file.s3_backup_key or "")
    except S3UrlError:
        raise _blocked(f"no valid s3_backup_key is recorded ({raw_file.s3_backup_key!r})") from None
    if recorded != (bucket, key_prefix):
        raise _blocked(
            f"the recorded s3_backup_key {raw_file.s3_backup_key} is not where rawvault backs this raw file up "
            f"({s3_url(bucket, key_prefix)}): check the record before anything is deleted"
        )


def _manifest_problems(manifest: Mapping[str, Any], raw_file: Any, bucket: str, key_prefix: str) -> list[str]:
    expected = {
        "raw_file_id": raw_file.id,
        "bucket": bucket,
        "key_prefix": key_prefix,
        "part_size": raw_file.etag_part_size,
    }
    problems = [
        f"{name} is {manifest.get(name)!r}, recorded {value!r}"
        for name, value in expected.items()
        if manifest.get(name) != value
    ]
    files = manifest.get("files") or {}
    file_info = raw_file.file_info or {}
    problems += [f"{path} is not in the manifest" for path in sorted(set(file_info) - set(files))]
    problems += [f"{path} is in the manifest but not recorded" for path in sorted(set(files) - set(file_info))]
    for path in sorted(set(files) & set(file_info)):
        entry = files[path] or {}
        if entry.get("key") != object_key(key_prefix, path):
            problems.append(f"{path}: key {entry.get('key')!r} in the manifest")
        for name, recorded in zip(_MANIFEST_FILE_FIELDS, file_info[path], strict=False):
            if entry.get(name) != recorded:
                problems.append(f"{path}: {name} {entry.get(name)!r} in the manifest, {recorded!r} recorded")
    return problems


def _read_manifest(client: S3Client, raw_file: Any, bucket: str, key_prefix: str) -> tuple[dict[str, Any], str, str]:
    key = manifests.manifest_key(key_prefix, raw_file.id)
    try:
        found = manifests.read(client, bucket, key)
    except manifests.ManifestUnreadableError as error:
        raise _blocked(str(error)) from None
    except S3BackupError as error:
        raise _blocked(f"the manifest could not be read, so the S3 copy is unproven: {error}") from None
    if found is None:
        raise _blocked(f"the manifest {s3_url(bucket, key)} is missing: the set is not complete in S3")
    manifest, etag = found
    problems = _manifest_problems(manifest, raw_file, bucket, key_prefix)
    if problems:
        raise _blocked(f"the manifest {s3_url(bucket, key)} does not match the record: {'; '.join(problems[:5])}")
    if len(raw_file.file_info) > 1 and etag != raw_file.s3_etag:
        raise _blocked(
            f"the manifest {s3_url(bucket, key)} has ETag {etag}, but {raw_file.s3_etag} was recorded as s3_etag: "
            "it was replaced"
        )
    return manifest, key, etag


def _check_objects(
    client: S3Client, raw_file: Any, bucket: str, key_prefix: str, manifest: Mapping[str, Any]
) -> list[dict[str, Any]]:
    objects = []
    for path, (size, md5, etag) in sorted(raw_file.file_info.items()):
        key = object_key(key_prefix, path)
        listed = (manifest.get("files") or {}).get(path) or {}
        try:
            response = head(client, bucket, key)
        except S3BackupError as error:
            raise _blocked(f"{s3_url(bucket, key)} could not be checked, so the S3 copy is unproven: {error}") from None
        expected = ExpectedObject(path, key, size, md5, etag, listed.get("s3_etag"), listed.get("checksum_sha256"))
        verdict = check_object(response, expected)
        if not verdict.ok:
            raise _blocked(f"{s3_url(bucket, key)}: {verdict.problem}")
        assert response is not None  # an ok verdict has an object
        if len(raw_file.file_info) == 1 and etag_of(response) != raw_file.s3_etag:
            raise _blocked(
                f"{s3_url(bucket, key)} has ETag {etag_of(response)}, but {raw_file.s3_etag} was recorded as s3_etag"
            )
        objects.append(
            {
                "path": path,
                "key": key,
                "size": response.get("ContentLength"),
                "etag": etag_of(response),
                "version": version_of(response),
                "verified_by": verdict.how.value if verdict.how else None,
            }
        )
    return objects


def check_s3_copy(client: S3Client, raw_file: Any, bucket: str, key_prefix: str) -> dict[str, Any]:
    """The evidence that S3 holds the whole recorded set now; :class:`PurgeBlockedError` (check ``s3``) otherwise.

    ``bucket`` and ``key_prefix`` are where rawvault backs the raw file up
    (worked out from the settings and the project, like the upload does).
    """
    _recorded_location(raw_file, bucket, key_prefix)
    manifest, manifest_key, manifest_etag = _read_manifest(client, raw_file, bucket, key_prefix)
    objects = _check_objects(client, raw_file, bucket, key_prefix, manifest)
    return {
        "bucket": bucket,
        "key_prefix": key_prefix,
        "manifest": {"key": manifest_key, "etag": manifest_etag},
        "objects": objects,
    }
