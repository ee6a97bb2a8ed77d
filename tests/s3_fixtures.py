"""Fixtures and helpers for the S3 upload tests: a moto S3 server over HTTP, clients, files, expected ETags.

Use from a test module with ``pytest_plugins = ["tests.s3_fixtures"]``.

Two S3 implementations: ``s3_server`` (moto, AWS-like) and ``rclone_s3_server``
(``rclone serve s3``, which differs from AWS the way on-premises stores do; see
:class:`devtools.servers.RcloneS3Server`). A test that takes ``s3_backend`` (or
``backend_bucket``) runs once against each, with ids ``moto`` and ``rclone``.

SSE-KMS: ``kms_s3_server`` is moto's server answering like AWS under SSE-KMS
(:mod:`tests.kms_moto_server`): every object written with ``aws:kms`` gets a new
random ETag, also for the same bytes uploaded again; ``kms_client``/``kms_bucket``
use it. :func:`rewrite_kms_checksums` changes what HeadObject reports as
SHA-256 on one client, for the cases S3 itself never shows (no or a wrong checksum).

Expected checksums are computed here with hashlib, independently of the code
under test: a file of at most ``part_size`` bytes has ETag = its MD5 hex; a
larger one ``md5(concatenated part MD5 digests)-<parts>``.
"""

from __future__ import annotations

import hashlib
import json
import math
import random
import sys
import threading
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.config import Config

from devtools.servers import HOST, RcloneS3Server, S3Server
from rawvault.s3.capability_probe import PROBE_PREFIX
from rawvault.s3.client import client_config
from shared.settings import Settings, parse_settings

KIB = 1024
MIB = 1024 * KIB
PART = 5 * MIB  # S3's minimum part size
REGION = "us-east-1"
CREDENTIALS = {"aws_access_key_id": "testing", "aws_secret_access_key": "testing"}


