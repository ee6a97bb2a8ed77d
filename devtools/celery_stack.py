"""Airflow with the CeleryExecutor, as in a deployment: Redis, PostgreSQL, Airflow components, Celery workers.

Used by the end-to-end test (``tests/integration/test_celery_e2e.py``); everything
binds 127.0.0.1 on free ports and runs as its own process group with its PID in
``<run dir>/pids`` (see :mod:`devtools.local_stack`), so :func:`stop_celery_stack`
(or ``python -m devtools.local_stack stop <run dir>``) ends it all.

- Redis (Debian ``redis-server``) is the Celery broker; nothing is persisted.
- PostgreSQL (Debian ``postgresql``) is a private cluster in a temporary folder
  (owned by the ``postgres`` user when we are root: PostgreSQL refuses to run as
  root); it holds the Airflow metadata DB and the Celery result backend.
- The scheduler, dag-processor, api-server and one ``airflow celery worker`` per
  :class:`CeleryWorker`, each serving only its ``--queues`` (:func:`rawvault_workers`:
  instruments and file mover, ``s3_uploader``, ``rawvault_maintenance``, as deployed).

Airflow records a task instance's ``hostname`` from ``[core] hostname_callable``,
not from the Celery node name: workers on one machine would all report the same
FQDN. Each worker here therefore reports its Celery node name (see
:func:`worker_hostname`), so a test can tell from the task instances which worker
ran what.
"""

from __future__ import annotations

import contextlib
import json
import os
import pwd
import re
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from devtools.local_stack import (
    StackPaths,
    StackState,
    airflow_env,
    run_airflow,
    start_process,
    stop_stack,
)
from devtools.servers import HOST, VENV_BIN, free_port

WORKER_HOSTNAME_ENV = "RAWVAULT_WORKER_HOSTNAME"
REDIS = "redis"
POSTGRES = "postgres"
SCHEDULER = "airflow-scheduler"
DAG_PROCESSOR = "airflow-dag-processor"
API_SERVER = "airflow-api-server"
WORKER_PREFIX = "celery-worker-"
POSTGRES_OS_USER = "postgres"
DB_NAME = "airflow"
DB_ROLE = "airflow"
ADMIN_USER = "admin"
_PG_ROOT_FILE = "postgres-root"  # in the run dir: where the private cluster lives, for cleanup


def worker_hostname() -> str:
    """``[core] hostname_callable`` of the stack's workers: the worker's Celery node name.

    Falls back to the FQDN (Airflow's default) outside a worker started here.
    """
    return os.environ.get(WORKER_HOSTNAME_ENV) or socket.getfqdn()


@dataclass(frozen=True)
class CeleryWorker:
    """One ``airflow celery worker``: its process name, Celery node name and queues."""

    name: str
    node: str
    queues: tuple[str, ...]
    concurrency: int = 2

    @property
    def process_name(self) -> str:
        return f"{WORKER_PREFIX}{self.name}"


def rawvault_workers(
    settings: Any, *, instrument_concurrency: int = 2, s3_concurrency: int = 2, maintenance_concurrency: int = 1
) -> list[CeleryWorker]:
    """The workers of a deployment (as ``docker-compose.yaml`` runs them), on one machine.

    One worker for every instrument queue and the file mover (compose has one per
    instrument; here they share one to save memory), the ``s3_uploader`` worker
    (``s3_concurrency``: keep it equal to the ``s3_upload_pool`` slots) and the
    maintenance worker (sweeper, re-drive, verifier, alerts), each serving only its queues.
    """
    from rawvault.keys import FILE_MOVER_QUEUE, MAINTENANCE_QUEUE, S3_UPLOADER_QUEUE

    instrument_queues = (*(settings.queue(i) for i in settings.instruments), settings.queue(FILE_MOVER_QUEUE))
    return [
        CeleryWorker("instrument", node_name("instrument-worker"), instrument_queues, instrument_concurrency),
        CeleryWorker("s3", node_name("s3-worker"), (settings.queue(S3_UPLOADER_QUEUE),), s3_concurrency),
        CeleryWorker(
            "maintenance",
            node_name("maintenance-worker"),
            (settings.queue(MAINTENANCE_QUEUE),),
            maintenance_concurrency,
        ),
    ]


