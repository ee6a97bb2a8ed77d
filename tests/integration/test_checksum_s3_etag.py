"""The ETag checksum_file predicts is the ETag a real S3 API (moto's server) reports after a boto3 upload."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from boto3.s3.transfer import TransferConfig

from devtools.servers import S3Server, local_s3_client
from rawvault.checksum import MIB, checksum_file, uses_multipart

PART_SIZE = 5 * MIB  # S3's smallest part size
BUCKET = "rv-checksum-test"


@pytest.fixture(scope="module")
def s3_client() -> Iterator[object]:
    with S3Server() as server:
        client = local_s3_client(server.endpoint_url)
        client.create_bucket(Bucket=BUCKET)
        yield client


@pytest.mark.parametrize(
    "size",
    [
        pytest.param(0, id="empty"),
        pytest.param(1234, id="small-single-put"),
        pytest.param(PART_SIZE, id="exactly-one-part-single-put"),
        pytest.param(PART_SIZE + 1, id="one-part-plus-one-byte-multipart"),
        pytest.param(12 * MIB + 345, id="12MiB-multipart"),
    ],
)
def test_predicted_etag_matches_the_uploaded_object(s3_client: object, tmp_path: Path, size: int) -> None:
    path = tmp_path / "upload.raw"
    path.write_bytes(os.urandom(size))
    predicted = checksum_file(path, PART_SIZE, chunk_size=MIB + 7)

    # The uploader's rule: single PUT up to part_size, multipart above it.
    # boto3 uses multipart when size >= multipart_threshold, hence part_size + 1.
    config = TransferConfig(multipart_threshold=PART_SIZE + 1, multipart_chunksize=PART_SIZE)
    key = f"raw/{size}.raw"
    s3_client.upload_file(str(path), BUCKET, key, Config=config)  # type: ignore[attr-defined]

    head = s3_client.head_object(Bucket=BUCKET, Key=key)  # type: ignore[attr-defined]
    reported = head["ETag"].strip('"')
    assert head["ContentLength"] == predicted.size == size
    assert reported == predicted.etag
    assert ("-" in reported) is uses_multipart(size, PART_SIZE)
