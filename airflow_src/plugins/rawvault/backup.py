"""Use case "back up to S3": upload one raw file's local backup copy and record the outcome on its ``RawFile``.

It joins the database (:mod:`shared.db`), the claim (:mod:`rawvault.claim`)
and the boto3 library (:mod:`rawvault.s3`):

- **Target** (:class:`~rawvault.upload_target.UploadTarget`, worked out once per run): the bucket
  ``<bucket_prefix>-<normalised project id>`` (the fallback project when the
  raw file has none; a project id that shares its bucket with another project
  fails), the key prefix ``<backup_base_path>/`` mirroring the local backup
  (see :mod:`rawvault.s3.keys`), the part size of the recorded ETags and the
  source folder ``<locations.backup>/<backup_base_path>``.
- **File info**: ``upload_to_s3`` passes the XCom of ``compute_checksum``
  (:class:`XcomFileInfo`), which must equal what is recorded on the
  ``RawFile`` (:class:`~rawvault.s3.errors.FileInfoError`); the recorded
  ``etag_part_size`` is the truth for the part size
  (:class:`~rawvault.s3.errors.PartSizeMismatchError`). The sweeper's
  retries pass no XCom: everything comes from the ``RawFile``.
- **Status** (written by :mod:`rawvault.claim` only): ``upload_in_progress``
  while running; ``upload_done`` with ``s3_backup_key = s3://<bucket>/<key_prefix>``
  and ``s3_etag`` only when every file is uploaded and verified and the
  manifest is written; otherwise ``upload_failed`` with the reason in
  ``backup_status_details`` and the time in ``s3_upload_failed_at``
  (backup_sweeper's backoff counts from it), and the error is raised again so
  the task fails visibly.
- ``s3_etag``: for a raw file of one file (Thermo ``.raw``) the ETag S3
  reports for that object; for a set of several files (Bruker ``.d``, Sciex)
  the ETag S3 reports for the set's manifest object
  (``<key_prefix><raw_file_id>.rawvault-manifest.json``), which lists every
  file's key, size, MD5 and ETag.
- **The store** (:mod:`rawvault.stores`, after the bucket check): its
  probed capabilities decide checksums, conditions and verification, a
  ``compatibility: strict`` run refuses a store that lacks what it needs, and
  uploads pass the worker's bandwidth limiter.
- A retry is idempotent: verified objects are skipped, a complete set
  (manifest present and matching) uploads nothing, and an unfinished
  multipart upload is resumed (only missing parts are sent; see
  :mod:`rawvault.s3.multipart`). Its upload id is recorded in
  ``s3_multipart_uploads`` ({key: upload id}) while it is unfinished.
- **Repair.** For a raw file already ``upload_done`` the run first checks the
  whole set in S3 without claiming it
  (:func:`~rawvault.s3.file_set.check_complete_set`: the manifest and a HEAD
  of every object). When every object holds its file, the manifest describes
  them and ``s3_etag`` is the recorded one, it returns ``already_complete``
  and leaves the document as it is. Otherwise it claims the raw file
  (``upload_in_progress``, details "repairing the S3 backup: <what is
  wrong>"), uploads what is missing, fails on an object that differs (never
  overwritten), replaces a manifest that no longer describes the objects, and
  records ``upload_done`` with the new ``s3_etag`` and details saying what it
  repaired, in the same claim-guarded write; a repair that fails records
  ``upload_failed`` with the reason, like any upload. An unreachable S3
  during the first check fails the run and leaves ``upload_done`` as it is.

When MongoDB cannot be reached to record the outcome, the run fails with
:class:`~rawvault.claim.UploadNotRecordedError` (the data in S3 is complete
and verified); the document stays ``upload_in_progress`` until the lease
expires, and the next run finds the set complete and records ``upload_done``
without uploading again.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import timedelta
from functools import cached_property
from typing import Any

from rawvault import claim as claims
from rawvault.claim import MAX_DETAILS_CHARS, Claim, UploadClaimLostError, UploadNotRecordedError
from rawvault.s3.buckets import ensure_bucket
from rawvault.s3.client import S3Client
from rawvault.s3.errors import BucketOwnerMismatchError, S3BackupError, S3PermanentError
from rawvault.s3.file_set import UploadResult, check_complete_set
from rawvault.s3.progress import DEFAULT_INTERVAL_SECONDS
from rawvault.s3.upload import upload_file_set
from rawvault.stores import ClientFactory, prepare_store, recorded_etag_shapes
from rawvault.upload_target import UploadTarget, XcomFileInfo, resolve_file_info, upload_target
from shared.db.interface import get_raw_file
from shared.db.models import BackupStatus, RawFile
from shared.settings import Settings

log = logging.getLogger(__name__)


def _client_factory(settings: Settings, given: S3Client | None, factory: ClientFactory | None) -> ClientFactory:
    """Clients of the upload: ``factory``, else from the connection; ``given`` when no extra config is needed.

    Every client sends the expected bucket owner.
    """
    from rawvault.s3.client import expect_bucket_owner, s3_client_for
    from rawvault.s3.parallel import connections_needed

    s3 = settings.backup.s3
    assert s3 is not None

    def make(extra: Any) -> S3Client:
        if given is not None and (extra is None or factory is None):
            if extra is not None:
                log.warning("the store needs another client config, but the given client is used as it is")
            client = given
        else:
            client = (
                factory(extra)
                if factory
                else s3_client_for(s3, connections_needed(s3.max_concurrency), extra_config=extra)
            )
        expect_bucket_owner(client, s3.expected_bucket_owner)
        return client

    return make


def _reason(error: BaseException) -> str:
    text = str(error) if isinstance(error, S3BackupError) else f"{type(error).__name__}: {error}"
    text = f"upload to S3 failed: {text}"
    return text if len(text) <= MAX_DETAILS_CHARS else text[: MAX_DETAILS_CHARS - 3] + "..."


@dataclass
class _Run:
    """One run's inputs: the raw file as read, its target and file info (or why they cannot be worked out)."""

    raw_file: RawFile
    settings: Settings
    make_client: ClientFactory
    target: UploadTarget | None = None
    files: dict[str, Any] = field(default_factory=dict)
    problem: BaseException | None = None
    repair: str | None = None  # upload_done, but S3 does not hold the set as recorded: what is wrong

    def set_args(self) -> dict[str, Any]:
        """The set's bucket, key prefix, file info, part size, raw file id and metadata, as S3 calls take them."""
        assert self.target is not None
        return {
            "bucket": self.target.bucket,
            "key_prefix": self.target.key_prefix,
            "file_info": self.files,
            "part_size": self.target.part_size,
            "raw_file_id": self.raw_file.id,
            "metadata": self.target.metadata,
        }

    @cached_property
    def client(self) -> S3Client:
        """The run's S3 client (made once; every request carries the expected bucket owner, when set)."""
        return self.make_client(None)


