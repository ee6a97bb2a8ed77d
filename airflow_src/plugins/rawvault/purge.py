"""Use case "purge": free an instrument folder by deleting moved acquisitions whose backup is checked again now.

Run by ``file_remover.<instrument>`` and, as a dry run, by ``scripts/rawvault.sh purge --dry-run``:

- free space is read with ``shutil.disk_usage`` on the instrument folder; while
  it is below ``purge.min_free_gb``, the instrument's moved raw files are taken
  oldest first, never one acquired less than ``min_age_days`` ago, at most
  ``max_per_run`` per run. A purge that a crash interrupted comes first and is
  finished whatever the free space (checked again like any other);
- a set is deleted only when every check of :mod:`rawvault.purge_checks`
  passes now; otherwise it is kept, and why is recorded
  (``purge_blocked_reason``, ``purge_checked_at``), which the alert check
  announces once;
- deleting (:mod:`rawvault.purge_fs`) is recorded around:
  ``purge_started_at`` and ``purge_evidence`` before the first file is
  deleted, ``purged_at`` and ``status=purged`` after; the raw file's other
  fields stay (it is still backed up);
- ``dry_run`` checks the same way, deletes nothing and records only the
  checks' outcome (or nothing at all with ``record=False``, the command line).

DB reads and writes go through ``shared.db``; no Airflow.
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from rawvault.locations import backup_base_path, instrument_folder
from rawvault.purge_checks import CheckedSet, S3Target, check_set
from rawvault.purge_errors import Check, PurgeBlockedError
from rawvault.purge_fs import DeleteResult, PurgeDeleteError, delete_set
from rawvault.purge_report import Decision, PurgeReport, SetOutcome, gb
from rawvault.s3.client import S3Client
from rawvault.s3.errors import S3BackupError
from rawvault.s3.keys import key_prefix_for
from shared.db.interface import RawFileNotFoundError, get_projects, get_raw_file, update_raw_file
from shared.db.models import RawFile, RawFileStatus, utc_now
from shared.db.purge import purge_candidates
from shared.settings import PurgePolicy, Settings, purge_policy

log = logging.getLogger(__name__)

MAX_REASON_CHARS = 2000
DiskUsage = Callable[[Any], Any]  # shutil.disk_usage: anything with .free


class PurgeNotPossibleError(RuntimeError):
    """The purge cannot run at all (the instrument folder is not there); the message names the fix."""


def _s3_client(settings: Settings) -> S3Client:
    from rawvault.s3.client import s3_client_for

    s3 = settings.backup.s3
    assert s3 is not None
    return s3_client_for(s3)  # with backup.s3.expected_bucket_owner on every request


@dataclass
class _Run:
    """One instrument's run: the policy, free space so far, what was deleted."""

    settings: Settings
    policy: PurgePolicy
    dry_run: bool
    record: bool
    now: datetime
    disk_usage: DiskUsage
    free: int
    client: S3Client | None = None
    deleted: int = 0
    stopped: bool = False
    project_ids: list[str] | None = field(default=None, repr=False)

    def s3_client(self) -> S3Client:
        if self.client is None:
            self.client = _s3_client(self.settings)
        return self.client

    def s3_target(self, raw_file: RawFile) -> S3Target | None:
        """Where the upload puts this raw file (bucket of its project, backup path as prefix); None without S3."""
        if not (self.settings.s3_enabled and self.policy.requires_s3):
            return None
        from rawvault.upload_target import project_bucket

        if self.project_ids is None:
            self.project_ids = [project.id for project in get_projects()]
        try:
            bucket = project_bucket(self.settings, raw_file.project_id, self.project_ids)
            prefix = key_prefix_for(backup_base_path(raw_file))
        except (S3BackupError, ValueError) as error:
            raise PurgeBlockedError(Check.S3, f"its S3 location cannot be worked out: {error}") from None
        return S3Target(bucket, prefix, self.s3_client)

    def consider(self, candidate: RawFile) -> SetOutcome:
        """Decide about one candidate set, and delete it when everything allows it."""
        outcome = SetOutcome(candidate.id, candidate.created_at, candidate.size, Decision.NOT_CHECKED)
        resume = candidate.purge_started_at is not None
        skip = self._reason_to_skip(candidate, resume)
        if skip is not None:
            outcome.decision, outcome.reason = skip
            return outcome
        try:
            raw_file = get_raw_file(candidate.id)
        except RawFileNotFoundError:
            outcome.reason = "no longer in the database"
            return outcome
        try:
            checked = check_set(
                raw_file, self.settings, self.policy, s3=self.s3_target(raw_file), resume=resume, now=self.now
            )
        except PurgeBlockedError as blocked:
            self._record(raw_file, purge_blocked_reason=str(blocked)[:MAX_REASON_CHARS], purge_checked_at=self.now)
            outcome.decision, outcome.reason, outcome.check = Decision.HELD_BACK, str(blocked), blocked.check.value
            log.warning("%s kept: %s", raw_file.id, blocked)
            return outcome
        outcome.resumed = resume
        if self.dry_run:
            self._record(raw_file, purge_blocked_reason=None, purge_checked_at=self.now)
            self.deleted += 1
            self.free += checked.allocated_bytes
            outcome.decision, outcome.freed_bytes = Decision.WOULD_DELETE, checked.allocated_bytes
            outcome.reason = _passed(checked, self.policy)
            return outcome
        return self._delete(raw_file, checked, outcome)

    def _reason_to_skip(self, candidate: RawFile, resume: bool) -> tuple[Decision, str] | None:
        if self.stopped:
            return Decision.NOT_CHECKED, "deleting another set stopped earlier in this run"
        if not resume and candidate.created_at and candidate.created_at > self.now - self.policy.min_age:
            days = (self.now - candidate.created_at).total_seconds() / 86400
            limit = self.policy.min_age.total_seconds() / 86400
            return Decision.TOO_YOUNG, f"acquired {days:.1f} days ago; purge.min_age_days is {limit:g}"
        if not resume and self.free >= self.policy.min_free_bytes:
            return Decision.NOT_NEEDED, f"{gb(self.free)} free reaches purge.min_free_gb ({self.policy.min_free_gb:g})"
        if self.deleted >= self.policy.max_per_run:
            return Decision.OVER_LIMIT, f"purge.max_per_run ({self.policy.max_per_run}) sets this run"
        return None

    def _record(self, raw_file: RawFile, **fields: Any) -> None:
        if self.record:
            update_raw_file(raw_file.id, expected={"status": RawFileStatus.MOVED.value}, **fields)

    def _delete(self, raw_file: RawFile, checked: CheckedSet, outcome: SetOutcome) -> SetOutcome:
        started_at = raw_file.purge_started_at or self.now
        claimed = update_raw_file(
            raw_file.id,
            # Compare-and-set on what this run read: a second run never deletes alongside.
            expected={
                "status": RawFileStatus.MOVED.value,
                "purge_started_at": raw_file.purge_started_at,
                "purge_checked_at": raw_file.purge_checked_at,
            },
            purge_started_at=started_at,
            purge_checked_at=self.now,
            purge_evidence=_with_earlier_deletions(checked.evidence, raw_file.purge_evidence),
            purge_blocked_reason=None,
        )
        if not claimed:
            outcome.reason = "another run changed this raw file while it was checked: left to that run"
            return outcome
        free_before = self.disk_usage(instrument_folder(raw_file, self.settings)).free
        try:
            result = self._delete_files(raw_file, checked)
        except (PurgeDeleteError, OSError) as error:
            self.stopped = True  # something changed under the purge: delete nothing more in this run
            reason = f"{Check.DELETE.value}: {error}"
            update_raw_file(raw_file.id, purge_blocked_reason=reason[:MAX_REASON_CHARS], purge_checked_at=self.now)
            log.error("%s: %s", raw_file.id, reason)
            outcome.decision, outcome.reason, outcome.check = Decision.DELETE_STOPPED, reason, Check.DELETE.value
            return outcome
        # No compare-and-set here: the files are gone, so the record must say so whatever changed meanwhile.
        update_raw_file(raw_file.id, status=RawFileStatus.PURGED.value, purged_at=utc_now())
        self.deleted += 1
        self.free = self.disk_usage(instrument_folder(raw_file, self.settings)).free
        outcome.decision, outcome.freed_bytes = Decision.DELETED, max(0, self.free - free_before)
        writable = ""
        if result.made_writable:
            writable = f", {len(result.made_writable)} read-only folder(s) of it made writable"
        outcome.reason = f"{len(result.files)} file(s) deleted{writable}; {_passed(checked, self.policy)}"
        log.info("%s purged from %s: %s", raw_file.id, checked.evidence["share"]["folder"], outcome.reason)
        return outcome

    def _delete_files(self, raw_file: RawFile, checked: CheckedSet) -> DeleteResult:
        if not checked.folder_exists:
            return DeleteResult()  # a run before deleted everything, its own folder included
        return delete_set(
            instrument_folder(raw_file, self.settings),
            checked.within,
            checked.top_names,
            checked.identities,
            target_folder=self.settings.file_mover.target_folder,
            remove_empty_parent=len(checked.within) > 2,  # <target>/<YYYY_MM>/<raw_file_id>: the raw file's own
        )


