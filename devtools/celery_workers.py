"""The Celery workers of the stack: which queues each serves, and starting, killing and restarting one.

Airflow records a task instance's ``hostname`` from ``[core] hostname_callable``,
not from the Celery node name: workers on one machine would all report the same
FQDN. Each worker here therefore reports its Celery node name (see
:func:`worker_hostname`), so a test can tell from the task instances which worker
ran what.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from devtools.local_stack import StackPaths, start_process
from devtools.servers import VENV_BIN

WORKER_HOSTNAME_ENV = "RAWVAULT_WORKER_HOSTNAME"
WORKER_PREFIX = "celery-worker-"


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


def worker_env(env: dict[str, str], worker: CeleryWorker) -> dict[str, str]:
    """The stack's environment for one worker: its tasks report its Celery node name as their hostname."""
    return {**env, "AIRFLOW__CORE__HOSTNAME_CALLABLE": f"{__name__}.worker_hostname", WORKER_HOSTNAME_ENV: worker.node}


def worker_command(paths: StackPaths, worker: CeleryWorker) -> list[str]:
    """``airflow celery worker`` serving only the worker's queues."""
    return [
        str(VENV_BIN / "airflow"), "celery", "worker",
        "--queues", ",".join(worker.queues),
        "--celery-hostname", worker.node,
        "--concurrency", str(worker.concurrency),
        "--pid", str(pid_file(paths, worker)),
        # The log server binds every interface (host "" in airflow.utils.serve_logs), and two
        # workers on one host would collide on its port; all task logs are local files here anyway.
        "--skip-serve-logs",
    ]  # fmt: skip


def pid_file(paths: StackPaths, worker: CeleryWorker) -> Path:
    """Celery's own PID file of the worker (a stale one is removed before a restart)."""
    return paths.run_dir / f"{worker.process_name}.airflow-pid"


def start_worker(paths: StackPaths, env: dict[str, str], worker: CeleryWorker) -> subprocess.Popen[bytes]:
    """Start one worker as its own process group (recorded under the run dir, logging to ``<name>.log``)."""
    return start_process(paths, worker.process_name, worker_command(paths, worker), worker_env(env, worker))


def ready_count(paths: StackPaths, worker: CeleryWorker) -> int:
    """How many times the worker's log says it is ready (a restart adds one)."""
    try:
        return (paths.logs / f"{worker.process_name}.log").read_text(errors="replace").count(f"{worker.node} ready.")
    except FileNotFoundError:
        return 0


def kill_process_tree(process: subprocess.Popen[bytes], sig: int = signal.SIGKILL) -> int:
    """Send ``sig`` to a process and everything below it (Celery pool, task supervisors, tasks); return how many."""
    import psutil

    try:
        root = psutil.Process(process.pid)
        tree = [root, *root.children(recursive=True)]
    except psutil.Error:
        return 0
    for member in tree:
        with contextlib.suppress(psutil.Error):
            member.send_signal(sig)
    psutil.wait_procs(tree, timeout=30)
    with contextlib.suppress(Exception):
        process.wait(timeout=5)
    return len(tree)
