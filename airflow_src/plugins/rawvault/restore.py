"""Use case "restore": plan what to restore from the database or from the set's manifest, then download it.

**What to restore** (:class:`~rawvault.s3.download.RestorePlan`) comes from one of two places:

- the database (default): ``RawFile.file_info`` (``[size, md5, etag]`` per
  path), ``etag_part_size`` and ``s3_backup_key`` (``s3://<bucket>/<key_prefix>``).
  The set's manifest, when present, adds S3's ETag and SHA-256 of each object
  (needed under SSE-KMS); where it disagrees with the database, the database wins.
- the manifest alone (``manifest=`` / ``--from-manifest``), when the database
  is unavailable: ``s3://<bucket>/<key_prefix><raw_file_id>.rawvault-manifest.json``
  lists every file's key, size, MD5, ETag and SHA-256 and the part size.
  Objects are looked up next to the manifest, wherever the bucket now is.

Each path ``p`` is restored to ``<target_folder>/p``, so the target mirrors
the raw file's local backup folder (``NAME.raw``, ``NAME.d/...``); the
download and its verification are :mod:`rawvault.s3.download`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rawvault.cli_setup import database_unreachable
from rawvault.s3 import manifest as manifest_mod
from rawvault.s3.client import S3Client
from rawvault.s3.download import (
    DEFAULT_MAX_CONCURRENCY,
    DEFAULT_PROGRESS_INTERVAL_SECONDS,
    RestorePlan,
    RestoreResult,
    RestoreSourceError,
    restore_plan,
)
from rawvault.s3.errors import S3BackupError
from rawvault.s3.file_info import check_part_size, parse_file_info
from rawvault.s3.keys import S3UrlError, object_key, parse_s3_url, s3_url, validate_key_prefix
from rawvault.s3.objects import ExpectedObject
from shared.db.interface import DatabaseError, RawFileNotFoundError, get_raw_file
from shared.s3_limits import MIB

log = logging.getLogger(__name__)

DEFAULT_PART_SIZE = 64 * MIB  # shared.settings.DEFAULT_PART_SIZE_MB; only when nothing is recorded


@dataclass(frozen=True)
class ManifestLocation:
    """Where a set's manifest is: ``s3://<bucket>/<key_prefix><raw_file_id>.rawvault-manifest.json``."""

    bucket: str
    key: str

    @classmethod
    def parse(cls, url: str, raw_file_id: str | None = None) -> ManifestLocation:
        """The manifest at ``url``; a URL ending in ``/`` is a key prefix, completed with ``raw_file_id``."""
        try:
            bucket, key = parse_s3_url(url)
        except S3UrlError as error:
            raise RestoreSourceError(f"--from-manifest: {error}") from None
        if key == "" or key.endswith("/"):
            if not raw_file_id:
                raise RestoreSourceError(
                    f"--from-manifest {url} is a key prefix: name the manifest object "
                    f"(...<raw_file_id>{manifest_mod.MANIFEST_SUFFIX}) or give the raw file id"
                )
            key = manifest_mod.manifest_key(key, raw_file_id)
        if not key.endswith(manifest_mod.MANIFEST_SUFFIX):
            raise RestoreSourceError(
                f"--from-manifest {url} does not name a manifest: its key must end in {manifest_mod.MANIFEST_SUFFIX}"
            )
        return cls(bucket, key)

    @property
    def url(self) -> str:
        return s3_url(self.bucket, self.key)

    @property
    def key_prefix(self) -> str:
        """The key prefix the manifest lies under (its set's objects are next to it)."""
        return self.key[: self.key.rfind("/") + 1]


@dataclass(frozen=True)
class PartSizeChoice:
    """How a restore chooses the part size its ETags are checked with.

    ``override`` (the command line's) beats every recorded part size; ``fallback`` (the settings') is used only when
    none is recorded; :data:`DEFAULT_PART_SIZE` last.
    """

    override: int | None = None
    fallback: int | None = None

    def choose(self, *recorded: int | None) -> int:
        """The first set of ``override``, ``recorded`` (most trusted first) and ``fallback``."""
        for candidate in (self.override, *recorded, self.fallback):
            if candidate:
                if not isinstance(candidate, int) or candidate <= 0:
                    raise RestoreSourceError(f"part size {candidate!r} is not a positive number of bytes")
                return candidate
        return DEFAULT_PART_SIZE


