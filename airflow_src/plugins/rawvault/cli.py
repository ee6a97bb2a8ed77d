"""rawvault's command line: restore from S3, audit the S3 backups, preview the purge, list unprotected raw files.

Usage (``scripts/rawvault.sh`` sets ``PYTHONPATH`` and runs this module)::

    python -m rawvault.cli restore <raw_file_id> <target_folder> [--from-manifest s3://<bucket>/<key>]
    python -m rawvault.cli verify [--instrument X] [--project P] [--raw-file-id ID]
                                  [--since YYYY-MM-DD] [--sample N] [--json]
                                  [--read-data [--budget-gb N] [--no-record]]
    python -m rawvault.cli purge --dry-run --instrument X [--json]
    python -m rawvault.cli coverage [--instrument X] [--json]
    python -m rawvault.cli buckets (probe (--bucket B | --all) | apply-lifecycle [--bucket B]) [--json]

Settings come from ``RAWVAULT_ENV`` / ``RAWVAULT_CONFIG``, the database from
``RAWVAULT_MONGO_URI``, the S3 client from the Airflow connection named in
``backup.s3.aws_conn_id`` (``AIRFLOW_CONN_AWS_DEFAULT`` works without an
Airflow metadata database). Results go to stdout, progress and log lines to
stderr.

Exit codes: 0 success; 1 the restore failed (an object missing, corrupted or
replaced, or a different file in the way), verify found drift, the purge
would keep a set because a check failed, coverage found unprotected raw
files, or a bucket failed (:mod:`rawvault.cli_buckets`); 2 the command could not run
(arguments, settings, database, credentials, unknown raw file or manifest).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import sys
from collections.abc import Iterator, Sequence
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING

from rawvault.cli_buckets import add_buckets_parser, buckets_command
from rawvault.cli_common import CannotRunError
from rawvault.cli_common import s3_client as _client
from rawvault.cli_common import s3_settings as _settings
from shared.s3_limits import MIB

if TYPE_CHECKING:
    from shared.settings import Settings

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_CANNOT_RUN = 2

log = logging.getLogger("rawvault.cli")


def _date(text: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a date: write YYYY-MM-DD") from None


def _non_negative(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number of 0 or more")
    return value


def _positive(text: str) -> int:
    value = _non_negative(text)
    if value == 0:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def _check_instrument(settings: Settings, instrument: str) -> None:
    """An instrument id the settings do not know cannot be run: say which ones they know."""
    if instrument not in settings.instruments:
        known = ", ".join(sorted(settings.instruments))
        raise CannotRunError(f"instrument {instrument!r} is not in {settings.source} (instruments: {known})")


@contextlib.contextmanager
def _cannot_run_on(*errors: type[Exception]) -> Iterator[None]:
    """Turn ``errors`` and any database error (pymongo's, mongoengine's, ours) into "cannot run" (exit 2)."""
    from rawvault.cli_setup import database_unreachable
    from shared.db.interface import DatabaseError, is_database_error

    cannot_run: tuple[type[Exception], ...] = (DatabaseError, *errors)
    try:
        yield
    except cannot_run as error:
        raise CannotRunError(str(error)) from None
    except Exception as error:
        if is_database_error(error):
            raise CannotRunError(database_unreachable(error)) from None
        raise


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``python -m rawvault.cli``."""
    parser = argparse.ArgumentParser(
        prog="rawvault",
        description="Restore raw files from their S3 backup and audit the S3 backups against the database.",
        epilog="Exit codes: 0 success, 1 restore failed or drift found, 2 cannot run (arguments, settings, "
        "database, credentials).",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="also show the log lines of boto3 and Airflow")
    commands = parser.add_subparsers(dest="command", required=True, metavar="{restore,verify,purge,coverage,buckets}")

    restore = commands.add_parser(
        "restore",
        help="download a raw file set from S3 into a folder, verifying every file",
        description="Download the files of a raw file from S3 into TARGET (TARGET/<path in the set>), verifying "
        "size, MD5 and ETag of each before it gets its name. Never overwrites a different file; identical files "
        "already in TARGET are kept.",
    )
    restore.add_argument("raw_file_id", help="id of the raw file (its name, e.g. 20261122_sample.d)")
    restore.add_argument("target", type=Path, help="folder to restore into (created if missing)")
    restore.add_argument(
        "--from-manifest",
        metavar="S3_URL",
        help="take the file list from the set's manifest instead of the database (when the database is "
        "unavailable): s3://<bucket>/<key_prefix><raw_file_id>.rawvault-manifest.json, or s3://<bucket>/<key_prefix>/",
    )
    restore.add_argument(
        "--part-size-mb", type=_positive, help="part size of the recorded ETags (default: as recorded)"
    )
    restore.add_argument("--concurrency", type=_positive, default=4, help="parallel ranged downloads (default 4)")
    restore.add_argument(
        "--progress-interval", type=float, default=5.0, help="seconds between progress lines (default 5)"
    )

    _add_verify_command(commands)
    _add_purge_parser(commands)
    _add_coverage_parser(commands)
    add_buckets_parser(commands)
    return parser


