"""Upload one file of a set (a single PUT or a resumable multipart upload) and see it verified.

An object already at the key is accepted only when :func:`rawvault.s3.objects.check_object`
shows it holds the recorded file (on a store whose ETags prove nothing, after
reading it back: :func:`rawvault.s3.readback.check_or_read_back`), and is never
replaced; an object that existed before is never deleted. The object just
uploaded is verified by a HEAD (:mod:`rawvault.s3.upload_verify`: deleted
again if it does not hold the file and is certainly this upload's), or, for a
single PUT whose answer shows the recorded file in a set that allows it, by
the set's listing after its PUTs (:mod:`rawvault.s3.listed_check`).

With ``backup.s3.object_lock`` every object is written with its retention.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from rawvault.digests import multipart_parts
from rawvault.s3.body import ProgressCallback
from rawvault.s3.capabilities import StoreCapabilities, etag_shape_of
from rawvault.s3.client import S3Client
from rawvault.s3.errors import (
    ExistingObjectMismatchError,
    LocalFileChangedError,
    ObjectAppearedError,
    S3TransientError,
    UploadVanishedError,
)
from rawvault.s3.file_info import RecordedFile
from rawvault.s3.multipart import upload_multipart
from rawvault.s3.objects import ExpectedObject, VerdictKind, etag_of, head
from rawvault.s3.progress import format_bytes
from rawvault.s3.put import put_file
from rawvault.s3.readback import check_or_read_back
from rawvault.s3.set_write import AwaitingListing, MultipartHooks, SetWrite, UploadedObject
from rawvault.s3.upload_verify import shows_recorded_file, verify_upload

log = logging.getLogger(__name__)


def check_source(source: Path, entry: RecordedFile) -> None:
    """Raise :class:`LocalFileChangedError` unless the local copy of ``entry`` is a file of the recorded size."""
    try:
        size = source.stat().st_size
    except OSError as error:
        raise LocalFileChangedError(
            f"local backup copy {source} of {entry.path} cannot be read ({error.strerror}): run copy_raw_file again"
        ) from None
    if not source.is_file():
        raise LocalFileChangedError(f"local backup copy {source} of {entry.path} is not a file")
    if size != entry.size:
        raise LocalFileChangedError(
            f"local backup copy {source} has {size} bytes but {entry.size} were recorded when {entry.path} was "
            "checksummed: the file changed after checksumming; nothing of this raw file was uploaded"
        )


def accept_existing(
    client: S3Client,
    response: Mapping[str, Any],
    expected: ExpectedObject,
    bucket: str,
    source: Path,
    part_size: int,
    caps: StoreCapabilities | None = None,
) -> UploadedObject:
    """The object found at the key, if it holds ``expected``; else :class:`ExistingObjectMismatchError`."""
    verdict = check_or_read_back(
        client, bucket, response, expected, local_file=source, part_size=part_size, etag_shape=etag_shape_of(caps)
    )
    s3_etag = etag_of(response)
    if verdict.ok:
        assert verdict.how is not None
        log.info("%s: already in S3 with the recorded content (verified by %s), skipped", expected.path, verdict.how)
        return UploadedObject.of(expected, s3_etag, response.get("ChecksumSHA256"), verdict.how, uploaded=False)
    problem = f"size {response.get('ContentLength')}, ETag {s3_etag}"
    if verdict.kind in (VerdictKind.CHECKSUM_DIFFERS, VerdictKind.CONTENT_DIFFERS, VerdictKind.CANNOT_VERIFY):
        problem += f"; {verdict.problem}"
    raise ExistingObjectMismatchError(
        f"s3://{bucket}/{expected.key} already holds a different object ({problem}) than {expected.path} (size "
        f"{expected.size}, ETag {expected.etag}): rawvault never overwrites existing backup data, so nothing more of "
        "this raw file was uploaded; find out which copy is right and move or delete the object by hand if the "
        "local one is"
    )


def upload_file(
    client: S3Client,
    bucket: str,
    expected: ExpectedObject,
    source: Path,
    write: SetWrite,
    progress: ProgressCallback,
    hooks: MultipartHooks,
) -> UploadedObject | AwaitingListing:
    """Upload ``source`` to ``expected.key`` (it is not there yet) and verify what S3 then holds.

    With ``hooks.verify_by_listing``, a single PUT whose answer shows the
    recorded file is returned as :class:`AwaitingListing`: the set verifies
    it by its listing after the PUTs (:mod:`rawvault.s3.listed_check`).
    """
    part_size = write.part_size
    entry = RecordedFile(expected.path, expected.size, expected.md5, expected.etag)
    check_source(source, entry)  # again: it may have changed since the check phase
    part_count = multipart_parts(entry.size, part_size)
    log.info(
        "uploading %s (%s, %s) to s3://%s/%s",
        entry.path,
        format_bytes(entry.size),
        "one PUT" if part_count is None else f"{part_count} parts of {format_bytes(part_size)}",
        bucket,
        expected.key,
    )
    try:
        answer, sent, resumed = _send(client, bucket, expected.key, source, entry, write, progress, hooks)
    except (ObjectAppearedError, UploadVanishedError) as error:
        # Another run (a zombie of this one, a double trigger) may have stored the same file: accept it
        # only after the usual check of an existing object, never replace it.
        found = head(client, bucket, expected.key)
        if found is None:
            raise
        log.warning("%s: %s; checking the object now at the key", entry.path, error)
        try:
            with hooks.reading():
                return accept_existing(client, found, expected, bucket, source, part_size, hooks.caps)
        except ExistingObjectMismatchError:
            raise error from None
    if part_count is None and hooks.verify_by_listing and shows_recorded_file(answer, expected, hooks.caps):
        return AwaitingListing(expected, source, answer)
    return verify_upload(client, bucket, expected, source, write, hooks, (sent, resumed), answer)


def _send(
    client: S3Client,
    bucket: str,
    key: str,
    source: Path,
    entry: RecordedFile,
    write: SetWrite,
    progress: ProgressCallback,
    hooks: MultipartHooks,
) -> tuple[dict[str, Any], int, int]:
    """One PUT or a (resumed) multipart upload; return S3's answer (multipart: :func:`_complete_answer`), parts."""
    object_args = write.create_args(entry.md5)
    if multipart_parts(entry.size, write.part_size) is None:

        def put() -> dict[str, Any]:
            # Queued for a part slot, perhaps for a while: like a part, it starts only if the set has not
            # stopped (and put_file checks the claim right before the PUT).
            if hooks.stop is not None and hooks.stop.is_set():
                raise S3TransientError(
                    f"{entry.path} was not uploaded: the upload of its set stopped; the next run does"
                )
            return put_file(
                client, bucket, key, source, entry.size, object_args, progress, what=entry.path, caps=hooks.caps,
                guard=hooks.guard,
            )  # fmt: skip

        # In a part slot of the set, like any part.
        return (put() if hooks.part_pool is None else hooks.part_pool.submit(put).result()), 0, 0
    outcome = upload_multipart(
        client,
        bucket=bucket,
        key=key,
        source=source,
        size=entry.size,
        part_size=write.part_size,
        create_args=object_args,
        max_concurrency=write.settings.max_concurrency,
        progress=progress,
        known_upload_id=hooks.known.get(key),
        on_upload_id=hooks.on_upload_id,
        guard=hooks.guard,
        kms=write.settings.kms,
        caps=hooks.caps,
        part_pool=hooks.part_pool,
        stop=hooks.stop,
    )
    return _complete_answer(outcome.response, hooks.caps), outcome.parts_uploaded, outcome.parts_resumed


def _complete_answer(response: Mapping[str, Any], caps: StoreCapabilities | None) -> dict[str, Any]:
    """What of CompleteMultipartUpload's answer identifies the object: its version, and its ETag where HEAD agrees."""
    keep = ("VersionId", "ETag") if caps is None or caps.complete_etag_matches_head else ("VersionId",)
    return {name: response[name] for name in keep if response.get(name)}
