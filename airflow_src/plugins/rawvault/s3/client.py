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
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING
from urllib.parse import urlsplit, urlunsplit

from botocore.config import Config

from rawvault.s3.errors import S3PermanentError

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

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


def redact_url(url: str | None) -> str:
    """``url`` without any ``user:password@`` part, for logs."""
    if not url:
        return "<AWS default endpoint>"
    parts = urlsplit(url)
    netloc = parts.hostname or ""
    if parts.port:
        netloc += f":{parts.port}"
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


def s3_client_from_connection(
    aws_conn_id: str,
    region: str,
    max_pool_connections: int = 10,
    *,
    retry_mode: str = RETRY_MODE,
    max_attempts: int = MAX_ATTEMPTS,
    connect_timeout: float = CONNECT_TIMEOUT_SECONDS,
    read_timeout: float = READ_TIMEOUT_SECONDS,
) -> S3Client:
    """A boto3 S3 client with the credentials and endpoint of Airflow connection ``aws_conn_id``.

    A missing connection is an error (rawvault takes credentials only from
    the Airflow connection). ``config_kwargs`` in the connection's extra are
    applied on top of rawvault's client config (e.g. ``{"s3": {"addressing_style": "path"}}``).
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
            '"extra": {"region_name": "..."}})'
        ) from None
    config = client_config(
        max_pool_connections,
        retry_mode=retry_mode,
        max_attempts=max_attempts,
        connect_timeout=connect_timeout,
        read_timeout=read_timeout,
    )
    connection_config = hook.conn_config.botocore_config  # from the extra's config_kwargs, if any
    if connection_config is not None:
        config = config.merge(connection_config)
    client = hook.get_client_type(region_name=region, config=config)
    log.info(
        "S3 client from Airflow connection %r: endpoint %s, region %s, retries %s x%d",
        aws_conn_id,
        redact_url(client.meta.endpoint_url if hook.conn_config.endpoint_url else None),
        client.meta.region_name,
        retry_mode,
        max_attempts,
    )
    return client
