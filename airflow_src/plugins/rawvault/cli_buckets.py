"""The ``buckets`` commands of rawvault's command line: probe the stores, apply lifecycle rules.

    python -m rawvault.cli buckets probe (--bucket B | --all) [--json]
    python -m rawvault.cli buckets apply-lifecycle [--bucket B] [--json]

``probe`` probes each bucket again (:func:`rawvault.stores.bucket_capabilities`
with ``refresh``: throw-away objects under ``.rawvault-probe/``), records the
result in MongoDB (``s3_store``, what the upload and the Backups page read)
and prints its summary and weaknesses; with ``compatibility: strict`` also
whether the upload would refuse the store. ``apply-lifecycle`` puts the rules
of ``backup.s3.lifecycle`` into every project's bucket (or one), keeping the
buckets' other rules; a bucket that does not exist yet is skipped (auto-created
buckets get the rules when they are created). ``--all`` and ``apply-lifecycle``
take the buckets of every project in the database and of the fallback project.

Exit codes as the other commands: 0 done, 1 a bucket failed (missing,
refused, or refused by strict mode), 2 cannot run.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from rawvault.cli_common import CannotRunError, s3_client, s3_settings
from rawvault.s3.client import S3Client

if TYPE_CHECKING:
    from rawvault.stores import ClientFactory
    from shared.settings import Settings

EXIT_OK = 0
EXIT_FAILED = 1


def add_buckets_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """The ``buckets`` subcommand and its two actions."""
    buckets = commands.add_parser(
        "buckets",
        help="probe what each bucket's S3 store can do, or apply the lifecycle rules to every project bucket",
        description="Work on the project buckets (<bucket_prefix>-<project>): 'probe' measures what each store "
        "can do (conditional writes, checksums, ETags, versioning, Object Lock) and records it; 'apply-lifecycle' "
        "puts backup.s3.lifecycle's rules into existing buckets.",
    )
    actions = buckets.add_subparsers(dest="action", required=True, metavar="{probe,apply-lifecycle}")
    probe = actions.add_parser(
        "probe",
        help="probe buckets again and record the result (writes and deletes a few objects under .rawvault-probe/)",
    )
    which = probe.add_mutually_exclusive_group(required=True)
    which.add_argument("--bucket", help="one bucket")
    which.add_argument("--all", action="store_true", help="every project's bucket")
    probe.add_argument("--json", action="store_true", help="print the result as JSON")
    lifecycle = actions.add_parser(
        "apply-lifecycle", help="put backup.s3.lifecycle's rules into every project bucket (other rules are kept)"
    )
    lifecycle.add_argument("--bucket", help="only this bucket")
    lifecycle.add_argument("--json", action="store_true", help="print the result as JSON")


@dataclass
class _Outcome:
    """What a buckets command did, bucket by bucket."""

    buckets: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def failed(self) -> bool:
        return any(not row["ok"] for row in self.buckets.values())

    def render(self, as_json: bool) -> tuple[int, str]:
        code = EXIT_FAILED if self.failed else EXIT_OK
        if as_json:
            return code, json.dumps(self.buckets, indent=1, default=str)
        lines = []
        for bucket, row in self.buckets.items():
            lines.append(f"{bucket}: {row['result']}")
            lines += [f"  - {item}" for item in row.get("details", [])]
        return code, "\n".join(lines)


def buckets_command(args: argparse.Namespace) -> tuple[int, str]:
    """``rawvault.cli buckets``: the settings and client as every command gets them; ``(exit code, output)``."""
    settings = s3_settings()
    return run_buckets(args, settings, lambda extra: s3_client(settings, 10, extra))


def run_buckets(args: argparse.Namespace, settings: Settings, make_client: ClientFactory) -> tuple[int, str]:
    """Run ``buckets probe`` or ``buckets apply-lifecycle``; ``(exit code, output)``.

    Raises :class:`~rawvault.cli_common.CannotRunError` when it cannot run (settings, database).
    """
    from shared.db.interface import DatabaseError, is_database_error

    try:
        return _run(args, settings, make_client)
    except DatabaseError as error:
        raise CannotRunError(str(error)) from None
    except Exception as error:
        if is_database_error(error):
            reason = f"cannot read or record in the database: {type(error).__name__}: {error}"
            raise CannotRunError(reason) from None
        raise


def _run(args: argparse.Namespace, settings: Settings, make_client: ClientFactory) -> tuple[int, str]:
    from rawvault.stores import project_buckets

    names = [args.bucket] if args.bucket else project_buckets(settings)
    client = make_client(None)
    action = _probe if args.action == "probe" else _apply_lifecycle
    if args.action == "apply-lifecycle" and (settings.backup.s3 is None or settings.backup.s3.lifecycle is None):
        raise CannotRunError(
            f"{settings.source} sets no backup.s3.lifecycle: there are no rules to apply; add the section first"
        )
    outcome = _Outcome()
    for name in names:
        missing = _missing(client, name, named=bool(args.bucket))
        outcome.buckets[name] = missing or action(client, name, settings, make_client)
    return outcome.render(args.json)


def _failure(error: Exception) -> dict[str, Any]:
    return {"ok": False, "result": f"FAILED: {error}"}


def _missing(client: S3Client, bucket: str, *, named: bool) -> dict[str, Any] | None:
    """The row of a bucket that does not exist (or cannot be checked), else ``None``.

    A project bucket that does not exist yet is skipped (it is created, probed and given its rules at its first
    upload); one named with ``--bucket`` is a failure (a typo must not pass as done).
    """
    from rawvault.s3.errors import classify, is_not_found

    try:
        client.head_bucket(Bucket=bucket)
    except Exception as error:
        if not is_not_found(error):
            return _failure(classify(error, f"checking bucket {bucket!r}", bucket=bucket))
        if named:
            return {"ok": False, "result": "FAILED: the bucket does not exist (check the name)"}
        return {"ok": True, "result": "does not exist yet: skipped (it is set up at its first upload)"}
    return None


def _probe(client: S3Client, bucket: str, settings: Settings, make_client: ClientFactory) -> dict[str, Any]:
    from rawvault.s3.capabilities import StoreCapabilityError, require_capabilities
    from rawvault.s3.errors import S3BackupError
    from rawvault.stores import bucket_capabilities

    s3 = settings.backup.s3
    assert s3 is not None
    try:
        caps = bucket_capabilities(client, bucket, settings, refresh=True, make_client=make_client)
    except S3BackupError as error:
        return _failure(error)
    row: dict[str, Any] = {"ok": True, "result": caps.summary()}
    row["details"] = caps.weaknesses(object_lock_required=s3.object_lock is not None) + list(caps.notes)
    row["capabilities"] = caps.to_document()
    if s3.compatibility == "strict":
        try:
            require_capabilities(caps, "strict", object_lock_required=s3.object_lock is not None)
        except StoreCapabilityError as error:
            row.update(ok=False, result=f"REFUSED by compatibility: strict: {error}")
    return row


def _apply_lifecycle(client: S3Client, bucket: str, settings: Settings, _make: Callable[..., Any]) -> dict[str, Any]:
    from rawvault.s3.errors import S3BackupError
    from rawvault.s3.retention import apply_lifecycle

    s3 = settings.backup.s3
    assert s3 is not None and s3.lifecycle is not None
    try:
        rules = apply_lifecycle(client, bucket, s3.lifecycle)
    except S3BackupError as error:
        return _failure(error)
    return {"ok": True, "result": f"{len(rules)} lifecycle rule(s)", "details": [_describe(rule) for rule in rules]}


def _describe(rule: dict[str, Any]) -> str:
    """One line of a lifecycle rule: its id and what rawvault's rules do (another rule is only named)."""
    parts = []
    if "AbortIncompleteMultipartUpload" in rule:
        days = rule["AbortIncompleteMultipartUpload"].get("DaysAfterInitiation")
        parts.append(f"abort incomplete multipart uploads after {days} days")
    for transition in rule.get("Transitions", []):
        parts.append(
            f"move tagged data objects to {transition.get('StorageClass')} after {transition.get('Days')} days"
        )
    if "NoncurrentVersionExpiration" in rule:
        parts.append(
            f"expire noncurrent versions after {rule['NoncurrentVersionExpiration'].get('NoncurrentDays')} days"
        )
    return f"{rule.get('ID', '?')}: {', '.join(parts) if parts else 'a rule of the bucket, kept'}"