def node_name(label: str) -> str:
    """A Celery node name ``<label>@<this host>`` (what ``--celery-hostname <label>@%h`` gives)."""
    return f"{label}@{socket.gethostname()}"


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
    (paths.run_dir / _PG_ROOT_FILE).write_text(str(root))
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


# ---------------------------------------------------------------- the Airflow REST API


class AirflowApi:
    """A small client of the Airflow 3 REST API (``/api/v2``) with a simple-auth-manager token."""

    def __init__(self, base_url: str, username: str, password: str) -> None:
        import httpx

        self._client = httpx.Client(base_url=base_url, timeout=30.0)
        self._username, self._password = username, password
        self._token: str | None = None

    def token(self) -> str:
        """A JWT from ``POST /auth/token`` (201 ``{"access_token": ...}``)."""
        response = self._client.post("/auth/token", json={"username": self._username, "password": self._password})
        if response.status_code != 201:
            raise RuntimeError(f"POST /auth/token answered {response.status_code}: {response.text[:500]}")
        return response.json()["access_token"]

    def request(self, method: str, path: str, **kwargs: Any) -> Any:
        """Call ``path`` with the token (fetched again once on 401); return the JSON body or raise."""
        for attempt in range(2):
            if self._token is None:
                self._token = self.token()
            response = self._client.request(method, path, headers={"Authorization": f"Bearer {self._token}"}, **kwargs)
            if response.status_code == 401 and attempt == 0:
                self._token = None
                continue
            if response.status_code >= 400:
                raise ApiError(method, path, response.status_code, response.text)
            return response.json() if response.content else None
        raise AssertionError("unreachable")

    def get(self, path: str, **params: Any) -> Any:
        return self.request("GET", path, params=params or None)

    def post(self, path: str, body: dict[str, Any]) -> Any:
        return self.request("POST", path, json=body)

    def patch(self, path: str, body: dict[str, Any]) -> Any:
        return self.request("PATCH", path, json=body)

    def close(self) -> None:
        self._client.close()


class ApiError(RuntimeError):
    """The Airflow REST API answered with an error status."""

    def __init__(self, method: str, path: str, status: int, text: str) -> None:
        super().__init__(f"{method} {path} answered {status}: {text[:1000]}")
        self.status = status


# ---------------------------------------------------------------- the stack


@dataclass
class CeleryStack:
    """A running CeleryExecutor stack."""

    paths: StackPaths
    state: StackState
    env: dict[str, str]
    redis_url: str
    postgres: PostgresCluster
    workers: list[CeleryWorker]
    api: AirflowApi
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    @property
    def airflow_process_names(self) -> list[str]:
        return [SCHEDULER, DAG_PROCESSOR, API_SERVER, *(w.process_name for w in self.workers)]

    def check_alive(self) -> None:
        """Raise naming the first Airflow process that has exited, with the tail of its log."""
        for name, process in self.processes.items():
            if process.poll() is not None:
                raise RuntimeError(
                    f"{name} exited with code {process.returncode}; {self.paths.logs / (name + '.log')}:\n"
                    + tail(self.paths.logs / f"{name}.log", 60)
                )

    def log_tails(self, names: list[str] | None = None, lines: int = 25) -> str:
        """The tails of the stack's process logs (all, or ``names``), for failure messages."""
        chosen = names or [path.stem for path in sorted(self.paths.logs.glob("*.log"))]
        return "\n".join(
            f"--- {name}.log (last {lines} lines)\n{tail(self.paths.logs / f'{name}.log', lines)}" for name in chosen
        )

    def task_log(self, dag_id: str, run_id: str, task_id: str, try_number: int | None = None, lines: int = 40) -> str:
        """The tail of a task attempt's log file (the latest attempt if ``try_number`` is None)."""
        folder = self.paths.airflow_home / "logs" / f"dag_id={dag_id}" / f"run_id={run_id}" / f"task_id={task_id}"
        attempts = sorted(folder.glob("attempt=*.log")) if folder.is_dir() else []
        if try_number is not None:
            attempts = [a for a in attempts if a.name == f"attempt={try_number}.log"]
        if not attempts:
            return f"(no log under {folder})"
        return f"--- {attempts[-1]}\n" + tail(attempts[-1], lines)