def _already_done(run: _Run) -> UploadResult | None:
    """For an ``upload_done`` raw file: the set, if S3 holds all of it as recorded; else ``None`` (repair it)."""
    raw_file = run.raw_file
    if run.problem is not None:
        if not isinstance(run.problem, S3BackupError):
            raise run.problem
        log.warning("%s: upload_done, but %s: uploading again", raw_file.id, run.problem)
        return None
    # S3 errors propagate: an unreachable S3 must not turn upload_done into upload_failed. A bucket of another
    # account is the exception: the claimed run checks the bucket and records why the backup is not safe.
    try:
        client, args = run.client, run.set_args()
        s3 = run.settings.backup.s3
        assert s3 is not None
        state = check_complete_set(
            client, **args, etag_shape=recorded_etag_shapes(client)(args["bucket"]), concurrency=s3.max_concurrency
        )
    except BucketOwnerMismatchError as error:
        run.repair = str(error)
        return None
    recorded = (raw_file.s3_backup_key, raw_file.s3_etag)
    found = (state.result.s3_backup_key, state.result.s3_etag)
    if state.complete and found == recorded:
        return state.result
    if not state.complete:
        run.repair = state.summary()
    else:
        run.repair = f"S3 holds the complete set at {found[0]} with s3_etag {found[1]}, but {recorded} is recorded"
    log.warning("%s: recorded as upload_done in %s, but %s: repairing the set", raw_file.id, recorded[0], run.repair)
    return None


def _upload(run: _Run, claim: Claim, progress_interval: float) -> UploadResult:
    """Check the bucket and upload the set while holding ``claim``; raise what went wrong."""
    if run.problem is not None:
        raise run.problem
    target, raw_file = run.target, run.raw_file
    assert target is not None
    s3 = run.settings.backup.s3
    assert s3 is not None
    ensure_bucket(
        run.client, target.bucket, s3.region, s3.auto_create_buckets,
        server_side_encryption=s3.server_side_encryption, kms_key_id=s3.kms_key_id, object_lock=s3.object_lock,
        lifecycle=s3.lifecycle, degrade=s3.compatibility == "auto",
    )  # fmt: skip
    store = prepare_store(run.client, target.bucket, run.settings, run.make_client)
    claim.check()
    result = upload_file_set(
        store.client,
        **run.set_args(),
        source_folder=target.source_folder,
        object_settings=store.object_settings(s3),
        progress_interval=progress_interval,
        multipart_uploads=dict(raw_file.s3_multipart_uploads or {}),
        on_multipart_upload=claims.multipart_recorder(claim, dict(raw_file.s3_multipart_uploads or {})),
        guard=claim.check,
        capabilities=store.caps,
        bandwidth_status=store.bandwidth_status if store.limiter is not None else None,
        on_progress=claim.watch_progress,  # the heartbeat records bytes, rate and ETA (Backups page)
    )
    claim.check()
    return result


def _listed(paths: list[str], limit: int = 10) -> str:
    return ", ".join(paths[:limit]) + (f" and {len(paths) - limit} more" if len(paths) > limit else "")


