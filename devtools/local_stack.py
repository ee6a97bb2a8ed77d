"""The embedded stack of the one-command local run: MongoDB wire server, S3 server and Airflow.

Every process is started in its own session with its PID in ``<run dir>/pids``,
so ``stop_stack`` can end each process group, also from a later invocation.
"""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from devtools.servers import HOST, LOCAL_S3_KEY, VENV_BIN, MongoServer, S3Server, free_port

REPO_ROOT = Path(__file__).resolve().parent.parent


@dataclass
class StackPaths:
    """Where the local stack keeps its state (all git-ignored)."""

    run_dir: Path

    @property
    def airflow_home(self) -> Path:
        return self.run_dir / "airflow"

    @property
    def logs(self) -> Path:
        return self.run_dir / "logs"

    @property
    def pids(self) -> Path:
        return self.run_dir / "pids"

    @property
    def state_file(self) -> Path:
        return self.run_dir / "stack.json"


@dataclass
class StackState:
    """Ports and URIs of a running stack."""

    mongo_uri: str
    s3_endpoint: str
    api_port: int
    extra: dict[str, str] = field(default_factory=dict)

    @property
    def api_url(self) -> str:
        return f"http://{HOST}:{self.api_port}"


def aws_connection_uri(
    endpoint_url: str,
    region: str = "us-east-1",
    *,
    access_key_id: str = LOCAL_S3_KEY,
    secret_access_key: str = LOCAL_S3_KEY,
) -> str:
    """``AIRFLOW_CONN_AWS_DEFAULT`` (JSON form) for an S3-compatible server at ``endpoint_url``."""
    return json.dumps(
        {
            "conn_type": "aws",
            "login": access_key_id,
            "password": secret_access_key,
            "extra": {"endpoint_url": endpoint_url, "region_name": region},
        }
    )


def airflow_env(
    paths: StackPaths,
    state: StackState,
    *,
    rawvault_env: dict[str, str],
    executor: str = "LocalExecutor",
    sql_alchemy_conn: str | None = None,
    extra: dict[str, str] | None = None,
) -> dict[str, str]:
    """Environment of every Airflow process of the stack."""
    env = dict(os.environ)
    env.update(
        {
            "AIRFLOW_HOME": str(paths.airflow_home),
            "AIRFLOW__CORE__DAGS_FOLDER": str(REPO_ROOT / "airflow_src" / "dags"),
            "AIRFLOW__CORE__PLUGINS_FOLDER": str(REPO_ROOT / "airflow_src" / "plugins"),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "False",
            "AIRFLOW__CORE__EXECUTOR": executor,
            "AIRFLOW__CORE__PARALLELISM": "4",
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": sql_alchemy_conn or f"sqlite:///{paths.airflow_home / 'airflow.db'}",
            "AIRFLOW__API__HOST": HOST,
            "AIRFLOW__API__PORT": str(state.api_port),
            "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{state.api_url}/execution/",
            "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "10",
            "AIRFLOW__DAG_PROCESSOR__MIN_FILE_PROCESS_INTERVAL": "10",
            "AIRFLOW__SCHEDULER__TASK_QUEUED_TIMEOUT": "600",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": "admin:admin",
            "AIRFLOW_CONN_AWS_DEFAULT": aws_connection_uri(state.s3_endpoint),
            "PYTHONPATH": os.pathsep.join([str(REPO_ROOT), str(REPO_ROOT / "airflow_src" / "plugins")]),
            "RAWVAULT_MONGO_URI": state.mongo_uri,
            "PATH": f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}",
            "NO_PROXY": "127.0.0.1,localhost",
        }
    )
    env.update(rawvault_env)
    env.update(extra or {})
    return env


def start_process(
    paths: StackPaths,
    name: str,
    command: list[str],
    env: dict[str, str],
    *,
    user: str | None = None,
    cwd: Path | None = None,
) -> subprocess.Popen[bytes]:
    """Start ``command`` in its own process group, logging to ``<logs>/<name>.log``; record its PID.

    ``user`` runs it as that OS user and its primary group (needs root; PostgreSQL refuses to run as root).
    """
    paths.logs.mkdir(parents=True, exist_ok=True)
    paths.pids.mkdir(parents=True, exist_ok=True)
    identity: dict = {}
    if user is not None:
        import pwd

        identity = {"user": user, "group": pwd.getpwnam(user).pw_gid, "extra_groups": []}
    with (paths.logs / f"{name}.log").open("ab") as log:
        process = subprocess.Popen(
            command,
            env=env,
            cwd=cwd,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            **identity,
        )
    (paths.pids / f"{name}.pid").write_text(str(process.pid))
    return process