def start_celery_stack(
    paths: StackPaths,
    state: StackState,
    *,
    rawvault_env: dict[str, str],
    workers: list[CeleryWorker],
    pools: dict[str, int] | None = None,
    timeout: float = 240.0,
) -> CeleryStack:
    """Start Redis, PostgreSQL and Airflow (CeleryExecutor) with ``workers``; wait until all are ready.

    ``state`` names the MongoDB and S3 servers (already running) and the api-server's port.
    On any error every process recorded under ``paths`` (the caller's servers too) is stopped.
    """
    deadline = time.monotonic() + timeout
    try:
        redis_url = start_redis(paths)
        postgres = start_postgres(paths)
        password = secrets.token_urlsafe(12)
        passwords_file = paths.run_dir / "simple_auth_manager_passwords.json"
        passwords_file.write_text(json.dumps({ADMIN_USER: password}))
        from cryptography.fernet import Fernet

        env = airflow_env(
            paths,
            state,
            rawvault_env=rawvault_env,
            executor="CeleryExecutor",
            sql_alchemy_conn=postgres.uri(),
            extra={
                "AIRFLOW__CELERY__BROKER_URL": redis_url,
                "AIRFLOW__CELERY__RESULT_BACKEND": "db+" + postgres.uri("postgresql"),
                # One sync process: this machine has two cores and everything runs on it.
                "AIRFLOW__CELERY__SYNC_PARALLELISM": "1",
                "AIRFLOW__API__WORKERS": "1",
                # Every component must agree on these; set them rather than rely on a generated airflow.cfg.
                "AIRFLOW__API_AUTH__JWT_SECRET": secrets.token_urlsafe(32),
                "AIRFLOW__API__SECRET_KEY": secrets.token_urlsafe(32),
                "AIRFLOW__CORE__FERNET_KEY": Fernet.generate_key().decode(),
                "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": f"{ADMIN_USER}:admin",
                "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(passwords_file),
            },
        )
        run_airflow(paths, env, "db", "migrate")
        for pool, slots in (pools or {}).items():
            run_airflow(paths, env, "pools", "set", pool, str(slots), "rawvault (celery stack)")
        airflow = str(VENV_BIN / "airflow")
        processes = {
            SCHEDULER: start_process(paths, SCHEDULER, [airflow, "scheduler"], env),
            DAG_PROCESSOR: start_process(paths, DAG_PROCESSOR, [airflow, "dag-processor"], env),
            API_SERVER: start_process(
                paths,
                API_SERVER,
                [airflow, "api-server", "--host", HOST, "--port", str(state.api_port), "--workers", "1"],
                env,
            ),
        }
        for worker in workers:
            worker_env = {
                **env,
                "AIRFLOW__CORE__HOSTNAME_CALLABLE": f"{__name__}.worker_hostname",
                WORKER_HOSTNAME_ENV: worker.node,
            }
            command = [
                airflow, "celery", "worker",
                "--queues", ",".join(worker.queues),
                "--celery-hostname", worker.node,
                "--concurrency", str(worker.concurrency),
                "--pid", str(paths.run_dir / f"{worker.process_name}.airflow-pid"),
                # The log server binds every interface (host "" in airflow.utils.serve_logs), and two
                # workers on one host would collide on its port; all task logs are local files here anyway.
                "--skip-serve-logs",
            ]  # fmt: skip
            processes[worker.process_name] = start_process(paths, worker.process_name, command, worker_env)
        stack = CeleryStack(
            paths=paths,
            state=state,
            env=env,
            redis_url=redis_url,
            postgres=postgres,
            workers=workers,
            api=AirflowApi(state.api_url, ADMIN_USER, password),
            processes=processes,
        )
        _wait_until_ready(stack, deadline)
        return stack
    except BaseException:
        stop_celery_stack(paths)
        raise


