"""Resumable multipart uploads: rawvault's own CreateMultipartUpload / UploadPart / CompleteMultipartUpload.

boto3's managed transfer cannot resume: every call starts a new multipart
upload and any failure aborts it, so a 50 GB acquisition that fails after
49 GB starts over. :func:`upload_multipart` instead:

1. **Finds** the unfinished multipart uploads of exactly the key
   (``ListMultipartUploads`` with ``Prefix=key``, keeping only ``Key == key``).
   The upload id recorded on the raw file (``known_upload_id``) comes first,
   then the newest. The first one that is *resumable* is resumed: it was
   started with SHA-256 checksums (``ChecksumAlgorithm: SHA256``; a server
   that does not report the algorithm is trusted only for the recorded upload
   id) and every stored part (``ListParts``, paginated) has a part number and
   size of this upload's layout (parts of exactly ``part_size``, the last one
   shorter). Every other unfinished upload of the key (not resumable, e.g. of
   another part size, or a duplicate) is aborted.
2. **Verifies** each stored part against the local file, reading only that
   part: its size, its ETag against the part's MD5 (S3's part ETag; under
   SSE-KMS a part ETag is no MD5, then the SHA-256 alone decides) and its
   SHA-256 when S3 reports one. A part that does not match is uploaded again
   (S3 replaces a part uploaded under the same number).
3. **Uploads** the missing parts in a bounded thread pool
   (``max_concurrency``), each streamed from the file (never more than a read
   buffer in memory per thread) with a SHA-256 flexible checksum that S3
   validates before it stores the part.
4. **Completes** with every part's ETag and SHA-256 (S3 checks them against
   the stored parts) and ``If-None-Match: *``: S3 refuses to replace an
   object that appeared at the key meanwhile (:class:`ObjectAppearedError`).

Storage class, encryption and metadata are fixed when an upload is created;
a resumed upload keeps those of the run that created it (rawvault, for the
same raw file and key).

When the upload stops, its fate depends on why (:attr:`S3BackupError.resumable`):

- a transient S3/network failure, a lost claim (another run owns the raw
  file now) or an interruption (task timeout, SIGTERM: not an ``Exception``)
  **keeps** the unfinished upload, so the next run resumes it;
- any other error (the local file changed or cannot be read, access denied,
  S3 refused a request) **aborts** it: resuming could not help.

A SIGKILLed process cannot decide anything: its upload stays and the next
run resumes it.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping
from concurrent.futures import FIRST_EXCEPTION, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

from botocore.exceptions import ClientError

from rawvault.digests import CHECKSUM_ALGORITHM, PartPlan, digest_file, plan_parts
from rawvault.s3.errors import (
    ExistingObjectMismatchError,
    LocalFileChangedError,
    S3BackupError,
    S3TransientError,
    classify,
    error_code,
)
from rawvault.s3.progress import format_bytes

log = logging.getLogger(__name__)

CONFLICT_CODES = frozenset({"PreconditionFailed", "ConditionalRequestConflict", "412", "409"})
NO_SUCH_UPLOAD = "NoSuchUpload"

ProgressCallback = Callable[[int], None]
UploadIdCallback = Callable[[str, str | None], None]
Guard = Callable[[], None]


class ObjectAppearedError(ExistingObjectMismatchError):
    """S3 refused to complete an upload (If-None-Match): an object appeared at the key meanwhile."""


class UploadVanishedError(S3TransientError):
    """The multipart upload no longer exists (completed or aborted by another run, or by a lost response)."""


@dataclass(frozen=True)
class StoredPart:
    """A part S3 holds for an unfinished upload (``ListParts``)."""

    number: int
    etag: str
    size: int
    checksum_sha256: str | None


@dataclass(frozen=True)
class MultipartOutcome:
    """What :func:`upload_multipart` did."""

    upload_id: str
    response: dict[str, Any]
    parts: int
    parts_uploaded: int
    parts_resumed: int  # stored by an earlier run and verified against the local file

    @property
    def resumed(self) -> bool:
        """Whether an earlier run's unfinished upload was completed."""
        return self.parts_resumed > 0