def run_airflow(paths: StackPaths, env: dict[str, str], *args: str, check: bool = True) -> str:
    """Run one ``airflow`` CLI command to completion and return its output."""
    result = subprocess.run(
        [str(VENV_BIN / "airflow"), *args], env=env, capture_output=True, text=True, timeout=600, check=False
    )
    if check and result.returncode != 0:
        raise RuntimeError(f"airflow {' '.join(args)} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}")
    return result.stdout


def wait_for_http(url: str, timeout: float, what: str) -> None:
    """Wait until ``url`` answers (any HTTP status below 500)."""
    deadline = time.monotonic() + timeout
    last_error = ""
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except urllib.error.HTTPError as error:
            if error.code < 500:
                return
            last_error = str(error)
        except OSError as error:
            last_error = str(error)
        time.sleep(1)
    raise RuntimeError(f"{what} did not answer at {url} within {timeout:.0f} s ({last_error})")


def stop_stack(paths: StackPaths, timeout: float = 30.0, names: Iterable[str] | None = None) -> list[str]:
    """Stop every process group recorded under ``paths.pids`` (only ``names``, if given); return the names stopped.

    Stopping in phases (``names``) lets clients end before the servers they use.
    """
    stopped: list[str] = []
    if not paths.pids.is_dir():
        return stopped
    pid_files = sorted(paths.pids.glob("*.pid"))
    if names is not None:
        wanted = set(names)
        pid_files = [pid_file for pid_file in pid_files if pid_file.stem in wanted]
    for pid_file in pid_files:
        pid = int(pid_file.read_text())
        try:
            os.killpg(pid, signal.SIGTERM)
            stopped.append(pid_file.stem)
        except ProcessLookupError:
            pid_file.unlink()
    deadline = time.monotonic() + timeout
    for pid_file in pid_files:
        if not pid_file.exists():
            continue
        pid = int(pid_file.read_text())
        while time.monotonic() < deadline and _group_alive(pid):
            time.sleep(0.2)
        if _group_alive(pid):
            os.killpg(pid, signal.SIGKILL)
        pid_file.unlink(missing_ok=True)
    return stopped


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie leader still counts: reap it if it is our child.
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pgid, os.WNOHANG)
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


def write_env_file(path: Path, values: dict[str, str], *, header: str) -> None:
    """Write ``values`` as ``export NAME='value'`` lines (ready to ``source``), readable by the owner only (0600).

    The file is created with mode 0600 before anything is written, so its credentials (the local demo
    stack's only) are never readable by others, not even for a moment.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    path.unlink(missing_ok=True)
    lines = [f"# {line}" for line in header.splitlines()]
    lines += [f"export {name}={shlex.quote(value)}" for name, value in values.items()]
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "w", encoding="utf-8") as out:
        out.write("\n".join(lines) + "\n")


def start_data_servers(
    paths: StackPaths, *, mongo_credentials: tuple[str, str] | None = None
) -> tuple[MongoServer, S3Server]:
    """Start the MongoDB wire server (data kept in the run dir) and the S3 server; record their PIDs.

    With ``mongo_credentials`` (user, password) MongoDB requires them (``mongo.uri`` carries them).
    """
    mongo = MongoServer(port=free_port(), storage_path=paths.run_dir / "mongo-data", log_path=paths.logs / "mongo.log")
    s3 = S3Server(port=free_port(), log_path=paths.logs / "s3.log")
    for name, server in (("mongo", mongo), ("s3", s3)):
        server.start()
        if name == "mongo" and mongo_credentials:
            mongo.require_auth(*mongo_credentials)
        assert server.process is not None
        paths.pids.mkdir(parents=True, exist_ok=True)
        (paths.pids / f"{name}.pid").write_text(str(server.process.pid))
    return mongo, s3


__all__ = [
    "REPO_ROOT",
    "StackPaths",
    "StackState",
    "airflow_env",
    "aws_connection_uri",
    "run_airflow",
    "start_data_servers",
    "start_process",
    "stop_stack",
    "wait_for_http",
    "write_env_file",
]

if __name__ == "__main__":  # pragma: no cover - manual use: python -m devtools.local_stack stop <run dir>
    if len(sys.argv) == 3 and sys.argv[1] == "stop":
        print("stopped:", ", ".join(stop_stack(StackPaths(Path(sys.argv[2])))) or "nothing was running")