def write_file(path: Path, size: int, seed: int) -> Path:
    """``size`` reproducible pseudo-random bytes at ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(random.Random(seed).randbytes(size))
    return path


def expected_entry(path: Path, part_size: int = PART) -> list:
    """``[size, md5, etag]`` of ``path``, computed with hashlib."""
    data = path.read_bytes()
    md5 = hashlib.md5(data).hexdigest()
    if len(data) <= part_size:
        return [len(data), md5, md5]
    parts = [data[i : i + part_size] for i in range(0, len(data), part_size)]
    etag = hashlib.md5(b"".join(hashlib.md5(p).digest() for p in parts)).hexdigest()
    assert len(parts) == math.ceil(len(data) / part_size)
    return [len(data), md5, f"{etag}-{len(parts)}"]


def file_info_of(folder: Path, paths: list[str], part_size: int = PART) -> dict[str, list]:
    """``file_info`` of ``paths`` relative to ``folder``."""
    return {p: expected_entry(folder / p, part_size) for p in paths}


def make_thermo_file(folder: Path, name: str = "20261122_thermo1_sample.raw", size: int = 12 * MIB) -> str:
    """A Thermo raw file (one file, 3 parts of 5 MiB by default); returns its relative path."""
    write_file(folder / name, size, seed=1)
    return name


def make_bruker_set(folder: Path, name: str = "20261122_tims1_sample.d") -> list[str]:
    """A Bruker ``.d`` set with nested folders, a multipart file, small files and an empty file."""
    files = {
        f"{name}/analysis.tdf_bin": 11 * MIB,
        f"{name}/analysis.tdf": 300 * KIB,
        f"{name}/chromatography-data.sqlite": 40 * KIB,
        f"{name}/1234.m/method file.method": 9 * KIB,
        f"{name}/1234.m/submethods/ä-param.xml": 2 * KIB,
        f"{name}/empty.txt": 0,
    }
    for seed, (path, size) in enumerate(files.items(), start=10):
        write_file(folder / path, size, seed)
    return sorted(files)


def after_upload_part(client: Any, handler: Any) -> None:
    """Call ``handler(**kwargs)`` after every UploadPart of ``client`` but the capability probe's own parts.

    The probe runs a small multipart upload per bucket and process before the first upload: a test that
    interrupts "the upload" after some parts must not count the probe's.
    """

    def note_key(params: dict[str, Any], context: dict[str, Any], **_kwargs: Any) -> None:
        context["test_key"] = params.get("Key", "")

    def call(context: dict[str, Any], **kwargs: Any) -> None:
        if not str(context.get("test_key", "")).startswith(PROBE_PREFIX):
            handler(context=context, **kwargs)

    client.meta.events.register("before-parameter-build.s3.UploadPart", note_key)
    client.meta.events.register("after-call.s3.UploadPart", call)


class RequestLog:
    """Every S3 operation a client sends (the capability probe's too), with its key or prefix, in order."""

    def __init__(self, client: Any) -> None:
        self.sent: list[tuple[str, str]] = []
        self._lock = threading.Lock()
        client.meta.events.register("before-parameter-build.s3", self._record)

    def _record(self, model: Any, params: dict[str, Any], **_kwargs: Any) -> None:
        with self._lock:
            self.sent.append((model.name, str(params.get("Key", params.get("Prefix", "")))))

    @property
    def calls(self) -> Counter[str]:
        """How often each operation was sent."""
        return Counter(name for name, _key in self.sent)

    def keys_of(self, operation: str) -> list[str]:
        """The keys (prefixes of a listing) ``operation`` was sent for, in order."""
        return [key for name, key in self.sent if name == operation]


class CallCounter:
    """Counts S3 operations (and the keys they touched) made through a client, but the capability probe's."""

    OPERATIONS = (
        "PutObject",
        "CreateMultipartUpload",
        "UploadPart",
        "CompleteMultipartUpload",
        "AbortMultipartUpload",
        "HeadObject",
        "DeleteObject",
    )

    def __init__(self, client: Any) -> None:
        self.calls: Counter[str] = Counter()
        self.keys: list[tuple[str, str]] = []
        self._lock = threading.Lock()  # the files of a set upload side by side
        for operation in self.OPERATIONS:
            client.meta.events.register(f"before-parameter-build.s3.{operation}", self._record)

    def _record(self, model: Any, params: dict[str, Any], **_kwargs: Any) -> None:
        if str(params.get("Key", "")).startswith(PROBE_PREFIX):
            return  # the capability probe's throw-away objects (once per bucket and process)
        with self._lock:
            self.calls[model.name] += 1
            self.keys.append((model.name, params.get("Key", "")))

    def keys_of(self, operation: str) -> list[str]:
        """Keys ``operation`` was called for, in order."""
        return [key for name, key in self.keys if name == operation]

    @property
    def writes(self) -> int:
        """Calls that send object data."""
        return self.calls["PutObject"] + self.calls["UploadPart"] + self.calls["CreateMultipartUpload"]

    def reset(self) -> None:
        self.calls.clear()
        self.keys.clear()


def make_client(endpoint_url: str, *, max_attempts: int = 2, **credentials: str) -> Any:
    """A plain boto3 S3 client for ``endpoint_url`` with rawvault's client config (few retries: fast tests)."""
    config = client_config(16, max_attempts=max_attempts, connect_timeout=2, read_timeout=30)
    return boto3.client(
        "s3", endpoint_url=endpoint_url, region_name=REGION, config=config, **(credentials or CREDENTIALS)
    )


def multipart_uploads(client: Any, bucket: str) -> list[dict[str, Any]]:
    """Every unfinished multipart upload in ``bucket``."""
    return client.list_multipart_uploads(Bucket=bucket).get("Uploads", [])


def object_keys(client: Any, bucket: str) -> list[str]:
    """Every key in ``bucket``."""
    return sorted(obj["Key"] for obj in client.list_objects_v2(Bucket=bucket).get("Contents", []))


@pytest.fixture(scope="session")
def s3_server() -> Iterator[S3Server]:
    """A moto S3 server over HTTP for the whole session (tests use buckets of their own)."""
    with S3Server() as server:
        yield server


class KmsS3Server(S3Server):
    """moto's S3 server with AWS's SSE-KMS ETags: a new random ETag for every object written with ``aws:kms``."""

    name = "s3-kms"

    def command(self) -> list[str]:
        return [sys.executable, str(Path(__file__).with_name("kms_moto_server.py")), "-H", HOST, "-p", str(self.port)]


@pytest.fixture(scope="session")
def kms_s3_server() -> Iterator[KmsS3Server]:
    """The SSE-KMS S3 server for the whole session (tests use buckets of their own)."""
    with KmsS3Server() as server:
        yield server


@pytest.fixture
def kms_client(kms_s3_server: KmsS3Server) -> Any:
    """A fresh boto3 client for the SSE-KMS S3 server."""
    return make_client(kms_s3_server.endpoint_url)


def create_new_bucket(client: Any, prefix: str, *, versioned: bool = True) -> str:
    """Create a new, empty bucket ``<prefix>-<random>`` (versioned unless told not to) and return its name."""
    name = f"{prefix}-{uuid.uuid4().hex[:12]}"
    client.create_bucket(Bucket=name)
    if versioned:
        client.put_bucket_versioning(Bucket=name, VersioningConfiguration={"Status": "Enabled"})
    return name


@pytest.fixture
def kms_bucket(kms_client: Any) -> str:
    """A new, empty, versioned bucket on the SSE-KMS S3 server."""
    return create_new_bucket(kms_client, "rv-kms")


def rewrite_kms_checksums(client: Any, checksum: str | None) -> None:
    """Make ``client``'s HeadObject report ``checksum`` (``None``: no SHA-256 at all) for every SSE-KMS object."""

    def rewrite(parsed: dict[str, Any], **_kwargs: Any) -> None:
        if parsed.get("ServerSideEncryption") == "aws:kms" and "ETag" in parsed:
            if checksum is None:
                parsed.pop("ChecksumSHA256", None)
            else:
                parsed["ChecksumSHA256"] = checksum

    client.meta.events.register("after-call.s3.HeadObject", rewrite)


@pytest.fixture
def s3_client(s3_server: S3Server) -> Any:
    """A fresh boto3 client for the session's S3 server."""
    return make_client(s3_server.endpoint_url)


@pytest.fixture
def bucket(s3_client: Any) -> str:
    """A new, empty, versioned bucket."""
    return create_new_bucket(s3_client, "rv-test")


@pytest.fixture
def counter(s3_client: Any) -> CallCounter:
    """Counts the operations of ``s3_client``."""
    return CallCounter(s3_client)


@dataclass(frozen=True)
class AuthS3:
    """A moto S3 server that checks credentials and IAM policies, with users of limited rights."""

    endpoint_url: str
    bucket: str
    no_rights: dict[str, str]  # credentials of a user without any policy
    no_put: dict[str, str]  # credentials of a user allowed everything on S3 but PutObject


def _credentials(iam: Any, user: str) -> dict[str, str]:
    iam.create_user(UserName=user)
    key = iam.create_access_key(UserName=user)["AccessKey"]
    return {"aws_access_key_id": key["AccessKeyId"], "aws_secret_access_key": key["SecretAccessKey"]}


@pytest.fixture(scope="session")
def auth_s3() -> Iterator[AuthS3]:
    """
    moto with authentication on (``INITIAL_NO_AUTH_ACTION_COUNT``): the first 6 requests set up a
    bucket and two IAM users unauthenticated; after that every request is checked, so unknown keys
    get ``InvalidAccessKeyId`` and policy denials ``AccessDenied`` / 403, as on AWS.
    """
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("INITIAL_NO_AUTH_ACTION_COUNT", "6")
        server = S3Server()
        server.start()
    try:
        iam = boto3.client("iam", endpoint_url=server.endpoint_url, region_name=REGION, **CREDENTIALS)
        boto3.client("s3", endpoint_url=server.endpoint_url, region_name=REGION, **CREDENTIALS).create_bucket(
            Bucket="rv-auth-bucket"
        )  # 1
        no_rights = _credentials(iam, "no-rights")  # 2, 3
        no_put = _credentials(iam, "no-put")  # 4, 5
        policy = {
            "Version": "2012-10-17",
            "Statement": [
                {"Effect": "Allow", "Action": "s3:*", "Resource": "*"},
                {"Effect": "Deny", "Action": "s3:PutObject", "Resource": "*"},
            ],
        }
        iam.put_user_policy(UserName="no-put", PolicyName="no-put", PolicyDocument=json.dumps(policy))  # 6
        yield AuthS3(server.endpoint_url, "rv-auth-bucket", no_rights, no_put)
    finally:
        server.close()


S3_BACKENDS = ("moto", "rclone")


@dataclass(frozen=True)
class S3Backend:
    """One S3 implementation under test: which (``moto`` or ``rclone``), where, with which keys."""

    name: str
    endpoint_url: str
    credentials: dict[str, str]
    versioning: bool  # whether the server implements bucket versioning
    verify: str | bool = True  # boto3's ``verify`` (a CA bundle for a TLS test server)

    def client(self, *, max_attempts: int = 2, config: Config | None = None) -> Any:
        """A boto3 client with rawvault's client config (few retries), ``config`` merged on top."""
        base = client_config(16, max_attempts=max_attempts, connect_timeout=2, read_timeout=30)
        return boto3.client(
            "s3",
            endpoint_url=self.endpoint_url,
            region_name=REGION,
            config=base.merge(config) if config else base,
            verify=self.verify,
            **self.credentials,
        )

    def new_bucket(self, client: Any | None = None, *, versioned: bool = True) -> str:
        """A new, empty bucket (versioned where the server can)."""
        return create_new_bucket(client or self.client(), f"rv-{self.name}", versioned=versioned and self.versioning)


@pytest.fixture(scope="session")
def rclone_s3_server() -> Iterator[RcloneS3Server]:
    """``rclone serve s3`` over HTTP for the whole session (tests use buckets of their own)."""
    with RcloneS3Server() as server:
        yield server


def backend_of(name: str, server: S3Server | RcloneS3Server) -> S3Backend:
    """The :class:`S3Backend` of a running moto or rclone server."""
    if isinstance(server, RcloneS3Server):
        return S3Backend(name, server.endpoint_url, server.credentials, versioning=False, verify=server.ca_bundle)
    return S3Backend(name, server.endpoint_url, dict(CREDENTIALS), versioning=True)


@pytest.fixture(params=S3_BACKENDS)
def s3_backend(request: pytest.FixtureRequest) -> S3Backend:
    """Each S3 implementation in turn (ids ``moto``, ``rclone``); only the one a test runs against is started."""
    server = request.getfixturevalue("s3_server" if request.param == "moto" else "rclone_s3_server")
    return backend_of(request.param, server)


@pytest.fixture
def backend_bucket(s3_backend: S3Backend) -> str:
    """A new, empty bucket on ``s3_backend`` (versioned where it can be)."""
    return s3_backend.new_bucket()


def make_settings(tmp_path: Path, bucket_prefix: str, **s3: Any) -> Settings:
    """S3 settings for tests: 5 MiB parts, the backup under ``tmp_path/backup``."""
    return parse_settings(settings_document(tmp_path, bucket_prefix, **s3), tmp_path / "rawvault.test.yaml")


def settings_document(tmp_path: Path, bucket_prefix: str, **s3: Any) -> dict[str, Any]:
    """The YAML document behind :func:`make_settings` (to write it to a file)."""
    return {
        "instruments": {
            "thermo1": {"type": "thermo", "path": str(tmp_path / "instruments" / "thermo1")},
            "tims1": {"type": "bruker", "path": str(tmp_path / "instruments" / "tims1")},
        },
        "locations": {"backup": str(tmp_path / "backup")},
        "backup": {
            "backup_type": "s3",
            "s3": {"region": REGION, "bucket_prefix": bucket_prefix, "part_size_mb": 5, **s3},
        },
    }


def unique_prefix() -> str:
    """A bucket prefix of its own for one test (the S3 server is shared)."""
    return f"rv{uuid.uuid4().hex[:10]}"