def _expected_files(
    raw_file_id: str,
    file_info: dict[str, Any],
    key_prefix: str,
    part_size: int,
    manifest_files: dict[str, Any],
) -> dict[str, ExpectedObject]:
    try:
        recorded = parse_file_info(file_info)
        validate_key_prefix(key_prefix)
        for entry in recorded.values():
            check_part_size(entry, part_size)
    except S3BackupError as error:
        raise RestoreSourceError(f"cannot restore raw file {raw_file_id!r}: {error}") from None
    files = {}
    for path, entry in recorded.items():
        extra = manifest_files.get(path) or {}
        if extra and (extra.get("size"), extra.get("md5"), extra.get("etag")) != (entry.size, entry.md5, entry.etag):
            log.warning(
                "the manifest of %s records %s differently from the database (size %s, MD5 %s): verifying "
                "against the database; run the verify command on this raw file",
                raw_file_id,
                path,
                extra.get("size"),
                extra.get("md5"),
            )
            extra = {}
        files[path] = ExpectedObject(
            path=path,
            key=object_key(key_prefix, path),
            size=entry.size,
            md5=entry.md5,
            etag=entry.etag,
            s3_etag=extra.get("s3_etag") or None,
            checksum_sha256=extra.get("checksum_sha256") or None,
        )
    return files


def plan_from_database(raw_file_id: str, client: S3Client, part_sizes: PartSizeChoice | None = None) -> RestorePlan:
    """The plan of raw file ``raw_file_id`` from its ``RawFile`` document (plus its manifest, if readable)."""
    try:
        raw_file = get_raw_file(raw_file_id)
    except RawFileNotFoundError:
        raise RestoreSourceError(
            f"no raw file {raw_file_id!r} in the database: raw file ids are acquisition names such as "
            "20261122_sample.d or 20261122_sample.raw (the Backups page of the Airflow UI lists them); "
            "without the database, restore from the set's manifest: --from-manifest "
            f"s3://<bucket>/<key_prefix>{raw_file_id}{manifest_mod.MANIFEST_SUFFIX}"
        ) from None
    except DatabaseError as error:
        raise RestoreSourceError(
            f"the database is unavailable ({error}); restore from the set's manifest instead: "
            f"--from-manifest s3://<bucket>/<key_prefix>{raw_file_id}{manifest_mod.MANIFEST_SUFFIX}"
        ) from None
    except Exception as error:  # pymongo's ServerSelectionTimeoutError and friends
        raise RestoreSourceError(database_unreachable(error, restore_id=raw_file_id)) from None
    if not raw_file.s3_backup_key:
        raise RestoreSourceError(
            f"raw file {raw_file_id!r} has no S3 backup (backup_status {raw_file.backup_status!r}, no "
            "s3_backup_key): only raw files with backup_status upload_done can be restored from S3"
        )
    if raw_file.backup_status != "upload_done":
        log.warning(
            "raw file %s has backup_status %r (not upload_done): restoring what its file_info records",
            raw_file_id,
            raw_file.backup_status,
        )
    try:
        bucket, key_prefix = parse_s3_url(raw_file.s3_backup_key)
    except S3UrlError as error:
        raise RestoreSourceError(f"raw file {raw_file_id!r} has an invalid s3_backup_key: {error}") from None
    manifest_key = manifest_mod.manifest_key(key_prefix, raw_file.id)
    manifest: dict[str, Any] = {}
    try:
        found = manifest_mod.read(client, bucket, manifest_key)
    except manifest_mod.ManifestUnreadableError as error:
        log.warning("%s: verifying against the database only", error)
        found = None
    if found is None:
        log.warning(
            "no manifest at %s: verifying against the database only (SSE-KMS objects cannot be checked "
            "against S3's SHA-256)",
            s3_url(bucket, manifest_key),
        )
    else:
        manifest = found[0]
    chosen = (part_sizes or PartSizeChoice()).choose(raw_file.etag_part_size, manifest.get("part_size"))
    files = _expected_files(
        raw_file.id, dict(raw_file.file_info or {}), key_prefix, chosen, manifest.get("files") or {}
    )
    return RestorePlan(raw_file.id, bucket, key_prefix, chosen, files, "database")