def _done_details(result: UploadResult, run: _Run) -> str:
    """``backup_status_details`` of ``upload_done``: what was uploaded or, for a repair, what was repaired."""
    if run.repair is None:
        resumed = f" ({result.parts_resumed} part(s) resumed from an earlier attempt)" if result.parts_resumed else ""
        replaced = f" (replaced one of ETag {result.replaced_manifest_etag})" if result.replaced_manifest_etag else ""
        return (
            f"in {result.s3_backup_key}: {len(result.uploaded)} file(s) uploaded{resumed}, "
            f"{len(result.skipped)} already there, all verified; manifest {result.manifest_key}{replaced}"
        )
    done = [f"uploaded again {_listed(result.uploaded)}"] if result.uploaded else []
    if result.replaced_manifest_etag:
        done.append(f"manifest rewritten (ETag {result.replaced_manifest_etag} -> {result.manifest_etag})")
    elif result.manifest_written:
        done.append(f"manifest written again (ETag {result.manifest_etag})")
    if run.raw_file.s3_etag != result.s3_etag:
        done.append(f"s3_etag {run.raw_file.s3_etag} -> {result.s3_etag}")
    return (
        f"repaired in {result.s3_backup_key}: {'; '.join(done) or 'nothing to change'}; all {len(result.objects)} "
        f"file(s) verified. Found before the repair: {run.repair}"
    )


def _record_done(claim: Claim, result: UploadResult, run: _Run) -> None:
    if not claims.record_done(claim, _done_details(result, run), result.s3_backup_key, result.s3_etag):
        claim.mark_lost("another run took over its claim before the outcome was recorded")
        claim.check()


def upload_raw_file(
    raw_file_id: str,
    settings: Settings,
    *,
    xcom: XcomFileInfo | None = None,
    client: S3Client | None = None,
    expected_attempts: int | None = None,
    progress_interval: float = DEFAULT_INTERVAL_SECONDS,
    client_factory: ClientFactory | None = None,
) -> UploadResult:
    """Upload raw file ``raw_file_id`` from its local backup folder to S3 and record the outcome.

    ``xcom`` carries what compute_checksum and copy_raw_file pushed (``None``: the recorded file info and
    part size, the backup folder of the settings). ``client`` defaults to one from the Airflow connection
    ``backup.s3.aws_conn_id``; ``client_factory(extra_config)`` makes one for a store that needs another
    botocore config (default: from the connection). Claims the raw file first (:mod:`rawvault.claim`);
    one already ``upload_done`` is checked in S3 first, and claimed and repaired only when the set is not
    complete as recorded (see the module docstring). With ``expected_attempts`` (a retry scheduled by
    backup_sweeper) the claim also requires that the raw file still has that many attempts, so a retry
    scheduled for a failure that another run has retried since stops (:class:`~rawvault.claim.UploadSupersededError`).
    Raises the :class:`~rawvault.s3.errors.S3BackupError` (or other error) after recording ``upload_failed``;
    ``UploadInProgressError``, ``UploadSupersededError`` and ``UploadClaimLostError`` record nothing.
    """
    s3 = settings.backup.s3
    if not settings.s3_enabled or s3 is None:
        raise S3PermanentError("backup.backup_type is not 's3': there is nothing to upload to S3")
    run = _Run(get_raw_file(raw_file_id), settings, _client_factory(settings, client, client_factory))
    if expected_attempts is not None and (run.raw_file.s3_upload_attempts or 0) != expected_attempts:
        raise claims.superseded_error(run.raw_file, expected_attempts)
    xcom = xcom or XcomFileInfo()
    try:
        run.files = resolve_file_info(run.raw_file, xcom.file_info)
        run.target = upload_target(run.raw_file, settings, xcom)
    except Exception as error:  # recorded as upload_failed once the claim is held
        run.problem = error
    if run.raw_file.backup_status == BackupStatus.UPLOAD_DONE.value and run.raw_file.s3_backup_key:
        done = _already_done(run)
        if done is not None:
            log.info("%s: already upload_done and complete in %s: nothing to do", raw_file_id, done.s3_backup_key)
            return done
    activity = "uploading to S3" if run.repair is None else f"repairing the S3 backup ({run.repair})"
    claim = claims.claim(run.raw_file, timedelta(minutes=s3.stale_upload_minutes), expected_attempts, activity)
    try:
        with claims.Heartbeat(claim):
            result = _upload(run, claim, progress_interval)
        _record_done(claim, result, run)
    except (UploadClaimLostError, UploadNotRecordedError) as error:
        log.error("%s: %s", raw_file_id, error)
        raise
    except BaseException as error:
        reason = _reason(error)
        log.error("%s: %s", raw_file_id, reason)
        try:
            if not claims.record_failed(claim, reason):
                log.error("%s: upload_failed not recorded: another run owns the raw file now", raw_file_id)
        except Exception as db_error:
            log.error("%s: could not record upload_failed: %s", raw_file_id, db_error)
        raise
    log.info("%s: upload_done, s3_backup_key %s, s3_etag %s", raw_file_id, result.s3_backup_key, result.s3_etag)
    return result
