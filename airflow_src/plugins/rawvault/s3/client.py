"""The boto3 S3 client, with credentials from an Airflow AWS connection.

This is the only module of :mod:`rawvault.s3` that imports Airflow: everything
else takes a client, so it runs with a plain boto3 client in tests.

- Credentials, ``endpoint_url`` (MinIO, a local S3 server) and optional
  ``config_kwargs`` come from the connection (``AwsBaseHook``); they are never
  logged.
- The region is ``backup.s3.region`` (it wins over the connection's ``region_name``).
- Retries: botocore's ``standard`` mode retries throttling (``SlowDown``), 5xx
  answers and connection errors with exponential backoff and jitter; it never
  retries authentication or permission errors (403), so those fail at once.
- Flexible checksums: botocore computes a checksum of every request body that
  supports one and S3 validates it (``request_checksum_calculation=when_supported``);
  the uploader asks for SHA-256 explicitly.
- Bucket owner: with ``backup.s3.expected_bucket_owner`` every request of the
  client that takes ``ExpectedBucketOwner`` (botocore's S3 model: every bucket
  and object operation but CreateBucket and ListBuckets) carries it
  (:func:`expect_bucket_owner`, one event handler; s3transfer's downloads go
  through the same client), so S3 refuses (403) to read or write a bucket of
  another account; such a refusal becomes a
  :class:`~rawvault.s3.errors.BucketOwnerMismatchError`.
"""

from __future__ import annotations

import logging
import re
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit, urlunsplit

from botocore.config import Config

from rawvault.s3.errors import EXPECTED_OWNER_FIELD, S3PermanentError

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

    from shared.settings import S3Settings
else:
    S3Client = Any  # the boto3 type stubs are a development dependency; every module takes the client type from here

log = logging.getLogger(__name__)

RETRY_MODE = "standard"
MAX_ATTEMPTS = 8  # in total: the first try and 7 retries, backoff with jitter capped at 20 s by botocore
CONNECT_TIMEOUT_SECONDS = 10.0
# Socket read timeout: generous, S3 may take a while to answer CompleteMultipartUpload of a large object.
READ_TIMEOUT_SECONDS = 300.0


def client_config(
    max_pool_connections: int,
    *,
    retry_mode: str = RETRY_MODE,
    max_attempts: int = MAX_ATTEMPTS,
    connect_timeout: float = CONNECT_TIMEOUT_SECONDS,
    read_timeout: float = READ_TIMEOUT_SECONDS,
) -> Config:
    """The botocore config of rawvault's S3 client (retries, timeouts, pool size, checksums).

    ``max_attempts`` counts every attempt of a request, the first one included.
    """
    return Config(
        retries={"mode": retry_mode, "total_max_attempts": max_attempts},
        connect_timeout=connect_timeout,
        read_timeout=read_timeout,
        # One connection per transfer thread plus a few for HEAD/abort calls.
        max_pool_connections=max(10, max_pool_connections),
        tcp_keepalive=True,
        request_checksum_calculation="when_supported",
        response_checksum_validation="when_supported",
    )


OWNER_PARAMETER = "ExpectedBucketOwner"
_OWNER_CONTEXT = "rawvault_expected_bucket_owner"
AWS_ACCOUNT_ID = re.compile(r"[0-9]{12}")


def expect_bucket_owner(client: Any, account_id: str | None) -> None:
    """Send ``ExpectedBucketOwner=account_id`` with every request of ``client`` whose operation takes it.

    Idempotent (one handler per client). A 403 answer to such a request gets
    the owner noted in its error (``EXPECTED_OWNER_FIELD``), so
    :func:`~rawvault.s3.errors.classify` can say that the bucket may belong to
    another account. ``None`` (stores without AWS accounts) does nothing.
    """
    if not account_id:
        return
    if not AWS_ACCOUNT_ID.fullmatch(account_id):
        raise S3PermanentError(
            f"expected bucket owner {account_id!r} is not an AWS account id: set backup.s3.expected_bucket_owner to "
            "the 12 digits of the account that owns the buckets"
        )

    def add_owner(params: dict[str, Any], model: Any, context: dict[str, Any], **_kwargs: Any) -> None:
        shape = model.input_shape
        if shape is not None and OWNER_PARAMETER in shape.members:
            params.setdefault(OWNER_PARAMETER, account_id)
            context[_OWNER_CONTEXT] = params[OWNER_PARAMETER]

    def note_owner(http_response: Any, parsed: dict[str, Any], context: dict[str, Any], **_kwargs: Any) -> None:
        if getattr(http_response, "status_code", None) == 403 and context.get(_OWNER_CONTEXT):
            parsed.setdefault("Error", {})[EXPECTED_OWNER_FIELD] = context[_OWNER_CONTEXT]

    events = client.meta.events
    events.register("before-parameter-build.s3", add_owner, unique_id="rawvault-expected-bucket-owner")
    events.register("after-call.s3", note_owner, unique_id="rawvault-expected-bucket-owner-error")