def _passed(checked: CheckedSet, policy: PurgePolicy) -> str:
    copies = " and ".join(sorted(policy.require))
    files = len(checked.files)
    return f"every check passed: {files} file(s) on the share and the {copies} copies match the record"


def _with_earlier_deletions(evidence: dict[str, Any], earlier: dict[str, Any] | None) -> dict[str, Any]:
    """A resumed purge keeps the evidence of the files the interrupted run had checked and deleted."""
    gone = set(evidence["share"]["already_deleted"])
    earlier_files = ((earlier or {}).get("share") or {}).get("files") or []
    evidence["share"]["deleted_earlier"] = [entry for entry in earlier_files if entry.get("path") in gone]
    return evidence


def purge_instrument(
    instrument_id: str,
    settings: Settings,
    *,
    dry_run: bool | None = None,
    record: bool = True,
    client: S3Client | None = None,
    now: datetime | None = None,
    disk_usage: DiskUsage = shutil.disk_usage,
) -> PurgeReport:
    """One purge run of ``instrument_id`` (module doc); the report of every candidate set.

    ``dry_run`` ``None``: the resolved ``purge.dry_run``. ``record=False``
    (dry runs only) writes nothing to the database. ``client``: the S3 client
    (default: from the Airflow connection, made when a set needs it).
    """
    policy = purge_policy(settings, instrument_id)
    dry = policy.dry_run if dry_run is None else dry_run
    if not dry and not record:
        raise ValueError("a purge that deletes always records what it deletes: record=False is for dry runs only")
    folder = settings.instruments[instrument_id].path
    try:
        free = disk_usage(folder).free
    except OSError as error:
        raise PurgeNotPossibleError(
            f"the folder of instrument {instrument_id!r}, {folder}, cannot be read ({error.strerror}): is the "
            "instrument share mounted? Nothing was checked or deleted"
        ) from None
    now = now or utc_now()
    run = _Run(settings, policy, dry, record, now, disk_usage, free, client)
    report = PurgeReport(
        instrument_id, folder, dry, policy.min_free_bytes, free, min_age_days=policy.min_age.total_seconds() / 86400,
        max_per_run=policy.max_per_run, require=sorted(policy.require),
    )  # fmt: skip
    for candidate in purge_candidates(instrument_id):
        report.outcomes.append(run.consider(candidate))
    report.free_after = run.free
    log.info("%s", report.summary())
    return report