def plan_from_manifest(
    location: ManifestLocation,
    client: S3Client,
    *,
    raw_file_id: str | None = None,
    part_sizes: PartSizeChoice | None = None,
) -> RestorePlan:
    """The plan of the set whose manifest is at ``location`` (no database needed)."""
    try:
        found = manifest_mod.read(client, location.bucket, location.key)
    except manifest_mod.ManifestUnreadableError as error:
        raise RestoreSourceError(str(error)) from None
    if found is None:
        raise RestoreSourceError(
            f"there is no manifest at {location.url}: check the bucket and key "
            f"(s3://<bucket>/<key_prefix><raw_file_id>{manifest_mod.MANIFEST_SUFFIX}; the key prefix is the "
            "raw file's folder in the local backup, e.g. <instrument_id>/<YYYY_MM>/)"
        )
    manifest = found[0]
    manifest_id = manifest.get("raw_file_id")
    if not isinstance(manifest_id, str) or not manifest_id:
        raise RestoreSourceError(f"the manifest at {location.url} names no raw file id")
    if raw_file_id and raw_file_id != manifest_id:
        raise RestoreSourceError(
            f"the manifest at {location.url} is the one of raw file {manifest_id!r}, not {raw_file_id!r}: "
            "check the raw file id or the manifest URL"
        )
    if (manifest.get("bucket"), manifest.get("key_prefix")) != (location.bucket, location.key_prefix):
        log.warning(
            "the manifest was written for s3://%s/%s; restoring the objects next to it, under %s",
            manifest.get("bucket"),
            manifest.get("key_prefix"),
            s3_url(location.bucket, location.key_prefix),
        )
    files = manifest.get("files")
    if not isinstance(files, dict) or not files:
        raise RestoreSourceError(f"the manifest at {location.url} lists no files")
    try:
        file_info = {path: [entry["size"], entry["md5"], entry["etag"]] for path, entry in files.items()}
    except (KeyError, TypeError) as error:
        raise RestoreSourceError(f"the manifest at {location.url} has an incomplete file entry ({error})") from None
    chosen = (part_sizes or PartSizeChoice()).choose(manifest.get("part_size"))
    expected = _expected_files(manifest_id, file_info, location.key_prefix, chosen, files)
    return RestorePlan(manifest_id, location.bucket, location.key_prefix, chosen, expected, "manifest")


def restore_raw_file(
    raw_file_id: str | None,
    target_folder: Path,
    client: S3Client,
    *,
    manifest: ManifestLocation | str | None = None,
    use_database: bool = True,
    part_sizes: PartSizeChoice | None = None,
    max_concurrency: int = DEFAULT_MAX_CONCURRENCY,
    progress_interval: float = DEFAULT_PROGRESS_INTERVAL_SECONDS,
) -> RestoreResult:
    """Restore raw file ``raw_file_id`` (or the set of ``manifest``) from S3 into ``target_folder``, verified.

    The expected files come from the database unless ``manifest`` is given
    (an ``s3://`` URL of the manifest, or of its key prefix ending in ``/``)
    or ``use_database`` is false (then ``manifest`` is required); with both,
    ``raw_file_id`` must be the manifest's. ``part_sizes``: how the part size
    of the ETags is chosen (:class:`PartSizeChoice`; ``None``: as recorded). See the module docstring for the steps.

    Raises :class:`RestoreSourceError`, :class:`RestoreConflictError`,
    :class:`RestoreVerificationError` or an
    :class:`~rawvault.s3.errors.S3BackupError` (S3 failed or refused).
    """
    if manifest is not None:
        location = manifest if isinstance(manifest, ManifestLocation) else ManifestLocation.parse(manifest, raw_file_id)
        plan = plan_from_manifest(location, client, raw_file_id=raw_file_id, part_sizes=part_sizes)
    elif not use_database:
        raise RestoreSourceError(
            "without the database the restore needs the set's manifest: --from-manifest "
            f"s3://<bucket>/<key_prefix>{raw_file_id or '<raw_file_id>'}{manifest_mod.MANIFEST_SUFFIX}"
        )
    elif not raw_file_id:
        raise RestoreSourceError("name the raw file to restore (its raw file id)")
    else:
        plan = plan_from_database(raw_file_id, client, part_sizes)
    return restore_plan(
        plan, Path(target_folder), client, max_concurrency=max_concurrency, progress_interval=progress_interval
    )