class PartReader:
    """A read-only, seekable view of ``size`` bytes of a file from ``offset``: the body of one request.

    botocore reads it (for the checksum, then to send it) and seeks back to
    retry a request; every read and rewind is reported to ``progress`` (with a
    negative count for a rewind), like boto3's transfer callbacks.
    """

    def __init__(self, path: Path, offset: int, size: int, progress: ProgressCallback | None = None) -> None:
        self.path = path
        self._offset = offset
        self._size = size
        self._position = 0
        self._progress = progress
        self._handle = path.open("rb")

    def __len__(self) -> int:
        return self._size

    def __bool__(self) -> bool:  # an empty file is still a body
        return True

    def read(self, amount: int | None = -1) -> bytes:
        remaining = self._size - self._position
        if amount is None or amount < 0 or amount > remaining:
            amount = remaining
        if amount <= 0:
            return b""
        self._handle.seek(self._offset + self._position)
        data = self._handle.read(amount)
        if len(data) < amount:
            raise LocalFileChangedError(
                f"{self.path} ended after {self._offset + self._position + len(data)} bytes while "
                f"{self._offset + self._size} were expected: the file shrank during the upload"
            )
        self._position += len(data)
        if self._progress:
            self._progress(len(data))
        return data

    def seek(self, offset: int, whence: int = 0) -> int:
        base = {0: 0, 1: self._position, 2: self._size}[whence]
        target = min(max(base + offset, 0), self._size)
        if self._progress and target != self._position:
            self._progress(target - self._position)
        self._position = target
        return target

    def tell(self) -> int:
        return self._position

    def seekable(self) -> bool:
        return True

    def readable(self) -> bool:
        return True

    def close(self) -> None:
        self._handle.close()

    def __enter__(self) -> PartReader:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


def part_digests(path: Path, part: PartPlan) -> tuple[str, str]:
    """MD5 (hex) and SHA-256 (base64, S3's form) of one part of ``path``, reading only that part."""
    digests = digest_file(path, None, offset=part.offset, length=part.size, sha256=True)
    if digests.size != part.size:
        raise LocalFileChangedError(
            f"{path} ended before the end of part {part.number} (byte {part.offset + part.size}): the file shrank"
        )
    assert digests.sha256 is not None
    return digests.md5, digests.sha256


def unfinished_uploads(client: Any, bucket: str, key: str) -> list[dict[str, Any]]:
    """Every unfinished multipart upload of exactly ``key`` (the listing itself is by prefix)."""
    uploads = []
    for page in client.get_paginator("list_multipart_uploads").paginate(Bucket=bucket, Prefix=key):
        uploads.extend(upload for upload in page.get("Uploads", []) if upload.get("Key") == key)
    return uploads


def stored_parts(client: Any, bucket: str, key: str, upload_id: str) -> dict[int, StoredPart]:
    """The parts S3 holds for an unfinished upload, by part number (``ListParts``, every page)."""
    parts: dict[int, StoredPart] = {}
    for page in client.get_paginator("list_parts").paginate(Bucket=bucket, Key=key, UploadId=upload_id):
        for part in page.get("Parts", []):
            number = int(part["PartNumber"])
            parts[number] = StoredPart(number, str(part["ETag"]), int(part["Size"]), part.get("ChecksumSHA256"))
    return parts


def abort_upload(client: Any, bucket: str, key: str, upload_id: str) -> str:
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


def _layout_problem(parts: Mapping[int, StoredPart], plan: list[PartPlan]) -> str | None:
    for number, part in sorted(parts.items()):
        if number > len(plan):
            return f"it has part {number}, but the file has only {len(plan)} parts (another part size?)"
        if part.size != plan[number - 1].size:
            return (
                f"its part {number} has {part.size} bytes, not {plan[number - 1].size} "
                "(another part size or another file)"
            )
    return None


def _part_matches(stored: StoredPart, md5: str, sha256: str, kms: bool) -> bool:
    if stored.checksum_sha256 is not None and stored.checksum_sha256 != sha256:
        return False
    if stored.etag.strip('"') == md5:
        return True
    return kms and stored.checksum_sha256 is not None  # an SSE-KMS part ETag is no MD5: the SHA-256 decides


def upload_multipart(
    client: Any,
    *,
    bucket: str,
    key: str,
    source: Path,
    size: int,
    part_size: int,
    create_args: Mapping[str, Any],
    max_concurrency: int,
    progress: ProgressCallback | None = None,
    known_upload_id: str | None = None,
    on_upload_id: UploadIdCallback | None = None,
    guard: Guard | None = None,
    kms: bool = False,
) -> MultipartOutcome:
    """Upload ``source`` (``size`` bytes) to ``key`` as a multipart upload, resuming an unfinished one.

    ``create_args`` go to ``CreateMultipartUpload`` (storage class,
    encryption, metadata). ``on_upload_id(key, upload_id)`` is called when
    an upload is started or resumed, and ``on_upload_id(key, None)`` when it
    is completed or aborted (to record it on the raw file). ``guard()`` is
    called before every request that changes S3 and raises to stop the
    upload (e.g. the run lost its claim on the raw file). See the module
    docstring for resumption and failures. Raises an :class:`S3BackupError`.
    """
    target = f"s3://{bucket}/{key}"
    plan = plan_parts(size, part_size)
    check = guard or (lambda: None)
    record = on_upload_id or (lambda _key, _upload_id: None)
    upload_id, stored = _resume_or_start(client, bucket, key, plan, create_args, known_upload_id, record, check)
    state = _PartsState()
    try:
        _upload_parts(
            client, bucket, key, upload_id, source, plan, stored, state, max_concurrency, progress, check, kms
        )  # fmt: skip
        check()
        response = _complete(client, bucket, key, upload_id, state.completed_parts())
    except BaseException as error:
        stopped = _stopped(client, bucket, key, upload_id, error, len(state.completed), len(plan), record)
        if stopped is error:
            raise
        raise stopped from error
    record(key, None)
    log.info(
        "%s: multipart upload %s completed (%d parts: %d uploaded, %d resumed from an earlier run)",
        target,
        upload_id,
        len(plan),
        state.uploaded,
        state.resumed,
    )
    return MultipartOutcome(upload_id, response, len(plan), state.uploaded, state.resumed)


