"""One upload, as a process of its own, for bench_upload.py: rawvault's uploader or boto3's upload_file.

    python bench/upload_client.py rawvault|boto3 --endpoint URL --bucket B --prefix P --root DIR \\
        --file-info FILE.json --part-size BYTES --concurrency N

``FILE.json`` maps each path under ``--root`` to its recorded ``[size, md5, etag]`` (what
compute_checksum records; rawvault's uploader verifies every object against it). The
credentials are the local S3 server's dummy ones. Prints nothing on success.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from _common import MIB, use_repository_imports

use_repository_imports()

import boto3  # noqa: E402
from boto3.s3.transfer import TransferConfig  # noqa: E402

from devtools.servers import LOCAL_S3_KEY, LOCAL_S3_REGION  # noqa: E402


def _client(endpoint: str, pool: int) -> object:
    from rawvault.s3.client import client_config

    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        aws_access_key_id=LOCAL_S3_KEY,
        aws_secret_access_key=LOCAL_S3_KEY,
        region_name=LOCAL_S3_REGION,
        config=client_config(pool),
    )


def upload_with_rawvault(args: argparse.Namespace, file_info: dict[str, list]) -> None:
    """rawvault.s3.upload.upload_file_set: check, upload, verify every object, write the manifest."""
    from rawvault.s3.parallel import connections_needed
    from rawvault.s3.put import ObjectSettings
    from rawvault.s3.upload import upload_file_set

    upload_file_set(
        _client(args.endpoint, connections_needed(args.concurrency)),  # type: ignore[arg-type]
        bucket=args.bucket,
        key_prefix=args.prefix,
        source_folder=args.root,
        file_info=file_info,
        part_size=args.part_size,
        raw_file_id="bench",
        object_settings=ObjectSettings(max_concurrency=args.concurrency),
        progress_interval=3600,
    )


def upload_with_boto3(args: argparse.Namespace, file_info: dict[str, list]) -> None:
    """boto3's managed transfer, one ``upload_file`` per file, multipart above the part size."""
    client = boto3.client(
        "s3",
        endpoint_url=args.endpoint,
        aws_access_key_id=LOCAL_S3_KEY,
        aws_secret_access_key=LOCAL_S3_KEY,
        region_name=LOCAL_S3_REGION,
    )
    transfer = TransferConfig(
        multipart_threshold=args.part_size + 1, multipart_chunksize=args.part_size, max_concurrency=args.concurrency
    )
    for path in file_info:
        client.upload_file(str(args.root / path), args.bucket, f"{args.prefix}{path}", Config=transfer)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("client", choices=["rawvault", "boto3"])
    parser.add_argument("--endpoint", required=True)
    parser.add_argument("--bucket", required=True)
    parser.add_argument("--prefix", required=True)
    parser.add_argument("--root", type=Path, required=True)
    parser.add_argument("--file-info", type=Path, required=True)
    parser.add_argument("--part-size", type=int, default=64 * MIB)
    parser.add_argument("--concurrency", type=int, default=8)
    args = parser.parse_args()
    file_info = json.loads(args.file_info.read_text())
    {"rawvault": upload_with_rawvault, "boto3": upload_with_boto3}[args.client](args, file_info)
    return 0


if __name__ == "__main__":
    sys.exit(main())
