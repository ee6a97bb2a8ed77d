"""Airflow with the CeleryExecutor, as in a deployment: Redis, PostgreSQL, Airflow components, Celery workers.

Used by the end-to-end test (``tests/integration/test_celery_e2e.py``) and the
load run (``bench/load_celery.py``); everything binds 127.0.0.1 on free ports
and runs as its own process group with its PID in ``<run dir>/pids`` (see
:mod:`devtools.local_stack`), so :func:`stop_celery_stack` (or
``python -m devtools.local_stack stop <run dir>``) ends it all.

- Redis and a private PostgreSQL cluster (:mod:`devtools.stack_servers`).
- The scheduler, dag-processor, api-server and one ``airflow celery worker`` per
  :class:`CeleryWorker`, each serving only its ``--queues``
  (:mod:`devtools.celery_workers`; :func:`rawvault_workers`: instruments and
  file mover, ``s3_uploader``, ``rawvault_maintenance``, as deployed). A worker
  can be killed and started again (:func:`kill_worker`, :func:`restart_worker`).
- :class:`AirflowApi` talks to the api-server (:mod:`devtools.airflow_api`).
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from devtools.airflow_api import AirflowApi, ApiError
from devtools.celery_workers import (
    WORKER_HOSTNAME_ENV,
    WORKER_PREFIX,
    CeleryWorker,
    kill_process_tree,
    node_name,
    pid_file,
    rawvault_workers,
    ready_count,
    start_worker,
    worker_hostname,
)
from devtools.local_stack import StackPaths, StackState, airflow_env, run_airflow, start_process, stop_stack
from devtools.servers import HOST, VENV_BIN
from devtools.stack_servers import (
    PG_ROOT_FILE,
    POSTGRES,
    REDIS,
    PostgresCluster,
    start_postgres,
    start_redis,
    tail,
)

SCHEDULER = "airflow-scheduler"
DAG_PROCESSOR = "airflow-dag-processor"
API_SERVER = "airflow-api-server"
ADMIN_USER = "admin"


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


def celery_env(
    paths: StackPaths, state: StackState, rawvault_env: dict[str, str], redis_url: str, postgres: PostgresCluster
) -> dict[str, str]:
    """The environment of every Airflow process of the stack (its own generated secrets included)."""
    from cryptography.fernet import Fernet

    return airflow_env(
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
            # Readiness is Celery's INFO line "<node> ready.": never inherit a higher level from the caller's
            # environment (a test that ran the CLI in-process once left WARNING there; no worker became ready).
            "AIRFLOW__LOGGING__LOGGING_LEVEL": "INFO",
            # Every component must agree on these; set them rather than rely on a generated airflow.cfg.
            "AIRFLOW__API_AUTH__JWT_SECRET": secrets.token_urlsafe(32),
            "AIRFLOW__API__SECRET_KEY": secrets.token_urlsafe(32),
            "AIRFLOW__CORE__FERNET_KEY": Fernet.generate_key().decode(),
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": f"{ADMIN_USER}:admin",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(passwords_file(paths)),
        },
    )


def passwords_file(paths: StackPaths) -> Path:
    """The simple auth manager's passwords file of the stack (the UI password)."""
    return paths.run_dir / "simple_auth_manager_passwords.json"


def start_celery_stack(
    paths: StackPaths,
    state: StackState,
    *,
    rawvault_env: dict[str, str],
    workers: list[CeleryWorker],
    pools: dict[str, int] | None = None,
    timeout: float = 480.0,  # a loaded 2-core machine needed more than 240 s
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
        passwords_file(paths).write_text(json.dumps({ADMIN_USER: password}))
        env = celery_env(paths, state, rawvault_env, redis_url, postgres)
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
            processes[worker.process_name] = start_worker(paths, env, worker)
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

    pending = list(stack.workers)
    health: dict[str, Any] = {}
    while True:
        stack.check_alive()
        with contextlib.suppress(httpx.HTTPError, ValueError):
            health = httpx.get(f"{stack.state.api_url}/api/v2/monitor/health", timeout=5).json()
        healthy = all(
            (health.get(part) or {}).get("status") == "healthy"
            for part in ("metadatabase", "scheduler", "dag_processor")
        )
        # The whole log, not a tail: a worker that runs the first tasks at once can push the line out of one.
        pending = [worker for worker in pending if ready_count(stack.paths, worker) == 0]
        if healthy and not pending:
            return
        if time.monotonic() > deadline:
            raise RuntimeError(not_ready_message(stack, health, pending))
        time.sleep(1)


READY_TAIL_LINES = 25  # per process: a CI log cut in the middle must still show the workers' tails


def not_ready_message(stack: CeleryStack, health: dict[str, Any], pending: list[CeleryWorker]) -> str:
    """Why the stack is not ready, the workers' own log tails FIRST (then the scheduler's, then the rest).

    CI output cuts long failures in the middle: the tails that explain a worker that never said
    "<node> ready." come before everything else, each short.
    """
    workers = [w.process_name for w in pending] + [w.process_name for w in stack.workers if w not in pending]
    first = [*workers, SCHEDULER]
    rest = [path.stem for path in sorted(stack.paths.logs.glob("*.log")) if path.stem not in first]
    level = stack.env.get("AIRFLOW__LOGGING__LOGGING_LEVEL", "INFO (Airflow's default)")
    return (
        f"the Celery stack was not ready in time: workers that never logged '<node> ready.' (an INFO line; "
        f"logging level {level}): {[f'{w.process_name} ({w.node})' for w in pending] or 'none'}; "
        f"health {health}\n{stack.log_tails([*first, *rest], lines=READY_TAIL_LINES)}"
    )


def kill_worker(stack: CeleryStack, worker: CeleryWorker, sig: int = signal.SIGKILL) -> int:
    """Kill a worker and every process below it (its running tasks too), as a crash or an OOM kill would."""
    return kill_process_tree(stack.processes[worker.process_name], sig)


def restart_worker(stack: CeleryStack, worker: CeleryWorker, timeout: float = 180.0) -> None:
    """Start a killed worker again (same queues and node name) and wait until it says it is ready."""
    ready_before = ready_count(stack.paths, worker)
    pid_file(stack.paths, worker).unlink(missing_ok=True)  # Celery refuses to start over a PID file left behind
    stack.processes[worker.process_name] = start_worker(stack.paths, stack.env, worker)
    deadline = time.monotonic() + timeout
    while ready_count(stack.paths, worker) <= ready_before:
        stack.check_alive()
        if time.monotonic() > deadline:
            raise RuntimeError(f"{worker.process_name} was not ready again within {timeout:.0f} s")
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
    pg_root_file = paths.run_dir / PG_ROOT_FILE
    if pg_root_file.exists():
        shutil.rmtree(pg_root_file.read_text().strip(), ignore_errors=True)
        pg_root_file.unlink()
    return StopReport(
        stopped=stopped, survivors=[f"pid {pid}: {command}" for pid, (_, command) in sorted(survivors.items())]
    )


__all__ = [
    "ADMIN_USER",
    "WORKER_HOSTNAME_ENV",
    "WORKER_PREFIX",
    "AirflowApi",
    "ApiError",
    "CeleryStack",
    "CeleryWorker",
    "PostgresCluster",
    "StopReport",
    "kill_worker",
    "node_name",
    "rawvault_workers",
    "recorded_pids",
    "restart_worker",
    "start_celery_stack",
    "start_postgres",
    "start_redis",
    "stop_celery_stack",
    "tail",
    "worker_hostname",
]