def _resume_or_start(
    client: Any,
    bucket: str,
    key: str,
    plan: list[PartPlan],
    create_args: Mapping[str, Any],
    known_upload_id: str | None,
    record: UploadIdCallback,
    check: Guard,
) -> tuple[str, dict[int, StoredPart]]:
    target = f"s3://{bucket}/{key}"
    try:
        candidates = unfinished_uploads(client, bucket, key)
    except Exception as error:
        failure = classify(error, f"listing the unfinished multipart uploads of {target}")
        if failure.resumable:
            raise failure from error
        log.warning("%s; resuming only the recorded upload %s, if any", failure, known_upload_id or "-")
        candidates = [{"UploadId": known_upload_id, "Key": key}] if known_upload_id else []
    # The recorded upload first, then the newest.
    candidates.sort(key=lambda upload: str(upload.get("Initiated", "")), reverse=True)
    candidates.sort(key=lambda upload: upload["UploadId"] != known_upload_id)
    chosen: tuple[str, dict[int, StoredPart]] | None = None
    for upload in candidates:
        upload_id = upload["UploadId"]
        if chosen is not None:
            reason = f"upload {chosen[0]} of the same key is resumed instead"
        else:
            algorithm = upload.get("ChecksumAlgorithm")
            if algorithm not in (CHECKSUM_ALGORITHM, None) or (algorithm is None and upload_id != known_upload_id):
                reason = f"it was not started with {CHECKSUM_ALGORITHM} checksums (ChecksumAlgorithm {algorithm})"
            else:
                try:
                    parts = stored_parts(client, bucket, key, upload_id)
                except ClientError as error:
                    if error_code(error) == NO_SUCH_UPLOAD:
                        continue  # gone meanwhile
                    raise classify(error, f"listing the parts of multipart upload {upload_id} of {target}") from error
                except Exception as error:
                    raise classify(error, f"listing the parts of multipart upload {upload_id} of {target}") from error
                reason = _layout_problem(parts, plan)
                if reason is None:
                    chosen = (upload_id, parts)
                    continue
        log.info("aborting unfinished multipart upload %s of %s: %s", upload_id, target, reason)
        check()
        abort_upload(client, bucket, key, upload_id)
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
        response = client.create_multipart_upload(
            Bucket=bucket, Key=key, ChecksumAlgorithm=CHECKSUM_ALGORITHM, **create_args
        )
    except Exception as error:
        raise classify(error, f"starting the multipart upload of {target}") from error
    upload_id = response["UploadId"]
    log.info("%s: started multipart upload %s (%d parts)", target, upload_id, len(plan))
    record(key, upload_id)
    return upload_id, {}


