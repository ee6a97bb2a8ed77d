"""What the command line needs before it runs: settings, database and S3 connection, all checked at once.

A new user should fix every missing setting in one go, so :func:`missing_setup`
collects every problem (environment, ``RAWVAULT_MONGO_URI``, the Airflow AWS
connection) with a line ready to paste, instead of failing on the first.
:func:`brief_database_error` turns pymongo's multi-line topology dump into one
line. No Airflow import at module level (the connection check imports the
S3 client lazily).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

LOCAL_ENV_FILE = ".rawvault-run/env"  # written by the main job (scripts/run_local.sh), read by scripts/rawvault.sh
ENV_VAR_ENV = "RAWVAULT_ENV"
ENV_VAR_CONFIG = "RAWVAULT_CONFIG"
ENV_VAR_MONGO_URI = "RAWVAULT_MONGO_URI"
ENV_VAR_AIRFLOW_LOGGING_LEVEL = "AIRFLOW__LOGGING__LOGGING_LEVEL"
DEFAULT_AWS_CONN_ID = "aws_default"

# pymongo appends its timeouts and whole topology description to a connection error: everything after these
# markers is noise on a command line.
_DRIVER_NOISE = (" (configured timeouts", ", Timeout:", ", Topology Description:", "\n")


@dataclass(frozen=True)
class Problem:
    """One missing or broken setting: what is wrong and a line to paste that fixes it."""

    what: str
    example: str

    def text(self) -> str:
        """Two lines: the problem, then the example, indented."""
        return f"  - {self.what}\n      {self.example}"


def connection_env_var(aws_conn_id: str) -> str:
    """The environment variable that defines Airflow connection ``aws_conn_id``."""
    return "AIRFLOW_CONN_" + aws_conn_id.upper().replace("-", "_").replace(".", "_")


def connection_example(aws_conn_id: str = DEFAULT_AWS_CONN_ID, region: str = "us-east-1") -> str:
    """A ready-to-paste ``export`` of the AWS connection, with ``endpoint_url`` for an S3-compatible server."""
    value = json.dumps(
        {
            "conn_type": "aws",
            "login": "<access key id>",
            "password": "<secret access key>",
            "extra": {"region_name": region, "endpoint_url": "http://<s3 host>:<port>"},
        }
    )
    return f"export {connection_env_var(aws_conn_id)}='{value}'   # endpoint_url: leave it out for AWS S3"


def _environment_problem() -> Problem | None:
    if os.environ.get(ENV_VAR_CONFIG) or os.environ.get(ENV_VAR_ENV):
        return None
    return Problem(
        f"no rawvault environment selected ({ENV_VAR_ENV} or {ENV_VAR_CONFIG})",
        f"export {ENV_VAR_ENV}=local   # or production, sandbox; or: export {ENV_VAR_CONFIG}=/path/to/settings.yaml",
    )


def _database_problem(restore_id: str | None) -> Problem | None:
    if os.environ.get(ENV_VAR_MONGO_URI):
        return None
    instead = (
        f"; or restore without the database: --from-manifest s3://<bucket>/<key_prefix>{restore_id}"
        ".rawvault-manifest.json"
        if restore_id
        else ""
    )
    return Problem(
        f"{ENV_VAR_MONGO_URI} is not set (the MongoDB of the raw file records){instead}",
        f"export {ENV_VAR_MONGO_URI}='mongodb://<user>:<password>@<host>:27017/rawvault?authSource=admin'",
    )


def _connection_problem(aws_conn_id: str, region: str) -> Problem | None:
    if os.environ.get(connection_env_var(aws_conn_id)):
        return None
    from rawvault.s3.client import connection_exists  # imports Airflow: only when the variable is not set

    if connection_exists(aws_conn_id):
        return None
    return Problem(
        f"the Airflow connection {aws_conn_id!r} (backup.s3.aws_conn_id: the S3 credentials) is not defined",
        connection_example(aws_conn_id, region),
    )


def missing_setup(
    *,
    needs_database: bool,
    needs_s3: bool,
    aws_conn_id: str | None,
    region: str | None,
    restore_id: str | None = None,
) -> list[Problem]:
    """Every setting the command needs that is missing, in the order to fix them.

    ``aws_conn_id``/``region`` come from the settings when they could be read
    (else the defaults); ``restore_id``: a restore, which can do without the
    database. Only absence is checked here; a wrong value fails later with its
    own message.
    """
    problems = [_environment_problem()]
    if needs_database:
        problems.append(_database_problem(restore_id))
    if needs_s3:
        problems.append(_connection_problem(aws_conn_id or DEFAULT_AWS_CONN_ID, region or "us-east-1"))
    return [problem for problem in problems if problem is not None]


def setup_report(problems: list[Problem], repo_root: Path) -> str:
    """The message for ``problems``: each with its example, and the local stack's env file when it exists."""
    lines = [f"{len(problems)} setting(s) missing:" if len(problems) > 1 else "a setting is missing:"]
    lines += [problem.text() for problem in problems]
    env_file = repo_root / LOCAL_ENV_FILE
    if env_file.exists():
        lines.append(f"  the local stack's settings are in {env_file}: scripts/rawvault.sh reads it when none is set")
    else:
        lines.append("  for the local demo stack: bash scripts/run_local.sh writes them to .rawvault-run/env")
    return "\n".join(lines)


