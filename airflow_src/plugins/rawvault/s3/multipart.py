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
   (``max_concurrency``; the set's shared pool of part slots when the files
   of a set are uploaded side by side, see :mod:`rawvault.s3.upload`), at
   most ``max_concurrency`` parts of the file queued at a time, each streamed
   from the file (never more than a read buffer in memory per thread) with a
   SHA-256 flexible checksum that S3 validates before it stores the part.
4. **Completes** with every part's ETag and SHA-256 (S3 checks them against
   the stored parts) and ``If-None-Match: *``: S3 refuses to replace an
   object that appeared at the key meanwhile (:class:`ObjectAppearedError`).

On a store without SHA-256 checksums (``caps``, its probed
:class:`~rawvault.s3.capabilities.StoreCapabilities`) none are sent, and a
stored part is judged by its ETag (the part's MD5). On a store that does not
enforce ``If-None-Match`` on CompleteMultipartUpload the header is left out
where the store rejects it, and the key is checked (HEAD, under the guard)
right before completing: an object found there ends the upload like S3's
refusal would (:class:`ObjectAppearedError`, the upload aborted).
A store that forgot the upload (``rclone serve s3`` after a restart or 24 idle
hours) lists none: the next run starts a new one.

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
from collections import deque
from collections.abc import Mapping
from concurrent.futures import FIRST_COMPLETED, Executor, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from botocore.exceptions import ClientError

from rawvault.digests import PartPlan, plan_parts
from rawvault.s3.body import PartReader, ProgressCallback
from rawvault.s3.capabilities import StoreCapabilities, checksum_args, complete_condition_args
from rawvault.s3.client import S3Client
from rawvault.s3.errors import (
    NO_SUCH_UPLOAD,
    ObjectAppearedError,
    S3BackupError,
    S3TransientError,
    UploadVanishedError,
    classify,
    error_code,
    is_conflict,
)
from rawvault.s3.multipart_resume import (
    Guard,
    StoredPart,
    UploadIdCallback,
    abort_upload,
    part_digests,
    part_matches,
    resume_or_start,
)
from rawvault.s3.put import check_key_free

if TYPE_CHECKING:
    from mypy_boto3_s3.type_defs import CompletedPartTypeDef

log = logging.getLogger(__name__)


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


def upload_multipart(
    client: S3Client,
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
    caps: StoreCapabilities | None = None,
    part_pool: Executor | None = None,
    stop: threading.Event | None = None,
) -> MultipartOutcome:
    """Upload ``source`` (``size`` bytes) to ``key`` as a multipart upload, resuming an unfinished one.

    ``create_args`` go to ``CreateMultipartUpload`` (storage class,
    encryption, metadata). ``on_upload_id(key, upload_id)`` is called when
    an upload is started or resumed, and ``on_upload_id(key, None)`` when it
    is completed or aborted (to record it on the raw file). ``guard()`` is
    called before every request that changes S3 and raises to stop the
    upload (e.g. the run lost its claim on the raw file). ``caps`` is what the store can do (``None``: AWS).
    ``part_pool`` runs the part requests (default: ``max_concurrency`` threads of this upload's own); ``stop``,
    set on the first failure, stops starting parts (shared by the files of a set, which keep their uploads to
    resume). See the module docstring for resumption and failures. Raises an :class:`S3BackupError`.
    """
    target = f"s3://{bucket}/{key}"
    plan = plan_parts(size, part_size)
    check = guard or (lambda: None)
    record = on_upload_id or (lambda _key, _upload_id: None)
    checksum = checksum_args(caps)
    upload_id, stored = resume_or_start(
        client, bucket, key, plan, create_args, known_upload_id, record, check, checksum
    )
    state = _PartsState(stop)
    sender = _PartSender(client, bucket, key, upload_id, source, stored, state, progress, check, kms, checksum)
    try:
        _upload_parts(sender, plan, max_concurrency, part_pool)
        check()
        condition = complete_condition_args(caps)
        if not condition:
            _check_key_free_before_completing(client, bucket, key, upload_id, check)
        response = _complete(client, bucket, key, upload_id, state.completed_parts(), condition)
    except BaseException as error:
        stopped = _stopped(client, bucket, key, upload_id, error, len(state.completed), len(plan), record)
        if stopped is error:
            raise
        raise stopped from error
    record(key, None)
    log.info(
        "%s: multipart upload %s completed (%d parts: %d uploaded, %d resumed from an earlier run)",
        target, upload_id, len(plan), state.uploaded, state.resumed,
    )  # fmt: skip
    return MultipartOutcome(upload_id, response, len(plan), state.uploaded, state.resumed)


class _PartsState:
    """Completed parts, shared by the upload threads."""

    def __init__(self, stop: threading.Event | None = None) -> None:
        self.lock = threading.Lock()
        self.stop = stop or threading.Event()
        self.completed: dict[int, CompletedPartTypeDef] = {}
        self.uploaded = 0
        self.resumed = 0

    def done(self, number: int, etag: str, checksum: str | None, *, resumed: bool) -> None:
        part: CompletedPartTypeDef = {"PartNumber": number, "ETag": etag}
        if checksum:
            part["ChecksumSHA256"] = checksum
        with self.lock:
            self.completed[number] = part
            if resumed:
                self.resumed += 1
            else:
                self.uploaded += 1

    def completed_parts(self) -> list[CompletedPartTypeDef]:
        return [self.completed[number] for number in sorted(self.completed)]


@dataclass
class _PartSender:
    """Sends the parts of one upload (from the pool's threads): keeps a verified stored part, uploads the others."""

    client: S3Client
    bucket: str
    key: str
    upload_id: str
    source: Path
    stored: Mapping[int, StoredPart]
    state: _PartsState
    progress: ProgressCallback | None
    check: Guard
    kms: bool
    checksum: Mapping[str, Any]  # ChecksumAlgorithm of every part (empty: a store without flexible checksums)

    def send(self, part: PartPlan) -> None:
        if self.state.stop.is_set():
            return
        existing = self.stored.get(part.number)
        if existing is not None:
            md5, sha256 = part_digests(self.source, part)
            if part_matches(existing, md5, sha256, self.kms):
                self.state.done(part.number, existing.etag, sha256 if self.checksum else None, resumed=True)
                if self.progress:
                    self.progress(part.size)
                return
            log.warning(
                "s3://%s/%s: stored part %d of upload %s does not match the local file (ETag %s, MD5 %s): "
                "uploading it again",
                self.bucket,
                self.key,
                part.number,
                self.upload_id,
                existing.etag,
                md5,
            )
        if self.state.stop.is_set():
            return
        self.check()
        with PartReader(self.source, part.offset, part.size, self.progress) as body:
            response = self.client.upload_part(
                Bucket=self.bucket,
                Key=self.key,
                UploadId=self.upload_id,
                PartNumber=part.number,
                Body=body,
                ContentLength=part.size,
                **self.checksum,
            )
        self.state.done(part.number, response["ETag"], response.get("ChecksumSHA256"), resumed=False)


def _upload_parts(
    sender: _PartSender, plan: list[PartPlan], max_concurrency: int, part_pool: Executor | None = None
) -> None:
    """Every part of ``plan`` through ``part_pool`` (or a pool of its own), at most ``max_concurrency`` queued.

    The first failure stops the parts not yet started (and, through the shared
    stop event, the other files of the set) and is raised once the parts in
    flight are done.
    """
    state = sender.state
    window = max(1, min(max_concurrency, len(plan)))
    pool = part_pool or ThreadPoolExecutor(max_workers=window, thread_name_prefix="rawvault-part")
    waiting: deque[PartPlan] = deque(plan)
    running: set[Future[None]] = set()
    first_error: BaseException | None = None
    try:
        while waiting or running:
            while waiting and len(running) < window and not state.stop.is_set():
                running.add(pool.submit(sender.send, waiting.popleft()))
            if not running:
                break
            done, running = wait(running, return_when=FIRST_COMPLETED)
            for future in done:
                error = None if future.cancelled() else future.exception()
                if error is not None and first_error is None:
                    first_error = error
                    state.stop.set()
    except BaseException:
        # Interrupted (task timeout, SIGTERM): stop starting parts and leave at once.
        state.stop.set()
        for future in running:
            future.cancel()
        if part_pool is None:
            pool.shutdown(wait=False, cancel_futures=True)
        raise
    if part_pool is None:
        pool.shutdown(wait=True)
    if first_error is not None:
        raise first_error
    missing = [part.number for part in plan if part.number not in state.completed]
    if missing:  # the set stopped (another file failed) before these parts started
        raise S3TransientError(
            f"parts {missing[:10]} of s3://{sender.bucket}/{sender.key} were not uploaded (the upload stopped); "
            "the next run resumes them"
        )


def _check_key_free_before_completing(client: S3Client, bucket: str, key: str, upload_id: str, check: Guard) -> None:
    """A store that ignores If-None-Match on completion: HEAD the key first; an object there ends the upload."""
    try:
        check_key_free(client, bucket, key, check, what=f"multipart upload {upload_id}")
    except ObjectAppearedError as error:
        note = abort_upload(client, bucket, key, upload_id)  # useless now: the key is taken
        raise ObjectAppearedError(f"{error}{'; ' + note if note else ''}") from error


def _complete(
    client: S3Client,
    bucket: str,
    key: str,
    upload_id: str,
    parts: list[CompletedPartTypeDef],
    condition: Mapping[str, Any],
) -> dict[str, Any]:
    target = f"s3://{bucket}/{key}"
    try:
        return dict(
            client.complete_multipart_upload(
                Bucket=bucket, Key=key, UploadId=upload_id, MultipartUpload={"Parts": parts}, **condition
            )
        )
    except ClientError as error:
        code = error_code(error)
        if is_conflict(error):
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
    client: S3Client,
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
    failure = classify(error, f"uploading to {target}", bucket=bucket, key=key)
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