class _PartsState:
    """Completed parts, shared by the upload threads."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.completed: dict[int, dict[str, str | int]] = {}
        self.uploaded = 0
        self.resumed = 0

    def done(self, number: int, etag: str, checksum: str | None, *, resumed: bool) -> None:
        part: dict[str, str | int] = {"PartNumber": number, "ETag": etag}
        if checksum:
            part["ChecksumSHA256"] = checksum
        with self.lock:
            self.completed[number] = part
            if resumed:
                self.resumed += 1
            else:
                self.uploaded += 1

    def completed_parts(self) -> list[dict[str, str | int]]:
        return [self.completed[number] for number in sorted(self.completed)]


def _upload_parts(
    client: Any,
    bucket: str,
    key: str,
    upload_id: str,
    source: Path,
    plan: list[PartPlan],
    stored: Mapping[int, StoredPart],
    state: _PartsState,
    max_concurrency: int,
    progress: ProgressCallback | None,
    check: Guard,
    kms: bool,
) -> None:
    target = f"s3://{bucket}/{key}"

    def one_part(part: PartPlan) -> None:
        if state.stop.is_set():
            return
        existing = stored.get(part.number)
        if existing is not None:
            md5, sha256 = part_digests(source, part)
            if _part_matches(existing, md5, sha256, kms):
                state.done(part.number, existing.etag, sha256, resumed=True)
                if progress:
                    progress(part.size)
                return
            log.warning(
                "%s: stored part %d of upload %s does not match the local file (ETag %s, MD5 %s): uploading it again",
                target,
                part.number,
                upload_id,
                existing.etag,
                md5,
            )
        if state.stop.is_set():
            return
        check()
        with PartReader(source, part.offset, part.size, progress) as body:
            response = client.upload_part(
                Bucket=bucket,
                Key=key,
                UploadId=upload_id,
                PartNumber=part.number,
                Body=body,
                ContentLength=part.size,
                ChecksumAlgorithm=CHECKSUM_ALGORITHM,
            )
        state.done(part.number, response["ETag"], response.get("ChecksumSHA256"), resumed=False)

    pool = ThreadPoolExecutor(max_workers=max(1, min(max_concurrency, len(plan))), thread_name_prefix="rawvault-part")
    futures: list[Future[None]] = [pool.submit(one_part, part) for part in plan]
    try:
        done, _pending = wait(futures, return_when=FIRST_EXCEPTION)
    except BaseException:
        # Interrupted (task timeout, SIGTERM): stop starting parts and leave at once.
        state.stop.set()
        pool.shutdown(wait=False, cancel_futures=True)
        raise
    errors = [future.exception() for future in futures if future in done and future.exception() is not None]
    if errors:
        state.stop.set()
    pool.shutdown(wait=True, cancel_futures=True)  # parts in flight finish (they are complete or fail)
    if errors:
        error = errors[0]
        assert error is not None
        raise error
    missing = [part.number for part in plan if part.number not in state.completed]
    if missing:  # cannot happen unless a part was skipped after a stop
        raise S3TransientError(f"parts {missing[:10]} of {target} were not uploaded; the next run resumes them")


def _complete(client: Any, bucket: str, key: str, upload_id: str, parts: list[dict[str, Any]]) -> dict[str, Any]:
    target = f"s3://{bucket}/{key}"
    try:
        return client.complete_multipart_upload(
            Bucket=bucket, Key=key, UploadId=upload_id, MultipartUpload={"Parts": parts}, IfNoneMatch="*"
        )
    except ClientError as error:
        code = error_code(error)
        if code in CONFLICT_CODES:
            note = abort_upload(client, bucket, key, upload_id)  # useless now: the key is taken
            raise ObjectAppearedError(
                f"another object appeared at {target} during the upload; S3 refused to replace it (rawvault never "
                f"overwrites backup data){'; ' + note if note else ''}"
            ) from error
        if code == NO_SUCH_UPLOAD:
            raise UploadVanishedError(
                f"multipart upload {upload_id} of {target} no longer exists when completing it (completed by "
                "another run, or its completion answer was lost); the next run checks the key"
            ) from error
        raise


def _stopped(
    client: Any,
    bucket: str,
    key: str,
    upload_id: str,
    error: BaseException,
    stored: int,
    total: int,
    record: UploadIdCallback,
) -> BaseException:
    """The error to raise when the upload stopped: keep a resumable upload, abort any other."""
    target = f"s3://{bucket}/{key}"
    if isinstance(error, ObjectAppearedError | UploadVanishedError):
        return error  # the upload is gone already
    if isinstance(error, ClientError) and error_code(error) == NO_SUCH_UPLOAD:
        return UploadVanishedError(
            f"multipart upload {upload_id} of {target} disappeared during the upload (aborted by another run?); "
            "the next run starts over"
        )
    kept = (
        f"multipart upload {upload_id} of {target} is kept with {stored} of {total} parts stored: "
        "the next run resumes it"
    )
    if not isinstance(error, Exception):  # interrupted (task timeout, SIGTERM, Ctrl-C)
        log.warning("%s: interrupted (%s); %s", target, type(error).__name__, kept)
        return error
    failure = classify(error, f"uploading to {target}")
    if failure.resumable:
        log.warning("%s: %s; %s", target, failure, kept)
        return _with_note(failure, kept)
    note = abort_upload(client, bucket, key, upload_id)
    if not note:
        record(key, None)
    return _with_note(failure, note or f"multipart upload {upload_id} was aborted")


def _with_note(error: S3BackupError, note: str) -> S3BackupError:
    text = str(error)
    if note in text:
        return error
    try:
        return type(error)(f"{text}; {note}")
    except TypeError:  # an error type with another constructor: keep it as it is
        return error