# The subcommands that print a report: name -> (one-line summary for --help, description of the command).
REPORT_COMMANDS = {
    "coverage": (
        "list raw files past backup.deadline_hours without a verified backup (exit 1 when any)",
        "List every raw file acquired more than backup.deadline_hours ago without a verified S3 copy "
        "(backup_type local: without a verified local copy), with its status, backup status, age and reason. "
        "Exits 1 when there is any, 0 when there is none.",
    ),
    "verify": (
        "check the S3 backups of upload_done raw files with head_object (--read-data: re-read the data)",
        "Check every upload_done raw file (or those matching the filters, or a random sample) "
        "against S3: each file's object exists with the recorded size and ETag, and the manifest exists. "
        "With --read-data, also download every object (ranged GETs) and re-hash it, and re-hash the local "
        "backup copies, against the recorded checksums (scrubbing; the result is recorded on each raw file). "
        "Exits 1 when anything is missing or different.",
    ),
    "purge": (
        "show what the purge (file_remover) would delete on one instrument, and why every other set is kept",
        "Run every check of the purge on the instrument's moved sets (the share and the local backup "
        "read again, S3 checked by HEAD) and print what a run would delete and why each other set is kept. Deletes "
        "nothing and writes nothing: deleting is the file_remover.<instrument> DAG's job. Exits 1 when a check "
        "keeps a set.",
    ),
}


def _add_report_parser(commands: argparse._SubParsersAction, name: str) -> argparse.ArgumentParser:
    """Report subcommand ``name`` (texts from REPORT_COMMANDS) with ``--json``; the caller adds its own options."""
    summary, description = REPORT_COMMANDS[name]
    report = commands.add_parser(name, help=summary, description=description)
    report.add_argument("--json", action="store_true", help="print the report as JSON instead of a table")
    return report


def _add_coverage_parser(commands: argparse._SubParsersAction) -> None:
    """The ``coverage`` subcommand: raw files past backup.deadline_hours without a verified backup."""
    coverage = _add_report_parser(commands, "coverage")
    coverage.add_argument("--instrument", help="only raw files of this instrument id")


