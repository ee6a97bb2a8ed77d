"""Which unfinished multipart upload of a key to resume, and whether its stored parts hold the local file.

The step before :func:`rawvault.s3.multipart.upload_multipart` sends
anything: list the unfinished uploads of exactly the key (the upload id
recorded on the raw file first, then the newest), resume the first one that
was started with SHA-256 checksums and whose stored parts fit this upload's
part layout, abort every other one, or start a new upload. A stored part is
kept only when its ETag (or, under SSE-KMS, its SHA-256) matches the local
file's part (see :mod:`rawvault.s3.multipart` for the whole procedure).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from botocore.exceptions import ClientError

from rawvault.digests import CHECKSUM_ALGORITHM, PartPlan, digest_file
from rawvault.s3.client import S3Client
from rawvault.s3.errors import NO_SUCH_UPLOAD, LocalFileChangedError, classify, error_code
from rawvault.s3.progress import format_bytes

log = logging.getLogger(__name__)

UploadIdCallback = Callable[[str, str | None], None]
Guard = Callable[[], None]


@dataclass(frozen=True)
class StoredPart:
    """A part S3 holds for an unfinished upload (``ListParts``)."""

    number: int
    etag: str
    size: int
    checksum_sha256: str | None


def part_digests(path: Path, part: PartPlan) -> tuple[str, str]:
    """MD5 (hex) and SHA-256 (base64, S3's form) of one part of ``path``, reading only that part."""
    digests = digest_file(path, None, offset=part.offset, length=part.size, sha256=True)
    if digests.size != part.size:
        raise LocalFileChangedError(
            f"{path} ended before the end of part {part.number} (byte {part.offset + part.size}): the file shrank"
        )
    assert digests.sha256 is not None
    return digests.md5, digests.sha256


def unfinished_uploads(client: S3Client, bucket: str, key: str) -> list[dict[str, Any]]:
    """Every unfinished multipart upload of exactly ``key`` (the listing itself is by prefix).

    ``rclone serve s3`` answers ``NoSuchUpload`` when the bucket has no
    unfinished upload at all (after a restart, or 24 idle hours, it has
    forgotten them): that is an empty list.
    """
    uploads: list[dict[str, Any]] = []
    try:
        for page in client.get_paginator("list_multipart_uploads").paginate(Bucket=bucket, Prefix=key):
            uploads.extend(upload for upload in page.get("Uploads", []) if upload.get("Key") == key)
    except ClientError as error:
        if error_code(error) != NO_SUCH_UPLOAD or uploads:
            raise
    return uploads


def stored_parts(client: S3Client, bucket: str, key: str, upload_id: str) -> dict[int, StoredPart]:
    """The parts S3 holds for an unfinished upload, by part number (``ListParts``, every page)."""
    parts: dict[int, StoredPart] = {}
    for page in client.get_paginator("list_parts").paginate(Bucket=bucket, Key=key, UploadId=upload_id):
        for part in page.get("Parts", []):
            number = int(part["PartNumber"])
            parts[number] = StoredPart(number, str(part["ETag"]), int(part["Size"]), part.get("ChecksumSHA256"))
    return parts


def abort_upload(client: S3Client, bucket: str, key: str, upload_id: str) -> str:
    """Abort one multipart upload; return a note for messages (empty when it is gone)."""
    try:
        client.abort_multipart_upload(Bucket=bucket, Key=key, UploadId=upload_id)
    except ClientError as error:
        if error_code(error) == NO_SUCH_UPLOAD:  # aborted or completed meanwhile: gone either way
            return ""
        why = error_code(error)
    except Exception as error:
        why = type(error).__name__
    else:
        log.info("aborted multipart upload %s of s3://%s/%s", upload_id, bucket, key)
        return ""
    log.warning("could not abort multipart upload %s of s3://%s/%s: %s", upload_id, bucket, key, why)
    return f"multipart upload {upload_id} could not be aborted ({why}); the next run aborts or resumes it"


def layout_problem(parts: Mapping[int, StoredPart], plan: list[PartPlan]) -> str | None:
    """Why stored ``parts`` cannot belong to an upload of ``plan`` (another part size or file), or None."""
    for number, part in sorted(parts.items()):
        if number > len(plan):
            return f"it has part {number}, but the file has only {len(plan)} parts (another part size?)"
        if part.size != plan[number - 1].size:
            return (
                f"its part {number} has {part.size} bytes, not {plan[number - 1].size} "
                "(another part size or another file)"
            )
    return None


def part_matches(stored: StoredPart, md5: str, sha256: str, kms: bool) -> bool:
    """Whether a stored part holds the local part with this MD5 (hex) and SHA-256 (base64)."""
    if stored.checksum_sha256 is not None and stored.checksum_sha256 != sha256:
        return False
    if stored.etag.strip('"') == md5:
        return True
    return kms and stored.checksum_sha256 is not None  # an SSE-KMS part ETag is no MD5: the SHA-256 decides


def resume_or_start(
    client: S3Client,
    bucket: str,
    key: str,
    plan: list[PartPlan],
    create_args: Mapping[str, Any],
    known_upload_id: str | None,
    record: UploadIdCallback,
    check: Guard,
    checksum: Mapping[str, Any] | None = None,
) -> tuple[str, dict[int, StoredPart]]:
    """The upload id to send parts to and the parts it holds already (``{}`` for a new upload).

    ``checksum`` is the ``ChecksumAlgorithm`` argument of the store (``None``:
    SHA-256, as on AWS; empty: a store without flexible checksums); an upload
    is resumed only when it was started with the same one.
    """
    target = f"s3://{bucket}/{key}"
    checksum = {"ChecksumAlgorithm": CHECKSUM_ALGORITHM} if checksum is None else checksum
    algorithm = checksum.get("ChecksumAlgorithm")
    chosen = _choose_resumable(client, bucket, key, plan, known_upload_id, check, algorithm)
    if chosen is not None:
        upload_id, parts = chosen
        log.info(
            "%s: resuming multipart upload %s: %d of %d parts stored by an earlier run (%s), verifying them",
            target,
            upload_id,
            len(parts),
            len(plan),
            format_bytes(sum(part.size for part in parts.values())),
        )
        record(key, upload_id)
        return upload_id, parts
    check()
    try:
        response = client.create_multipart_upload(Bucket=bucket, Key=key, **checksum, **create_args)
    except Exception as error:
        raise classify(error, f"starting the multipart upload of {target}", bucket=bucket, key=key) from error
    upload_id = response["UploadId"]
    log.info("%s: started multipart upload %s (%d parts)", target, upload_id, len(plan))
    record(key, upload_id)
    return upload_id, {}


def _candidates(client: S3Client, bucket: str, key: str, known_upload_id: str | None) -> list[dict[str, Any]]:
    """The unfinished uploads of ``key``: the recorded one first, then the newest."""
    try:
        candidates = unfinished_uploads(client, bucket, key)
    except Exception as error:
        failure = classify(
            error, f"listing the unfinished multipart uploads of s3://{bucket}/{key}", bucket=bucket, key=key
        )
        if failure.resumable:
            raise failure from error
        log.warning("%s; resuming only the recorded upload %s, if any", failure, known_upload_id or "-")
        candidates = [{"UploadId": known_upload_id, "Key": key}] if known_upload_id else []
    candidates.sort(key=lambda upload: str(upload.get("Initiated", "")), reverse=True)
    candidates.sort(key=lambda upload: upload["UploadId"] != known_upload_id)
    return candidates


def _choose_resumable(
    client: S3Client,
    bucket: str,
    key: str,
    plan: list[PartPlan],
    known_upload_id: str | None,
    check: Guard,
    wanted_algorithm: str | None,
) -> tuple[str, dict[int, StoredPart]] | None:
    """The first resumable upload of ``key`` and its stored parts; every other unfinished upload is aborted."""
    target = f"s3://{bucket}/{key}"
    chosen: tuple[str, dict[int, StoredPart]] | None = None
    for upload in _candidates(client, bucket, key, known_upload_id):
        upload_id = upload["UploadId"]
        reason: str | None
        if chosen is not None:
            reason = f"upload {chosen[0]} of the same key is resumed instead"
        else:
            algorithm = upload.get("ChecksumAlgorithm")
            if algorithm not in (wanted_algorithm, None) or (algorithm is None and upload_id != known_upload_id):
                reason = f"it was not started with {wanted_algorithm} checksums (ChecksumAlgorithm {algorithm})"
            else:
                try:
                    parts = stored_parts(client, bucket, key, upload_id)
                except ClientError as error:
                    if error_code(error) == NO_SUCH_UPLOAD:
                        continue  # gone meanwhile
                    raise classify(
                        error, f"listing the parts of multipart upload {upload_id} of {target}", bucket=bucket, key=key
                    ) from error
                except Exception as error:
                    raise classify(
                        error, f"listing the parts of multipart upload {upload_id} of {target}", bucket=bucket, key=key
                    ) from error
                reason = layout_problem(parts, plan)
                if reason is None:
                    chosen = (upload_id, parts)
                    continue
        log.info("aborting unfinished multipart upload %s of %s: %s", upload_id, target, reason)
        check()
        abort_upload(client, bucket, key, upload_id)
    return chosen
