"""mongoengine documents: ``RawFile`` (collection ``raw_file``) and ``Project``."""

from __future__ import annotations

import random
from datetime import UTC, datetime
from enum import StrEnum, nonmember
from typing import Any

from mongoengine import BooleanField, DateTimeField, DictField, Document, FloatField, IntField, StringField


def utc_now() -> datetime:
    """Timezone-aware now; MongoDB stores milliseconds, so round to them to compare reliably."""
    now = datetime.now(UTC)
    return now.replace(microsecond=now.microsecond // 1000 * 1000)


class RawFileStatus(StrEnum):
    """Where a raw file is in the acquisition pipeline (its backup has ``BackupStatus``)."""

    QUEUED = "queued"
    MONITORING_ACQUISITION = "monitoring_acquisition"
    MONITORING_DONE = "monitoring_done"
    CHECKSUMMING = "checksumming"
    CHECKSUMMING_DONE = "checksumming_done"
    MOVING = "moving"
    MOVED = "moved"
    ERROR = "error"
    # Deleted from the instrument share by the purge (file_remover) after a re-checked backup; still backed up.
    PURGED = "purged"


class BackupStatus(StrEnum):
    """State of the local copy and the S3 upload (contract values, keep stable).

    The groups below are frozensets of values (``enum.nonmember``: not statuses
    themselves, so never in a field's choices nor in iteration); every rule
    about "which statuses" uses one of them.
    """

    COPYING_IN_PROGRESS = "copying_in_progress"
    COPYING_DONE = "copying_done"
    COPYING_FAILED = "copying_failed"
    UPLOAD_IN_PROGRESS = "upload_in_progress"
    UPLOAD_DONE = "upload_done"
    UPLOAD_FAILED = "upload_failed"
    SKIPPED = "skipped"

    # The local copy or the upload failed (the Backups page lists these first).
    FAILED = nonmember(frozenset({COPYING_FAILED, UPLOAD_FAILED}))
    # A copy or an upload runs (stuck on the Backups page when not updated for long).
    IN_PROGRESS = nonmember(frozenset({COPYING_IN_PROGRESS, UPLOAD_IN_PROGRESS}))
    # The upload has started at least once: a copy status must never replace these.
    PAST_LOCAL_COPY = nonmember(frozenset({UPLOAD_IN_PROGRESS, UPLOAD_DONE, UPLOAD_FAILED}))
    # The local backup is complete and verified (the file mover may move the acquisition).
    LOCAL_COPY_VERIFIED = nonmember(frozenset({COPYING_DONE, UPLOAD_IN_PROGRESS, UPLOAD_DONE, UPLOAD_FAILED}))
    # An upload run may claim the raw file (it needs a verified local copy).
    CLAIMABLE = nonmember(frozenset({COPYING_DONE, UPLOAD_FAILED, UPLOAD_IN_PROGRESS, UPLOAD_DONE}))
    # The backup counts as verified ("protected"; older than backup.deadline_hours without it: unprotected),
    # with backup_type s3 (a verified S3 copy) and with backup_type local (a verified local copy).
    PROTECTED_S3 = nonmember(frozenset({UPLOAD_DONE, SKIPPED}))
    PROTECTED_LOCAL = nonmember(frozenset({COPYING_DONE, UPLOAD_IN_PROGRESS, UPLOAD_DONE, UPLOAD_FAILED, SKIPPED}))


class ScrubStatus(StrEnum):
    """What the last scrub (a re-read of the S3 objects and the local backup copies) found."""

    OK = "ok"  # every byte is the recorded data
    DRIFT = "drift"  # something is missing or differs: scrub_details says what


# RawFile's fields, grouped by the code that writes them. Each group is an abstract document: the stored
# document stays flat (one key per field, in the order the fields are declared in this file).


class _Registration(Document):
    """What the instrument watcher registers, and where the acquisition is in the pipeline.

    ``source_inode``: the raw file's entry on the share when it was registered;
    a file re-created under the same name is another acquisition (the watcher
    registers it anew, the mover refuses to move it). ``source_mtime_ns``: the
    main file's modification time (ns) when it was checksummed; a later one
    means new content. ``source_mtimes``: ``{file_info path: ns}`` of every file
    of the set when it was checksummed; the file mover moves a set only while
    each file still has its size and this time (``rawvault.recorded_set``).
    ``created_at``: when the acquisition was first seen on the share; decides
    its YYYY_MM backup folder.
    """

    id = StringField(primary_key=True)
    original_name = StringField(required=True)
    instrument_id = StringField(required=True)
    instrument_type = StringField()
    project_id = StringField()
    status = StringField(choices=[s.value for s in RawFileStatus], default=RawFileStatus.QUEUED.value)
    status_details = StringField()
    size = IntField()
    source_inode = IntField()
    source_mtime_ns = IntField()
    source_mtimes = DictField()
    created_at = DateTimeField(required=True)

    meta: dict[str, Any] = {"abstract": True}


class _HandlerFailure(Document):
    """The acquisition handler's last failure and its re-drives.

    The last failed task (status error, "<step>: <reason>" in
    ``status_details``): its task id, when it failed and whether the cause is
    transient, written only by ``rawvault.failures.record_failure``.
    ``redrive_count``/``redriven_at``: the re-drives so far (each a new run id,
    ``keys.handler_run_id``) and the last one's time; acquisition_redrive
    re-drives transient failures with backoff and claims the next re-drive
    with a compare-and-set on this count.
    """

    error_step = StringField()
    error_at = DateTimeField()
    error_transient = BooleanField()
    redrive_count = IntField(default=0)
    redriven_at = DateTimeField()

    meta: dict[str, Any] = {"abstract": True}


class _Monitor(Document):
    """monitor_acquisition's watch: the last size of the main file it saw, and since when it has had it."""

    monitor_size = IntField()
    monitor_size_since = DateTimeField()

    meta: dict[str, Any] = {"abstract": True}


class _Backup(Document):
    """The checksum, the local copy and the S3 upload (contract fields, see the module's users).

    ``staging_token``: the compute_checksum run whose staged copies (hidden,
    in the local backup) copy_raw_file may publish after verifying them;
    staged copies of any other run are never used (``rawvault.staging``).
    ``etag_part_size``: the part size (bytes) the recorded multipart ETags
    were computed with; uploads must use the same. ``s3_upload_attempted_at``:
    when the last upload attempt started (the backoff counts from it for
    documents without ``s3_upload_failed_at``, when the last attempt failed,
    as Airflow's own retry delay counts from the failure).
    ``s3_multipart_uploads``: unfinished multipart uploads, ``{object key:
    upload id}``, so a retry resumes them.
    """

    file_info = DictField()
    staging_token = StringField()
    etag_part_size = IntField()
    backup_status = StringField(choices=[s.value for s in BackupStatus])
    backup_status_details = StringField()
    backup_base_path = StringField()
    s3_backup_key = StringField()
    s3_etag = StringField()
    s3_upload_attempts = IntField(default=0)
    s3_upload_attempted_at = DateTimeField()
    s3_upload_failed_at = DateTimeField()
    s3_multipart_uploads = DictField()

    meta: dict[str, Any] = {"abstract": True}


class _UploadClaim(Document):
    """Written only by ``rawvault.claim``: the run that owns the upload, until when, and its progress.

    The owner (``upload_in_progress``) renews its lease while it runs; another
    run may take over only after it expired. ``upload_progress`` (``{bytes_done,
    bytes_total, bytes_per_second, eta_seconds, at}``) is written only in the
    heartbeat's lease renewal (no extra writes) and cleared by the outcome's write.
    """

    upload_claim_owner = StringField()
    upload_claim_expires_at = DateTimeField()
    upload_progress = DictField()

    meta: dict[str, Any] = {"abstract": True}


class _Sample(Document):
    """A random number in [0, 1) given at insert.

    verify takes its random sample as a run of these keys from a random point,
    through an index, without reading or sorting every id.
    """

    sample_key = FloatField(default=random.random)

    meta: dict[str, Any] = {"abstract": True}


class _Purge(Document):
    """The purge (file_remover.<instrument>, ``rawvault.purge``): the moved set deleted from the instrument share.

    It deletes only after every check passed again. ``purge_started_at`` is
    written before the first delete, so a run that dies midway is finished by
    the next one; ``purged_at`` and status purged when the set is gone.
    ``purge_evidence`` says what was checked and found (share, local copy, S3
    objects and manifest); a set held back by a failed check has the reason
    ("<check>: <what>") in ``purge_blocked_reason`` until a later check passes.
    """

    purge_started_at = DateTimeField()
    purged_at = DateTimeField()
    purge_checked_at = DateTimeField()
    purge_blocked_reason = StringField()
    purge_evidence = DictField()

    meta: dict[str, Any] = {"abstract": True}


class _Scrub(Document):
    """Scrubbing (backup_verifier, verify --read-data): the last re-read of the data in S3 and the local backup.

    When it ran, what it found, and the drift items (one per line). Unset: never scrubbed.
    """

    scrubbed_at = DateTimeField()
    scrub_status = StringField(choices=[s.value for s in ScrubStatus])
    scrub_details = StringField()

    meta: dict[str, Any] = {"abstract": True}


class RawFile(_Registration, _HandlerFailure, _Monitor, _Backup, _UploadClaim, _Sample, _Purge, _Scrub):
    """One acquisition: a Thermo ``.raw``, a Bruker ``.d`` folder or a Sciex ``.wiff`` set.

    ``file_info`` maps each file's path, relative to the raw file's backup
    folder, to ``[size, md5, etag]``. The fields are declared in the groups
    above, by the code that writes them; the document is stored flat.
    """

    # Audit timestamps of this document.
    db_created_at = DateTimeField(default=utc_now)
    db_updated_at = DateTimeField(default=utc_now)

    meta = {
        "collection": "raw_file",
        # Every read of rawvault is an equality or range on the first fields of one of these, and a sort in
        # their order (tests/integration/test_query_shapes.py checks each command). Which read uses which:
        # README "MongoDB". Ascending: MongoDB walks them backwards for newest first.
        "indexes": [
            # The Backups page's groups per backup status, newest first with keyset paging on (created_at, _id);
            # the sweeper's uploading raw files, the alerts' failed/stuck/unprotected, verify's full audit.
            {"fields": ["backup_status", "created_at", "id"]},
            # Raw files whose pipeline failed (status error), the page's status filter, counts per status.
            {"fields": ["status", "backup_status", "created_at", "id"]},
            # The page with one instrument / one project: its groups, its counts, its total.
            {"fields": ["instrument_id", "backup_status", "created_at", "id"]},
            {"fields": ["project_id", "backup_status", "created_at", "id"]},
            # Every raw file newest first (the page's last group), per instrument too (and the monitor's
            # "a newer acquisition exists"); the total of a date range.
            {"fields": ["created_at", "id"]},
            {"fields": ["instrument_id", "created_at", "id"]},
            # The watcher: the registrations of the names now on an instrument's share.
            {"fields": ["instrument_id", "original_name"]},
            # The Backups page's project menu for a caller who may read only some instruments (distinct scan).
            {"fields": ["instrument_id", "project_id"]},
            # Stuck counts (in progress, not updated since), the sweeper's never-uploaded and recent failures,
            # the digest's uploads of the last day.
            {"fields": ["backup_status", "db_updated_at", "status"]},
            # The purge: an instrument's moved raw files, oldest first.
            {"fields": ["instrument_id", "status", "created_at", "id"]},
            # The sweeper: failed uploads it may still retry.
            {"fields": ["backup_status", "s3_upload_attempts"]},
            # verify's random sample of upload_done raw files.
            {"fields": ["backup_status", "sample_key"]},
            # The scrub's selection: upload_done, least recently scrubbed first (never scrubbed sorts first),
            # oldest acquisition first among equals; a walk of this index, never a sort of the collection.
            {"fields": ["backup_status", "scrubbed_at", "created_at"]},
            # The alert check's "drift found by a scrub" and "purge held back" candidates (few: sparse).
            {"fields": ["scrub_status"], "sparse": True},
            {"fields": ["purge_blocked_reason"], "sparse": True},
        ],
        "strict": False,  # documents written by a newer rawvault still load
    }


# Indexes earlier versions created that no query uses any more (each a prefix of one above, or unused):
# dropped by shared.db.interface.connect_db once per process. status_1 (acquisition_redrive's): the index
# (status, backup_status, created_at, _id) starts with status.
LEGACY_RAW_FILE_INDEXES = ("instrument_id_1", "backup_status_1", "original_name_1", "created_at_-1", "status_1")


class Project(Document):
    """A project whose raw files go to their own bucket ``<bucket_prefix>-<normalised id>``.

    The watcher assigns a raw file to the project whose id appears as a token
    in the file name.
    """

    id = StringField(primary_key=True)
    name = StringField()
    description = StringField()
    db_created_at = DateTimeField(default=utc_now)

    meta = {"collection": "project", "strict": False}
