"""A Bruker-like set of many small files, uploaded with the capabilities the upload use case would find.

Shared by the tests of the set's listings (:mod:`rawvault.s3.listing`, :mod:`rawvault.s3.listed_check`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rawvault.s3.capabilities import StoreCapabilities
from rawvault.s3.capability_probe import probe_bucket
from rawvault.s3.upload import ObjectSettings, UploadResult, upload_file_set
from tests.s3_fixtures import KIB, PART, S3Backend, file_info_of, write_file

PREFIX = "tims1/2026_11/"
MANIFEST = PREFIX + "run.d.rawvault-manifest.json"


def write_small_set(folder: Path, files: int) -> dict[str, list]:
    """``files`` files ``run.d/small-NNN.bin`` of about 10 KiB under ``folder``; their file_info."""
    paths = [f"run.d/small-{n:03d}.bin" for n in range(files)]
    for seed, path in enumerate(paths):
        write_file(folder / path, 10 * KIB + seed, seed)
    return file_info_of(folder, paths)


def store_caps(backend: S3Backend, bucket: str) -> StoreCapabilities | None:
    """What the upload use case would find: moto is taken as AWS, rclone as its probe finds it."""
    return None if backend.name == "moto" else probe_bucket(backend.client(), bucket)


def upload_small_set(
    client: Any, bucket: str, folder: Path, info: dict[str, list], caps: Any, concurrency: int = 4, **settings: Any
) -> UploadResult:
    """:func:`upload_file_set` of ``info`` under :data:`PREFIX`, ``concurrency`` part slots, 5 MiB parts."""
    return upload_file_set(
        client, bucket=bucket, key_prefix=PREFIX, source_folder=folder, file_info=info, part_size=PART,
        raw_file_id="run.d", object_settings=ObjectSettings(max_concurrency=concurrency, **settings),
        capabilities=caps,
    )  # fmt: skip