def _add_verify_command(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """The ``verify`` subcommand and its options."""
    verify = _add_report_parser(commands, "verify")
    verify.add_argument("--instrument", help="only raw files of this instrument id")
    verify.add_argument("--project", help="only raw files of this project id")
    verify.add_argument("--raw-file-id", help="only this raw file")
    verify.add_argument("--since", type=_date, help="only raw files created on or after YYYY-MM-DD (UTC)")
    verify.add_argument("--sample", type=_non_negative, help="check N raw files chosen at random (0: all)")
    verify.add_argument("--seed", type=int, help="seed of the random sample (reproducible choice)")
    verify.add_argument(
        "--concurrency", type=_positive, help="raw files checked at a time (default 8; 2 with --read-data)"
    )
    verify.add_argument(
        "--read-data",
        action="store_true",
        help="scrub: download and re-hash the S3 objects (MD5, ETag, SHA-256) and re-hash the local backup copies",
    )
    verify.add_argument(
        "--budget-gb",
        type=_positive_gb,
        help="with --read-data: read at most this many GB, least recently scrubbed raw files first",
    )
    verify.add_argument(
        "--no-record", action="store_true", help="with --read-data: do not record the results on the raw files"
    )


def _positive_gb(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive number of GB")
    return value


def _add_purge_parser(commands: argparse._SubParsersAction) -> None:
    purge = _add_report_parser(commands, "purge")
    purge.add_argument("--dry-run", action="store_true", help="required: report only (the only mode here)")
    purge.add_argument("--instrument", required=True, help="instrument id (as under instruments: in the settings)")


def _restore(args: argparse.Namespace) -> tuple[int, str]:
    from rawvault.restore import PartSizeChoice, restore_raw_file
    from rawvault.s3.download import RestoreError, RestoreSourceError
    from rawvault.s3.errors import S3BackupError
    from rawvault.s3.progress import format_bytes

    settings = _settings(needs_database=not args.from_manifest, restore_id=args.raw_file_id)
    client = _client(settings, args.concurrency + 4)
    try:
        result = restore_raw_file(
            args.raw_file_id,
            args.target,
            client,
            manifest=args.from_manifest,
            part_sizes=PartSizeChoice(args.part_size_mb * MIB if args.part_size_mb else None, settings.part_size_bytes),
            max_concurrency=args.concurrency,
            progress_interval=args.progress_interval,
        )
    except RestoreSourceError as error:
        raise CannotRunError(str(error)) from None
    except (RestoreError, S3BackupError) as error:
        print(f"restore of {args.raw_file_id} FAILED: {error}", file=sys.stderr)
        return EXIT_FAILED, ""
    return EXIT_OK, (
        f"restored {result.raw_file_id} from s3://{result.bucket}/{result.key_prefix} into {result.target_folder}: "
        f"{len(result.restored)} file(s) downloaded and verified ({format_bytes(result.bytes_downloaded)}), "
        f"{len(result.skipped)} already there and identical"
    )


def _verify(args: argparse.Namespace) -> tuple[int, str]:
    from rawvault.audit import AuditSelection, verify_backups
    from rawvault.s3.errors import S3AccessDeniedError
    from rawvault.scrub import DEFAULT_SCRUB_CONCURRENCY, ScrubBudget, scrub_backups
    from shared.settings.alerts import GB

    if (args.budget_gb or args.no_record) and not args.read_data:
        raise CannotRunError("--budget-gb and --no-record go with --read-data")
    if args.budget_gb and args.sample:
        raise CannotRunError("--budget-gb chooses the least recently scrubbed raw files: leave out --sample")
    settings = _settings()
    concurrency = args.concurrency or (DEFAULT_SCRUB_CONCURRENCY if args.read_data else 8)
    client = _client(settings, concurrency + 2)
    selection = AuditSelection(
        instrument=args.instrument, project=args.project, raw_file_id=args.raw_file_id, since=args.since,
        sample=args.sample, seed=args.seed, fallback_project_id=settings.watcher.fallback_project_id,
    )  # fmt: skip
    with _cannot_run_on(S3AccessDeniedError):
        if args.read_data:
            report = scrub_backups(
                client, settings, selection, budget=ScrubBudget(int(args.budget_gb * GB)) if args.budget_gb else None,
                concurrency=concurrency, record=not args.no_record,
            )  # fmt: skip
        else:
            report = verify_backups(
                client, selection, concurrency=concurrency,
                object_lock=settings.backup.s3.object_lock if settings.backup.s3 else None,
            )  # fmt: skip
    if args.raw_file_id and not report.raw_file_ids and not report.notes:
        raise CannotRunError(
            f"raw file {args.raw_file_id!r} is not in the database with backup_status upload_done (and the other "
            "filters): only uploaded raw files have an S3 backup to verify"
        )
    for note in report.notes:
        print(f"note: {note}", file=sys.stderr)
    output = json.dumps(report.as_dict(), indent=1) if args.json else report.table()
    return (EXIT_OK if report.ok and not report.notes else EXIT_FAILED), output


def _purge(args: argparse.Namespace) -> tuple[int, str]:
    from rawvault.purge import PurgeNotPossibleError, purge_instrument
    from shared.settings import purge_policy

    if not args.dry_run:
        raise CannotRunError(
            "the command line only previews a purge: add --dry-run. Deleting is done by the "
            f"file_remover.{args.instrument} DAG (purge.enabled, purge.dry_run: false)"
        )
    settings = _settings(needs_s3=False)
    _check_instrument(settings, args.instrument)
    client = None
    if settings.s3_enabled and purge_policy(settings, args.instrument).requires_s3:
        client = _client(settings, 10)
    with _cannot_run_on(PurgeNotPossibleError):
        report = purge_instrument(args.instrument, settings, dry_run=True, record=False, client=client)
    output = json.dumps(report.as_dict(), indent=1) if args.json else report.table()
    return (EXIT_FAILED if report.held_back else EXIT_OK), output


def _coverage(args: argparse.Namespace) -> tuple[int, str]:
    """Raw files past the deadline without a verified backup: exit 1 when there is any (any backup type)."""
    from rawvault.coverage import coverage_report

    settings = _settings(needs_s3=False)
    if args.instrument:
        _check_instrument(settings, args.instrument)
    with _cannot_run_on():
        report = coverage_report(settings, instrument=args.instrument)
    output = json.dumps(report.as_dict(), indent=1) if args.json else report.table()
    return (EXIT_OK if report.ok else EXIT_FAILED), output


COMMANDS = {"restore": _restore, "verify": _verify, "purge": _purge, "coverage": _coverage, "buckets": buckets_command}


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the exit code."""
    from rawvault.cli_setup import caller_logging_kept, configure_logging

    args = build_parser().parse_args(argv)
    results = sys.stdout
    # Airflow's structlog loggers write to whatever sys.stdout is when they are created: keep stdout for the
    # result (a table, JSON) by running the command with stdout pointing at stderr.
    try:
        with contextlib.redirect_stdout(sys.stderr), caller_logging_kept():
            configure_logging(args.verbose)
            code, output = COMMANDS[args.command](args)
    except CannotRunError as error:
        print(f"rawvault {args.command}: cannot run: {error}", file=sys.stderr)
        return EXIT_CANNOT_RUN
    except KeyboardInterrupt:
        print(f"rawvault {args.command}: interrupted", file=sys.stderr)
        return 130
    if output:
        print(output, file=results)
    return code


if __name__ == "__main__":
    sys.exit(main())