def redact_url(url: str | None) -> str:
    """``url`` without any ``user:password@`` part, for logs."""
    if not url:
        return "<AWS default endpoint>"
    parts = urlsplit(url)
    netloc = parts.hostname or ""
    if parts.port:
        netloc += f":{parts.port}"
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


def connection_exists(aws_conn_id: str) -> bool:
    """Whether Airflow can find connection ``aws_conn_id`` (environment variable, secrets backend or database)."""
    from airflow.providers.amazon.aws.hooks.base_aws import AwsBaseHook
    from airflow.providers.common.compat.sdk import AirflowNotFoundException

    try:
        AwsBaseHook.get_connection(aws_conn_id)
    except AirflowNotFoundException:
        return False
    return True


def s3_client_from_connection(
    aws_conn_id: str,
    region: str,
    max_pool_connections: int = 10,
    *,
    retry_mode: str = RETRY_MODE,
    max_attempts: int = MAX_ATTEMPTS,
    connect_timeout: float = CONNECT_TIMEOUT_SECONDS,
    read_timeout: float = READ_TIMEOUT_SECONDS,
    expected_bucket_owner: str | None = None,
    extra_config: Config | None = None,
) -> S3Client:
    """A boto3 S3 client with the credentials and endpoint of Airflow connection ``aws_conn_id``.

    A missing connection is an error (rawvault takes credentials only from
    the Airflow connection). ``extra_config`` (what the store needs, e.g.
    :func:`rawvault.s3.capabilities.botocore_config_for`) is merged over
    rawvault's client config, and ``config_kwargs`` in the connection's extra
    over both (e.g. ``{"s3": {"addressing_style": "path"}}``): a person's
    explicit setting wins. With ``expected_bucket_owner`` every request
    carries it (:func:`expect_bucket_owner`).
    """
    from airflow.providers.amazon.aws.hooks.base_aws import AwsBaseHook
    from airflow.providers.common.compat.sdk import AirflowNotFoundException

    hook = AwsBaseHook(aws_conn_id=aws_conn_id, client_type="s3", region_name=region)
    try:
        hook.get_connection(aws_conn_id)
    except AirflowNotFoundException:
        raise S3PermanentError(
            f"the Airflow connection {aws_conn_id!r} (backup.s3.aws_conn_id) does not exist: define it in the "
            f"Airflow UI or as environment variable AIRFLOW_CONN_{aws_conn_id.upper()} "
            '(e.g. {"conn_type": "aws", "login": "<access key id>", "password": "<secret>", '
            '"extra": {"region_name": "...", "endpoint_url": "http://<s3 host>:<port>"}}; leave out endpoint_url '
            "for AWS S3)"
        ) from None
    config = client_config(
        max_pool_connections,
        retry_mode=retry_mode,
        max_attempts=max_attempts,
        connect_timeout=connect_timeout,
        read_timeout=read_timeout,
    )
    if extra_config is not None:
        config = config.merge(extra_config)
    connection_config = hook.conn_config.botocore_config  # from the extra's config_kwargs, if any
    if connection_config is not None:
        config = config.merge(connection_config)
    client = hook.get_client_type(region_name=region, config=config)
    expect_bucket_owner(client, expected_bucket_owner)
    log.info(
        "S3 client from Airflow connection %r: endpoint %s, region %s, retries %s x%d",
        aws_conn_id,
        redact_url(client.meta.endpoint_url if hook.conn_config.endpoint_url else None),
        client.meta.region_name,
        retry_mode,
        max_attempts,
    )
    return client


def s3_client_for(s3: S3Settings, max_pool_connections: int = 10, **options: Any) -> S3Client:
    """The client of a ``backup.s3`` section: its connection, region and expected bucket owner.

    ``options`` are the keyword arguments of :func:`s3_client_from_connection` (retries, timeouts).
    """
    return s3_client_from_connection(
        s3.aws_conn_id,
        s3.region,
        max_pool_connections,
        expected_bucket_owner=s3.expected_bucket_owner,
        **options,
    )
