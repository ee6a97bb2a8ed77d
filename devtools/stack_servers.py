"""The Celery stack's own servers: Redis (the broker) and a private PostgreSQL cluster (the metadata DB).

- Redis (Debian ``redis-server``) is the Celery broker; nothing is persisted.
- PostgreSQL (Debian ``postgresql``) is a private cluster in a temporary folder
  (owned by the ``postgres`` user when we are root: PostgreSQL refuses to run as
  root); it holds the Airflow metadata DB and the Celery result backend.

Both bind 127.0.0.1 on free ports and run as process groups recorded under the
run dir (:func:`devtools.local_stack.start_process`).
"""

from __future__ import annotations

import contextlib
import os
import pwd
import re
import shutil
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from devtools.local_stack import StackPaths, start_process
from devtools.servers import HOST, free_port

REDIS = "redis"
POSTGRES = "postgres"
POSTGRES_OS_USER = "postgres"
DB_NAME = "airflow"
DB_ROLE = "airflow"
PG_ROOT_FILE = "postgres-root"  # in the run dir: where the private cluster lives, for cleanup


def tail(path: Path, lines: int = 40) -> str:
    """The last ``lines`` lines of a text file ('' if it does not exist)."""
    try:
        text = path.read_text(errors="replace")
    except FileNotFoundError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


# ---------------------------------------------------------------- Redis


def start_redis(paths: StackPaths, timeout: float = 30.0) -> str:
    """Start Redis on a free 127.0.0.1 port (no persistence); return its URL."""
    binary = shutil.which("redis-server")
    if not binary:
        raise RuntimeError(
            "redis-server is not installed: run `apt-get install redis-server` (scripts/setup.sh installs it)"
        )
    port = free_port()
    workdir = paths.run_dir / "redis"
    workdir.mkdir(parents=True, exist_ok=True)
    command = [
        binary,
        "--bind", HOST,
        "--port", str(port),
        "--protected-mode", "yes",
        "--save", "",
        "--appendonly", "no",
        "--dir", str(workdir),
        "--daemonize", "no",
    ]  # fmt: skip
    process = start_process(paths, REDIS, command, dict(os.environ))
    url = f"redis://{HOST}:{port}/0"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"redis-server exited with {process.returncode}:\n{tail(paths.logs / 'redis.log')}")
        with contextlib.suppress(OSError), socket.create_connection((HOST, port), timeout=1) as sock:
            sock.sendall(b"PING\r\n")
            if sock.recv(16).startswith(b"+PONG"):
                return url
        time.sleep(0.2)
    raise RuntimeError(f"redis-server did not answer on {HOST}:{port} within {timeout:.0f} s")


# ---------------------------------------------------------------- PostgreSQL


def postgres_bin_dir() -> Path:
    """Folder with ``initdb`` and ``postgres`` (the newest Debian ``/usr/lib/postgresql/<v>/bin``, else PATH)."""

    def version(path: Path) -> tuple[int, ...]:
        return tuple(int(n) for n in re.findall(r"\d+", path.parent.parent.name)) or (0,)

    candidates = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"), key=version)
    if candidates:
        return candidates[-1].parent
    found = shutil.which("initdb")
    if found:
        return Path(found).resolve().parent
    raise RuntimeError(
        "the PostgreSQL server is not installed (no initdb): run `apt-get install postgresql` "
        "(scripts/setup.sh installs it)"
    )


@dataclass
class PostgresCluster:
    """A private PostgreSQL cluster: data and socket folder under ``root``, TCP on 127.0.0.1:``port``."""

    root: Path
    port: int

    def uri(self, driver: str = "postgresql+psycopg2") -> str:
        return f"{driver}://{DB_ROLE}@{HOST}:{self.port}/{DB_NAME}"


def _as_postgres_user(command: list[str]) -> list[str]:
    if os.geteuid() != 0:
        return command
    return ["runuser", "-u", POSTGRES_OS_USER, "--", *command]


def start_postgres(paths: StackPaths, timeout: float = 60.0) -> PostgresCluster:
    """Create and start a private PostgreSQL cluster with database ``airflow`` (trust auth, loopback only)."""
    bin_dir = postgres_bin_dir()
    # Not under the run dir: pytest's temporary folders are 0700 root, which the postgres user cannot enter.
    root = Path(tempfile.mkdtemp(prefix="rawvault-pg-"))
    paths.run_dir.mkdir(parents=True, exist_ok=True)
    (paths.run_dir / PG_ROOT_FILE).write_text(str(root))
    data, sockets = root / "data", root / "sockets"
    sockets.mkdir()
    user = None
    if os.geteuid() == 0:
        try:
            owner = pwd.getpwnam(POSTGRES_OS_USER)
        except KeyError as error:
            raise RuntimeError(
                f"there is no {POSTGRES_OS_USER!r} user to run PostgreSQL as (it refuses to run as root): "
                "install the Debian postgresql package, which creates it"
            ) from error
        for path in (root, sockets):
            os.chown(path, owner.pw_uid, owner.pw_gid)
        user = POSTGRES_OS_USER
    initdb = _as_postgres_user(
        [
            str(bin_dir / "initdb"),
            "-D", str(data),
            "-U", DB_ROLE,
            "--auth=trust",
            "--encoding=UTF8",
            "--locale=C",
            "--no-sync",
            "--no-instructions",
        ]
    )  # fmt: skip
    result = subprocess.run(initdb, cwd=root, capture_output=True, text=True, timeout=120, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"initdb failed ({result.returncode}):\n{result.stdout}\n{result.stderr}")
    port = free_port()
    command = [
        str(bin_dir / "postgres"),
        "-D", str(data),
        "-p", str(port),
        "-k", str(sockets),
        "-c", f"listen_addresses={HOST}",
        # A throw-away test cluster: durability buys nothing here.
        "-c", "fsync=off",
        "-c", "synchronous_commit=off",
        "-c", "full_page_writes=off",
        "-c", "max_connections=200",
    ]  # fmt: skip
    env = {key: value for key, value in os.environ.items() if not key.startswith("PG")}
    process = start_process(paths, POSTGRES, command, env, user=user, cwd=root)
    cluster = PostgresCluster(root=root, port=port)
    deadline = time.monotonic() + timeout
    last_error = ""
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"postgres exited with {process.returncode}:\n{tail(paths.logs / 'postgres.log')}")
        try:
            import psycopg2

            connection = psycopg2.connect(host=HOST, port=port, user=DB_ROLE, dbname="postgres", connect_timeout=2)
        except Exception as error:  # not accepting connections yet
            last_error = str(error)
            time.sleep(0.3)
            continue
        try:
            connection.autocommit = True
            with connection.cursor() as cursor:
                cursor.execute(f"CREATE DATABASE {DB_NAME}")
        finally:
            connection.close()
        return cluster
    raise RuntimeError(f"postgres did not accept connections within {timeout:.0f} s ({last_error})")
