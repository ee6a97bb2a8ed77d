"""Use case "the store behind a bucket": what it can do, recorded in MongoDB, and the client the upload uses there.

Facilities back up to stores that are not AWS (see README "S3-compatible
stores"). Before a bucket's first upload in a process, :func:`prepare_store`:

1. gets the bucket's capabilities (:func:`bucket_capabilities`): this
   process's cache, else the ``s3_store`` record in MongoDB while younger than
   ``backup.s3.reprobe_after_days``, else a new probe
   (:mod:`rawvault.s3.capability_probe`, recorded); ``compatibility: aws``
   assumes AWS and probes nothing;
2. logs each weakness once per process and bucket, as a warning naming the
   protection that is weaker and what rawvault does instead;
3. refuses the store in ``compatibility: strict`` when it lacks conditional
   writes, SHA-256 checksums, or Object Lock with ``backup.s3.object_lock``
   (:class:`~rawvault.s3.capabilities.StoreCapabilityError`, naming each);
4. makes a client without boto3's default checksums for a store that rejects
   them (the ``make_client`` callable, given the extra botocore config);
5. throttles the client's uploads by ``backup.s3.bandwidth`` (one limiter per
   worker process, windows in ``timezone``).

:func:`recorded_etag_shapes` gives the readers of existing backups (the
check of an ``upload_done`` set, ``verify``) the multipart ETag shape a
bucket's store was probed with, without probing. :func:`project_buckets` lists
every project's bucket (for ``buckets probe --all`` and ``buckets apply-lifecycle``).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING

from rawvault.s3.bandwidth import BandwidthLimiter, limiter_for, throttle_uploads
from rawvault.s3.buckets import bucket_name
from rawvault.s3.capabilities import (
    EtagShape,
    StoreCapabilities,
    botocore_config_for,
    endpoint_of,
    no_flexible_checksums_config,
    require_capabilities,
    store_capabilities,
    warn_weaknesses_once,
)
from rawvault.s3.client import S3Client
from rawvault.s3.errors import BucketNameError
from rawvault.s3.put import ObjectSettings
from shared.db.interface import get_projects
from shared.db.s3_stores import load_store_capabilities, save_store_capabilities

if TYPE_CHECKING:
    from botocore.config import Config

    from shared.settings import S3Settings, Settings

log = logging.getLogger(__name__)

# A client for the same store and credentials with ``extra`` merged into its botocore config.
ClientFactory = Callable[["Config | None"], "S3Client"]


@dataclass(frozen=True)
class PreparedStore:
    """A bucket ready for uploads: the client to use, what the store can do, the bandwidth limiter."""

    client: S3Client
    caps: StoreCapabilities
    limiter: BandwidthLimiter | None

    def object_settings(self, s3: S3Settings) -> ObjectSettings:
        """The settings of every object written to this bucket (retention only where the bucket has Object Lock)."""
        return ObjectSettings.from_settings(s3, self.caps)

    def bandwidth_status(self) -> str | None:
        """The current limit and the achieved throughput (``None`` without ``backup.s3.bandwidth``)."""
        return self.limiter.status().describe() if self.limiter is not None else None


def _s3(settings: Settings) -> S3Settings:
    s3 = settings.backup.s3
    if s3 is None:
        raise ValueError(f"{settings.source} has no backup.s3 section")
    return s3


def bucket_capabilities(
    client: S3Client,
    bucket: str,
    settings: Settings,
    *,
    refresh: bool = False,
    make_client: ClientFactory | None = None,
) -> StoreCapabilities:
    """The capabilities of ``bucket`` (cached, recorded in MongoDB, or probed now; ``refresh``: probed now).

    The probe writes like the upload does (the configured encryption changes
    a multipart ETag's shape); ``make_client`` gives it a client without
    boto3's default checksums for a store that rejects them.
    """
    s3 = _s3(settings)
    without_checksums = None if make_client is None else (lambda: make_client(no_flexible_checksums_config()))
    return store_capabilities(
        client,
        bucket,
        mode="auto" if refresh and s3.compatibility == "aws" else s3.compatibility,
        reprobe_after=timedelta(days=s3.reprobe_after_days),
        refresh=refresh,
        load=load_store_capabilities,
        save=save_store_capabilities,
        object_args=ObjectSettings.from_settings(s3).encryption_args(),
        client_without_checksums=without_checksums,
    )


def prepare_store(client: S3Client, bucket: str, settings: Settings, make_client: ClientFactory) -> PreparedStore:
    """Everything the upload needs to know and use for ``bucket`` (see the module docstring)."""
    s3 = _s3(settings)
    caps = bucket_capabilities(client, bucket, settings, make_client=make_client)
    lock_required = s3.object_lock is not None
    warn_weaknesses_once(caps, object_lock_required=lock_required)
    require_capabilities(caps, s3.compatibility, object_lock_required=lock_required)
    extra = botocore_config_for(caps)
    if extra is not None:
        log.info("s3://%s: the store rejects boto3's default checksums; uploading without them", bucket)
        client = make_client(extra)
    limiter = limiter_for(s3.bandwidth, settings.timezone)
    throttle_uploads(client, limiter)
    return PreparedStore(client, caps, limiter)


def project_buckets(settings: Settings) -> list[str]:
    """Every project's bucket (and the fallback project's), sorted; project ids without a valid bucket are logged."""
    s3 = _s3(settings)
    names = set()
    for project_id in {*(project.id for project in get_projects()), settings.watcher.fallback_project_id}:
        try:
            names.add(bucket_name(s3.bucket_prefix, project_id))
        except BucketNameError as error:
            log.warning("project %r has no valid bucket: %s", project_id, error)
    return sorted(names)


def recorded_etag_shapes(client: S3Client) -> Callable[[str], EtagShape]:
    """``bucket -> EtagShape`` of ``client``'s store as its last probe recorded it (AWS's if never probed).

    Reads the ``s3_store`` record once per bucket (thread-safe), never probes:
    readers must not write probe objects.
    """
    endpoint = endpoint_of(client)
    shapes: dict[str, EtagShape] = {}
    lock = threading.Lock()

    def shape(bucket: str) -> EtagShape:
        with lock:
            if bucket in shapes:
                return shapes[bucket]
        document = load_store_capabilities(endpoint, bucket)
        found = StoreCapabilities.from_document(document).multipart_etag if document else EtagShape.PART_MD5S
        with lock:
            shapes[bucket] = found
        return found

    return shape
