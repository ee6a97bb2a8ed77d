"""The files of a set uploaded side by side, sharing one pool of part slots; the first failure stops the set.

Up to ``FILE_THREADS_PER_SLOT x slots`` files are uploaded at a time (each
by a thread of its own that does the file's small requests: the check of its
source, create, complete, a verifying HEAD where the set's listing cannot
stand in: multipart, SSE-KMS, Object Lock), and every request that sends
data (a small file's single PUT, each part of a large file) runs in one pool
of ``slots`` threads shared by the whole set (:attr:`MultipartHooks.part_pool`).
So a set of many small files keeps ``slots`` data requests in flight instead
of one, and while one file waits for its small requests the next file's PUT
already holds the slot (with only ``slots`` file threads, each slot sat idle
during its file's HEAD: issue 16). Most small files need no HEAD of their own
any more: the set's listing after its PUTs verifies them
(:mod:`rawvault.s3.listed_check`); what a file gives back is its verified
object or its PUT awaiting that listing. A large file's parts and the small files
share the same slots. Memory is bounded by the slots, never by the size or
number of files or threads: each data request streams from its file, a file
thread holds no buffer but while a verification reads data (SSE-KMS, a read
back), and at most ``slots`` of those run at once
(:attr:`MultipartHooks.read_slots`). The client needs
:func:`connections_needed` connections so that no request waits for one.

The first failure sets the set's stop event: no file or part starts after
it, the requests in flight finish, a multipart upload it interrupted is kept
for the next run to resume, and that first failure is raised. An interruption
(task timeout, SIGTERM) stops everything and leaves at once.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import replace

from rawvault.s3.file_info import RecordedFile
from rawvault.s3.set_write import AwaitingListing, MultipartHooks, UploadedObject

log = logging.getLogger(__name__)

Sent = UploadedObject | AwaitingListing  # an object verified, or a PUT awaiting the set's listing
UploadOne = Callable[[RecordedFile, MultipartHooks], Sent]

# File threads per part slot: enough that the slots stay busy while files wait for their small requests.
FILE_THREADS_PER_SLOT = 2
SPARE_CONNECTIONS = 4  # the caller's own requests beside the set's (the manifest, an abort, a guard's HEAD)


def file_threads(slots: int, files: int) -> int:
    """How many files of a set of ``files`` upload at a time with ``slots`` part slots."""
    return max(1, min(FILE_THREADS_PER_SLOT * max(1, slots), files))


def connections_needed(slots: int) -> int:
    """The HTTP connections an upload with ``slots`` part slots uses at most: every file thread and part slot."""
    return (FILE_THREADS_PER_SLOT + 1) * max(1, slots) + SPARE_CONNECTIONS


def upload_side_by_side(
    to_upload: Sequence[RecordedFile], upload_one: UploadOne, slots: int, hooks: MultipartHooks
) -> dict[str, Sent]:
    """``upload_one(entry, hooks)`` for every entry, side by side (see the module docstring); objects by path.

    ``hooks.guard()`` is called before each file starts. Raises the first failure.
    """
    if not to_upload:
        return {}
    slots = max(1, slots)
    parts = ThreadPoolExecutor(slots, thread_name_prefix="rawvault-part")
    files = ThreadPoolExecutor(file_threads(slots, len(to_upload)), thread_name_prefix="rawvault-file")
    run = _SetRun(replace(hooks, part_pool=parts, stop=threading.Event(), read_slots=threading.Semaphore(slots)))
    futures = [files.submit(run.upload, entry, upload_one) for entry in to_upload]
    try:
        wait(futures)
    except BaseException:
        # Interrupted: nothing new starts; leave at once (the uploads in flight are resumable).
        run.stop.set()
        files.shutdown(wait=False, cancel_futures=True)
        parts.shutdown(wait=False, cancel_futures=True)
        raise
    files.shutdown(wait=True)
    parts.shutdown(wait=True)
    run.raise_first_failure()
    return run.uploaded


class _SetRun:
    """One set's files in flight: what each gave, the failures in the order they happened, the stop event."""

    def __init__(self, hooks: MultipartHooks) -> None:
        assert hooks.stop is not None
        self.hooks = hooks
        self.stop: threading.Event = hooks.stop
        self.uploaded: dict[str, Sent] = {}
        self.failures: list[BaseException] = []
        self._lock = threading.Lock()

    def upload(self, entry: RecordedFile, upload_one: UploadOne) -> None:
        """Upload one file unless the set stopped; record its object, or its failure (which stops the set)."""
        if self.stop.is_set():
            return
        try:
            self.hooks.guard()
            uploaded = upload_one(entry, self.hooks)
        except BaseException as error:
            with self._lock:
                self.failures.append(error)  # before the stop event: the first failure is the cause
            self.stop.set()
            return
        with self._lock:
            self.uploaded[entry.path] = uploaded

    def raise_first_failure(self) -> None:
        """Raise the failure that stopped the set (any later ones were stopped by it or are logged)."""
        if not self.failures:
            return
        for later in self.failures[1:]:
            log.warning("also stopped after the first failure: %s", later)
        raise self.failures[0]
