"""Local stand-ins for production services, each run as its own process on 127.0.0.1.

- :class:`MongoServer`: SecantusDB, a MongoDB wire-protocol server (dev and tests only).
- :class:`S3Server`: moto's S3 server over HTTP.

Both bind a free loopback port, can be stopped and restarted on the same port
and data (for fault tests), and are stopped when their context exits.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from types import TracebackType
from urllib.parse import quote

HOST = "127.0.0.1"
LOCAL_S3_KEY = "rawvault-local"  # the local S3 server accepts any credentials; these never leave the machine
LOCAL_S3_REGION = "us-east-1"
VENV_BIN = Path(sys.executable).parent


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


class _ServerProcess:
    name = "server"

    def __init__(self, port: int | None = None, log_path: Path | None = None) -> None:
        self.port = port or free_port()
        self._owns_workdir = log_path is None
        self.workdir = Path(tempfile.mkdtemp(prefix=f"rawvault-{self.name}-")) if log_path is None else log_path.parent
        self.log_path = log_path or self.workdir / f"{self.name}.log"
        self.process: subprocess.Popen[bytes] | None = None

    def command(self) -> list[str]:
        raise NotImplementedError

    def is_ready(self) -> bool:
        raise NotImplementedError

    def environment(self) -> dict[str, str] | None:
        """The server process's environment (None: this process's own)."""
        return None

    def start(self, timeout: float = 60.0) -> None:
        """Start the process and wait until it answers."""
        if self.process and self.process.poll() is None:
            return
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        log = self.log_path.open("ab")
        self.process = subprocess.Popen(
            self.command(),
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            env=self.environment(),
        )
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"{self.name} exited with code {self.process.returncode} on start; see {self.log_path}:\n"
                    + self.log_path.read_text(errors="replace")[-2000:]
                )
            if self.is_ready():
                return
            time.sleep(0.2)
        self.stop()
        raise RuntimeError(
            f"{self.name} did not answer on {HOST}:{self.port} within {timeout:.0f} s; see {self.log_path}"
        )

    def stop(self, kill: bool = False) -> None:
        """Stop the process (SIGKILL with ``kill``, to simulate a crash)."""
        if not self.process or self.process.poll() is not None:
            return
        if kill:
            self.process.kill()
        else:
            self.process.terminate()
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=20)

    def close(self) -> None:
        self.stop()
        if self._owns_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> _ServerProcess:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


class MongoServer(_ServerProcess):
    """SecantusDB (MongoDB wire protocol on WiredTiger) with data in ``storage_path``.

    Without authentication unless :meth:`require_auth` was called; then :attr:`uri` carries the credentials.
    """

    name = "mongo"

    def __init__(self, port: int | None = None, storage_path: Path | None = None, log_path: Path | None = None) -> None:
        super().__init__(port, log_path)
        self.storage_path = storage_path or self.workdir / "data"
        self.credentials: tuple[str, str] | None = None

    @property
    def uri(self) -> str:
        if self.credentials is None:
            return f"mongodb://{HOST}:{self.port}/rawvault?directConnection=true"
        user, password = (quote(part, safe="") for part in self.credentials)
        return f"mongodb://{user}:{password}@{HOST}:{self.port}/rawvault?directConnection=true&authSource=admin"

    def require_auth(self, username: str, password: str) -> None:
        """Create a root user, then restart with ``--auth``: from now on every client must log in (SCRAM-SHA-256)."""
        from pymongo import MongoClient

        client: MongoClient = MongoClient(self.uri, serverSelectionTimeoutMS=5000)
        try:
            client.admin.command("createUser", username, pwd=password, roles=["root"])
        finally:
            client.close()
        self.stop()
        self.credentials = (username, password)
        self.start()

    def command(self) -> list[str]:
        return [
            str(VENV_BIN / "secantusd-py"),
            "--host", HOST,
            "--port", str(self.port),
            "--storage-path", str(self.storage_path),
            "--standalone",
            "--log-level", "WARNING",
            "--cache-size", "256M",
            *(["--auth"] if self.credentials else []),
        ]  # fmt: skip

    def is_ready(self) -> bool:
        from pymongo import MongoClient

        client: MongoClient = MongoClient(self.uri, serverSelectionTimeoutMS=500)
        try:
            client.admin.command("ping")
            return True
        except Exception:
            return False
        finally:
            client.close()


class S3Server(_ServerProcess):
    """moto's S3 server over HTTP (state is in memory: a restart empties it)."""

    name = "s3"

    @property
    def endpoint_url(self) -> str:
        return f"http://{HOST}:{self.port}"

    def command(self) -> list[str]:
        return [str(VENV_BIN / "moto_server"), "-H", HOST, "-p", str(self.port)]

    def is_ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.endpoint_url}/moto-api/", timeout=1):
                return True
        except Exception:
            return False


def local_s3_client(endpoint_url: str, **client_kwargs: object) -> object:
    """A boto3 S3 client for a local S3 server (moto) at ``endpoint_url``, with its dummy credentials."""
    import boto3

    return boto3.client(
        "s3",
        endpoint_url=endpoint_url,
        aws_access_key_id=LOCAL_S3_KEY,
        aws_secret_access_key=LOCAL_S3_KEY,
        region_name=LOCAL_S3_REGION,
        **client_kwargs,
    )
