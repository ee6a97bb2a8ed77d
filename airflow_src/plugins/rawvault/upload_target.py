"""Where and how one raw file is uploaded to S3, worked out once per run: :class:`UploadTarget`.

The bucket is ``<bucket_prefix>-<normalised project id>`` (the fallback
project when the raw file has none; a project id that shares its bucket with
another project fails), the key prefix ``<backup_base_path>/`` mirrors the
local backup (:mod:`rawvault.s3.keys`), the part size is the one of the
recorded ETags (``etag_part_size`` is the truth; the XCom's must equal it) and
the source folder is ``<locations.backup>/<backup_base_path>`` unless
copy_raw_file pushed its own. The file info to upload is the recorded one,
which the XCom of ``compute_checksum`` (when given) must equal.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rawvault.locations import backup_base_path, backup_folder
from rawvault.s3.buckets import bucket_name, check_no_bucket_collisions
from rawvault.s3.errors import BucketNameError, FileInfoError, PartSizeMismatchError
from rawvault.s3.keys import key_prefix_for
from shared.db.interface import get_projects
from shared.db.models import RawFile
from shared.settings import Settings


@dataclass(frozen=True)
class XcomFileInfo:
    """What the handler's earlier tasks pushed to XCom: compute_checksum's file info and part size, copy's folder."""

    file_info: Mapping[str, Any] | None = None
    part_size: int | None = None
    backup_folder: Path | None = None

    @classmethod
    def from_pushed(cls, checksum: Mapping[str, Any], copy: Mapping[str, Any]) -> XcomFileInfo:
        """From the XComs of compute_checksum (``file_info``, ``part_size``) and copy_raw_file (``backup_folder``)."""
        folder = copy.get("backup_folder")
        return cls(checksum.get("file_info"), checksum.get("part_size"), Path(folder) if folder else None)


@dataclass(frozen=True)
class UploadTarget:
    """Where and how one raw file is uploaded: worked out once per run by :func:`upload_target`."""

    bucket: str
    key_prefix: str
    part_size: int
    source_folder: Path
    metadata: Mapping[str, str] = field(default_factory=dict)


def project_bucket(settings: Settings, project_id: str | None, known_project_ids: list[str]) -> str:
    """The bucket of ``project_id`` (or the fallback project), refusing names shared with another project."""
    s3 = settings.backup.s3
    assert s3 is not None
    project_id = project_id or settings.watcher.fallback_project_id
    name = bucket_name(s3.bucket_prefix, project_id)
    sharing = [project_id]
    for other in {*known_project_ids, settings.watcher.fallback_project_id} - {project_id}:
        try:
            if bucket_name(s3.bucket_prefix, other) == name:
                sharing.append(other)
        except BucketNameError:
            continue  # that project has problems of its own, reported when its raw files upload
    check_no_bucket_collisions(s3.bucket_prefix, sharing)
    return name


def _normalised(file_info: Mapping[str, Any]) -> dict[str, Any]:
    return {path: list(entry) if isinstance(entry, list | tuple) else entry for path, entry in file_info.items()}


def resolve_file_info(raw_file: RawFile, given: Mapping[str, Any] | None) -> dict[str, Any]:
    """The file info to upload: the recorded one, which the XCom's (when given) must equal."""
    recorded = _normalised(dict(raw_file.file_info or {}))
    if given is None:
        if not recorded:
            raise FileInfoError(f"raw file {raw_file.id!r} has no file_info: run compute_checksum first")
        return recorded
    normalised = _normalised(given)
    if recorded and normalised != recorded:
        raise FileInfoError(
            f"the file info passed to upload_to_s3 (XCom of compute_checksum) differs from the file_info recorded "
            f"for raw file {raw_file.id!r}: re-run compute_checksum and copy_raw_file for this raw file"
        )
    return normalised


def resolve_part_size(raw_file: RawFile, settings: Settings, given: int | None) -> int:
    """The part size of the recorded ETags (``etag_part_size``); the XCom's (when given) must equal it."""
    recorded = getattr(raw_file, "etag_part_size", None)
    chosen = given or recorded or settings.part_size_bytes
    if recorded and chosen != recorded:
        raise PartSizeMismatchError(
            f"raw file {raw_file.id!r} was checksummed with {recorded} byte parts, but the upload was asked to use "
            f"{chosen}: upload with the part size of compute_checksum"
        )
    return int(chosen)


def upload_target(raw_file: RawFile, settings: Settings, xcom: XcomFileInfo) -> UploadTarget:
    """The bucket, key prefix, part size, source folder and metadata of the raw file's upload."""
    part_size = resolve_part_size(raw_file, settings, xcom.part_size)
    key_prefix = key_prefix_for(backup_base_path(raw_file))
    bucket = project_bucket(settings, raw_file.project_id, [project.id for project in get_projects()])
    metadata = {
        "raw-file-id": raw_file.id,
        "instrument-id": raw_file.instrument_id,
        "project-id": raw_file.project_id or settings.watcher.fallback_project_id,
    }
    source_folder = Path(xcom.backup_folder) if xcom.backup_folder else backup_folder(raw_file, settings)
    return UploadTarget(bucket, key_prefix, part_size, source_folder, metadata)