def _wait_until_ready(stack: CeleryStack, deadline: float) -> None:
    """Wait for a healthy api-server, scheduler and dag-processor and for every worker's 'ready'."""
    import httpx

    pending_workers = {w.process_name: w.node for w in stack.workers}
    health: dict[str, Any] = {}
    while True:
        stack.check_alive()
        with contextlib.suppress(httpx.HTTPError, ValueError):
            health = httpx.get(f"{stack.state.api_url}/api/v2/monitor/health", timeout=5).json()
        healthy = all(
            (health.get(part) or {}).get("status") == "healthy"
            for part in ("metadatabase", "scheduler", "dag_processor")
        )
        for name, node in list(pending_workers.items()):
            if f"{node} ready." in tail(stack.paths.logs / f"{name}.log", 400):
                del pending_workers[name]
        if healthy and not pending_workers:
            return
        if time.monotonic() > deadline:
            raise RuntimeError(
                f"the Celery stack was not ready in time: health {health}, workers not ready: "
                f"{sorted(pending_workers) or 'none'}\n{stack.log_tails()}"
            )
        time.sleep(1)


@dataclass
class StopReport:
    """What :func:`stop_celery_stack` stopped and which processes outlived their process group's stop."""

    stopped: list[str]
    survivors: list[str]


def _descendants(pids: list[int]) -> dict[int, tuple[float, str]]:
    """Every live process below (and including) ``pids``: pid -> (create time, command line)."""
    import psutil

    found: dict[int, tuple[float, str]] = {}
    for pid in pids:
        try:
            root = psutil.Process(pid)
            for process in [root, *root.children(recursive=True)]:
                with contextlib.suppress(psutil.Error):
                    found[process.pid] = (process.create_time(), " ".join(process.cmdline())[:160])
        except psutil.Error:
            continue
    return found


def _still_running(processes: dict[int, tuple[float, str]]) -> dict[int, tuple[float, str]]:
    import psutil

    alive = {}
    for pid, (created, command) in processes.items():
        with contextlib.suppress(psutil.Error):
            process = psutil.Process(pid)
            if process.create_time() == created and process.status() != psutil.STATUS_ZOMBIE:
                alive[pid] = (created, command)
    return alive


def recorded_pids(paths: StackPaths) -> dict[str, int]:
    """Name -> PID of every process recorded under ``paths.pids``."""
    if not paths.pids.is_dir():
        return {}
    return {pid_file.stem: int(pid_file.read_text()) for pid_file in sorted(paths.pids.glob("*.pid"))}


def stop_celery_stack(paths: StackPaths, timeout: float = 60.0) -> StopReport:
    """Stop the stack in order: Airflow (workers finish their tasks), then the servers; remove the PG cluster.

    Every process below a recorded PID (Celery pool processes, task processes that
    made a process group of their own, PostgreSQL backends) is noted first; any
    that survives the stop is killed and reported in :attr:`StopReport.survivors`.
    """
    pids = recorded_pids(paths)
    before = _descendants(list(pids.values()))
    servers = {REDIS, POSTGRES, "mongo", "s3"}
    clients = [name for name in pids if name not in servers]
    stopped = stop_stack(paths, timeout=timeout, names=clients)
    if POSTGRES in pids:
        # Fast shutdown: SIGTERM (smart) would wait for every client session to end.
        with contextlib.suppress(ProcessLookupError):
            os.kill(pids[POSTGRES], signal.SIGINT)
    stopped += stop_stack(paths, timeout=timeout)
    survivors = _still_running(before)
    for pid in survivors:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    pg_root_file = paths.run_dir / _PG_ROOT_FILE
    if pg_root_file.exists():
        shutil.rmtree(pg_root_file.read_text().strip(), ignore_errors=True)
        pg_root_file.unlink()
    return StopReport(
        stopped=stopped, survivors=[f"pid {pid}: {command}" for pid, (_, command) in sorted(survivors.items())]
    )


__all__ = [
    "AirflowApi",
    "ApiError",
    "CeleryStack",
    "CeleryWorker",
    "PostgresCluster",
    "StopReport",
    "node_name",
    "rawvault_workers",
    "recorded_pids",
    "start_celery_stack",
    "start_postgres",
    "start_redis",
    "stop_celery_stack",
    "tail",
    "worker_hostname",
]