def brief_database_error(error: BaseException) -> str:
    """``error`` of the database driver in one line: its type and first sentence, no topology dump."""
    text = str(error)
    for marker in _DRIVER_NOISE:
        text = text.split(marker, 1)[0]
    return f"{type(error).__name__}: {text.strip()[:300]}"


def database_unreachable(error: BaseException, *, restore_id: str | None = None) -> str:
    """One line for a database that cannot be reached; for a restore, how to restore without it."""
    message = f"cannot read the raw files from MongoDB ({brief_database_error(error)}): check {ENV_VAR_MONGO_URI}"
    if restore_id is not None:
        message += (
            f"; or restore without the database: --from-manifest "
            f"s3://<bucket>/<key_prefix>{restore_id}.rawvault-manifest.json"
        )
    else:
        message += " and that MongoDB is running"
    return message


_QUIETED_LOGGERS = ("airflow", "botocore", "boto3", "s3transfer", "urllib3")


@contextlib.contextmanager
def caller_logging_kept() -> Iterator[None]:
    """Put the caller's logging back as it was once the command is done.

    That is ``AIRFLOW__LOGGING__LOGGING_LEVEL``, the root logger's handlers and level, and the levels
    :func:`configure_logging` sets.

    :func:`configure_logging` sets them for the command only. A caller that runs the CLI in its own
    process (a test) would otherwise hand WARNING on to every Airflow process it starts later (the
    workers of a Celery stack then never log their INFO line "<node> ready." and the stack never
    becomes ready: CI, 2026-11-30), and keep a root handler bound to a stderr that is closed later
    ("--- Logging error --- I/O operation on closed file" for every line logged after it).
    """
    before = os.environ.get(ENV_VAR_AIRFLOW_LOGGING_LEVEL)
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    levels = {name: logging.getLogger(name).level for name in ("rawvault", *_QUIETED_LOGGERS)}
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(ENV_VAR_AIRFLOW_LOGGING_LEVEL, None)
        else:
            os.environ[ENV_VAR_AIRFLOW_LOGGING_LEVEL] = before
        root.handlers, root.level = handlers, level
        for name, kept in levels.items():
            logging.getLogger(name).setLevel(kept)


def configure_logging(verbose: bool) -> None:
    """Log lines to stderr (stdout is for results); Airflow's import installs its own handler, replace it."""
    if not verbose:  # Airflow's own info lines (connection lookups) are noise here
        os.environ.setdefault(ENV_VAR_AIRFLOW_LOGGING_LEVEL, "WARNING")
    import airflow  # noqa: F401 - configures logging on import: import it before replacing the handlers

    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(message)s", "%H:%M:%S"))
    root = logging.getLogger()
    root.handlers = [handler]
    root.setLevel(logging.INFO if verbose else logging.WARNING)
    logging.getLogger("rawvault").setLevel(logging.INFO)
    if not verbose:
        for noisy in _QUIETED_LOGGERS:
            logging.getLogger(noisy).setLevel(logging.ERROR)
