"""What an S3 store can do for rawvault, per bucket, and what rawvault does about what it cannot.

Facilities back up to stores that are not AWS (Ceph RGW, MinIO, StorageGRID,
``rclone serve s3``) and differ exactly where rawvault leans on S3: conditional
writes, SHA-256 flexible checksums, multipart ETags, versioning, Object Lock.
:mod:`rawvault.s3.capability_probe` measures a bucket with throw-away objects;
the result is a :class:`StoreCapabilities`: a one-line :meth:`~StoreCapabilities.summary`,
the protections that are weaker than on AWS (:meth:`~StoreCapabilities.weaknesses`,
for the warnings), and the request arguments the upload should use
(:func:`checksum_args`, :func:`put_condition_args`, :func:`complete_condition_args`,
:func:`botocore_config_for`).

``backup.s3.compatibility``: ``auto`` probes and uploads with the fallbacks;
``aws`` assumes AWS behaviour and never probes (:func:`assumed_aws`);
``strict`` probes and :func:`require_capabilities` refuses a store without
conditional writes or SHA-256 checksums.

:func:`store_capabilities` caches results in memory per process and, through
the ``load``/``save`` callables the caller passes (rawvault keeps them in the
MongoDB collection ``s3_store``, kept by the database layer's ``s3_stores`` module), across
processes; a result older than ``reprobe_after`` is probed again.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any

from botocore.config import Config

from rawvault.digests import CHECKSUM_ALGORITHM
from rawvault.s3.errors import S3PermanentError

log = logging.getLogger(__name__)

DEFAULT_REPROBE_AFTER = timedelta(days=7)


class Conditional(StrEnum):
    """What a store does with ``If-None-Match: *`` on a write over an existing key."""

    ENFORCED = "enforced"  # refuses the write (412/409), as AWS does
    IGNORED = "ignored"  # replaces the object: the header is silently dropped
    REFUSED = "refused"  # rejects the header itself: the write must be sent without it


class EtagShape(StrEnum):
    """The ETag a store gives a multipart object (compared with the object's content)."""

    PART_MD5S = "md5-of-part-md5s"  # md5(concatenated part MD5 digests)-N, as AWS
    WHOLE_MD5 = "whole-md5"  # the MD5 of the whole object
    OTHER = "other"  # neither (e.g. SSE-KMS on AWS, or a store's own scheme)


class StoreCapabilityError(S3PermanentError):
    """The store lacks what ``backup.s3.compatibility: strict`` requires."""


@dataclass(frozen=True)
class StoreCapabilities:
    """What one bucket of one store did when probed (or what AWS does, when assumed)."""

    endpoint: str
    bucket: str
    probed_at: datetime
    conditional_put: Conditional = Conditional.ENFORCED
    conditional_complete: Conditional = Conditional.ENFORCED
    default_checksums: bool = True  # accepts boto3's default flexible checksums (CRC32, aws-chunked over HTTPS)
    sha256_put: bool = True  # a PUT's SHA-256 is accepted, stored and returned by HEAD (ChecksumMode)
    sha256_multipart: bool = True  # a multipart object's SHA-256 (composite) is returned by HEAD
    checksum_validated: bool = True  # a PUT whose SHA-256 does not match its body is refused
    multipart_etag: EtagShape = EtagShape.PART_MD5S
    complete_etag_matches_head: bool = True  # CompleteMultipartUpload answers the ETag HEAD reports later
    versioning: str = "enabled"  # enabled | suspended | off | unknown
    object_lock: bool | None = False  # None: could not be read
    default_encryption: str | None = None  # the bucket's default SSE algorithm, if any
    assumed: bool = False  # True: backup.s3.compatibility is aws, nothing was probed
    notes: tuple[str, ...] = field(default_factory=tuple)  # what the probe met on the way (error codes)

    @property
    def conditional_writes(self) -> bool:
        """Both PUT and CompleteMultipartUpload refuse to replace an object (``If-None-Match: *``)."""
        return self.conditional_put is Conditional.ENFORCED and self.conditional_complete is Conditional.ENFORCED

    @property
    def sha256_checksums(self) -> bool:
        """SHA-256 checksums are kept for single PUTs and multipart objects alike."""
        return self.sha256_put and self.sha256_multipart

    def summary(self) -> str:
        """One line for logs and the Backups page."""
        source = "assumed AWS behaviour (compatibility: aws)" if self.assumed else f"probed {self.probed_at:%Y-%m-%d}"
        checksums = (
            f"SHA-256 {'yes' if self.sha256_put else 'no'} on PUT / {'yes' if self.sha256_multipart else 'no'} "
            f"on multipart{' (not validated)' if self.sha256_put and not self.checksum_validated else ''}"
        )
        return (
            f"s3://{self.bucket} at {self.endpoint}: {source}; If-None-Match {self.conditional_put.value} on PUT / "
            f"{self.conditional_complete.value} on complete; {checksums}; multipart ETag {self.multipart_etag.value}; "
            f"versioning {self.versioning}; Object Lock {_yes_no(self.object_lock)}; default encryption "
            f"{self.default_encryption or 'none'}"
        )

    def missing_for_strict(self) -> list[str]:
        """The features ``compatibility: strict`` requires that this store lacks, by name."""
        missing = []
        for what, conditional in (
            ("PUT", self.conditional_put),
            ("CompleteMultipartUpload", self.conditional_complete),
        ):
            if conditional is not Conditional.ENFORCED:
                missing.append(f"conditional writes on {what} (If-None-Match {conditional.value})")
        if not self.sha256_put:
            missing.append("SHA-256 checksums on PUT")
        if not self.sha256_multipart:
            missing.append("SHA-256 checksums on multipart objects")
        return missing

    def weaknesses(self, object_lock_required: bool = False) -> list[str]:
        """The protections weaker than on AWS, each saying what rawvault does instead (for the warnings)."""
        weaker = [_CONDITIONAL_WEAKNESS.format(what=what, how=conditional.value)
                  for what, conditional in (("PUT", self.conditional_put),
                                            ("CompleteMultipartUpload", self.conditional_complete))
                  if conditional is not Conditional.ENFORCED]  # fmt: skip
        if not self.default_checksums:
            weaker.append(
                "the store rejects boto3's default flexible checksums: requests go without them "
                "(request_checksum_calculation/response_checksum_validation = when_required)"
            )
        if not self.sha256_checksums:
            kept = (("PUTs", self.sha256_put), ("multipart objects", self.sha256_multipart))
            kinds = " and ".join(kind for kind, ok in kept if not ok)
            weaker.append(
                f"no SHA-256 checksums kept for {kinds}: those objects are verified by their ETag against the "
                "recorded MD5 only (none end to end under SSE-KMS)"
            )
        if self.sha256_put and not self.checksum_validated:
            weaker.append(
                "the store keeps the SHA-256 a client sends without checking it against the body: a stored checksum "
                "proves nothing by itself (rawvault verifies ETags against the recorded MD5 after every upload)"
            )
        if self.multipart_etag is EtagShape.OTHER:
            weaker.append(
                "multipart ETags of an unknown shape (as under SSE-KMS): multipart objects are verified by their "
                "SHA-256 where the store keeps one, else by reading them back (ranged GETs hashed against the recorded "
                "MD5), never skipped"
            )
        if not self.complete_etag_matches_head:
            weaker.append("CompleteMultipartUpload answers another ETag than HEAD: rawvault trusts only HEAD")
        if self.versioning != "enabled":
            weaker.append(f"versioning {self.versioning}: an object replaced or deleted by hand cannot be recovered")
        if object_lock_required and not self.object_lock:
            weaker.append(
                "no Object Lock on the bucket although backup.s3.object_lock is set: objects get no retention"
            )
        return weaker

    def to_document(self) -> dict[str, Any]:
        """A plain mapping (for MongoDB): every field, plus ``summary`` and ``weaknesses``."""
        document = asdict(self)
        document["notes"] = list(self.notes)
        document["summary"] = self.summary()
        document["weaknesses"] = self.weaknesses()
        return document

    @classmethod
    def from_document(cls, document: Mapping[str, Any]) -> StoreCapabilities:
        """The capabilities saved by :meth:`to_document` (unknown keys ignored: written by a newer rawvault)."""
        names = set(cls.__dataclass_fields__)
        values = {key: value for key, value in document.items() if key in names}
        probed_at = values["probed_at"]
        values["probed_at"] = probed_at if probed_at.tzinfo else probed_at.replace(tzinfo=UTC)
        values["conditional_put"] = Conditional(values.get("conditional_put", Conditional.ENFORCED))
        values["conditional_complete"] = Conditional(values.get("conditional_complete", Conditional.ENFORCED))
        values["multipart_etag"] = EtagShape(values.get("multipart_etag", EtagShape.PART_MD5S))
        values["notes"] = tuple(values.get("notes") or ())
        return cls(**values)


_CONDITIONAL_WEAKNESS = (
    "If-None-Match {how} on {what}: an object written at the same key by someone else between rawvault's check and "
    "its write is replaced; rawvault checks the key (HEAD) under its upload claim right before writing and verifies "
    "every object after, and writes the manifest only once every object verified"
)


def _yes_no(value: bool | None) -> str:
    return "unknown" if value is None else ("yes" if value else "no")


def assumed_aws(endpoint: str, bucket: str, now: datetime | None = None) -> StoreCapabilities:
    """What ``compatibility: aws`` assumes without probing: AWS behaviour (versioning on, no Object Lock known)."""
    return StoreCapabilities(endpoint, bucket, now or datetime.now(UTC), object_lock=None, assumed=True)


def require_capabilities(caps: StoreCapabilities, mode: str, *, object_lock_required: bool = False) -> None:
    """Refuse a store ``backup.s3.compatibility: strict`` does not accept; nothing for ``auto`` and ``aws``.

    Strict requires conditional writes (PUT and CompleteMultipartUpload) and
    SHA-256 checksums (PUT and multipart), and Object Lock on the bucket when
    ``backup.s3.object_lock`` is set. Raises :class:`StoreCapabilityError`
    naming every missing feature.
    """
    if mode != "strict":
        return
    missing = caps.missing_for_strict()
    if object_lock_required and not caps.object_lock:
        missing.append("Object Lock on the bucket (backup.s3.object_lock is set)")
    if missing:
        raise StoreCapabilityError(
            f"s3://{caps.bucket} at {caps.endpoint} lacks {', '.join(missing)}, which backup.s3.compatibility: "
            "strict requires; nothing was uploaded. Use a store (or bucket) that has them, or set "
            "backup.s3.compatibility: auto to upload with rawvault's fallbacks (they are logged as warnings)"
        )


def botocore_config_for(caps: StoreCapabilities) -> Config | None:
    """Config to merge into the store's client: none of boto3's default checksums when it rejects them."""
    return None if caps.default_checksums else no_flexible_checksums_config()


def no_flexible_checksums_config() -> Config:
    """The botocore config that sends and checks flexible checksums only where an operation requires them."""
    return Config(request_checksum_calculation="when_required", response_checksum_validation="when_required")


def checksum_args(caps: StoreCapabilities | None) -> dict[str, Any]:
    """``ChecksumAlgorithm`` for PUT / CreateMultipartUpload / UploadPart, or nothing for a store without SHA-256.

    ``None``: AWS behaviour (as for every function here that takes ``caps``).
    """
    return {"ChecksumAlgorithm": CHECKSUM_ALGORITHM} if caps is None or caps.sha256_put else {}


def put_condition_args(caps: StoreCapabilities | None) -> dict[str, Any]:
    """``IfNoneMatch: *`` for a PUT where the store enforces it (an ignored or refused header is left out)."""
    return {"IfNoneMatch": "*"} if caps is None or caps.conditional_put is Conditional.ENFORCED else {}


def complete_condition_args(caps: StoreCapabilities | None) -> dict[str, Any]:
    """``IfNoneMatch: *`` for CompleteMultipartUpload where the store enforces it."""
    return {"IfNoneMatch": "*"} if caps is None or caps.conditional_complete is Conditional.ENFORCED else {}


def etag_shape_of(caps: StoreCapabilities | None) -> EtagShape:
    """The multipart ETag shape to verify objects of this store by (``None``: AWS's)."""
    return EtagShape.PART_MD5S if caps is None else caps.multipart_etag


def endpoint_of(client: Any) -> str:
    """The endpoint a client talks to (the cache key with the bucket)."""
    return str(client.meta.endpoint_url).rstrip("/")


Loader = Callable[[str, str], Mapping[str, Any] | None]
Saver = Callable[[str, str, Mapping[str, Any]], None]
Prober = Callable[..., StoreCapabilities]

_cache: dict[tuple[str, str], StoreCapabilities] = {}
_cache_lock = threading.Lock()
_warned: set[tuple[str, str, str]] = set()  # (endpoint, bucket, weakness) logged by this process


def forget_cached(endpoint: str | None = None, bucket: str | None = None) -> None:
    """Drop in-memory results (all, or one store's bucket), e.g. in tests or before a forced re-probe."""
    with _cache_lock:
        if endpoint is None:
            _cache.clear()
            _warned.clear()
        else:
            _cache.pop((endpoint, bucket or ""), None)
            _warned.difference_update({w for w in _warned if w[:2] == (endpoint, bucket or "")})


def warn_weaknesses_once(caps: StoreCapabilities, *, object_lock_required: bool = False) -> list[str]:
    """Log each weakness of ``caps`` as a warning, once per process and bucket; return those logged now."""
    logged = []
    for weakness in caps.weaknesses(object_lock_required):
        key = (caps.endpoint, caps.bucket, weakness)
        with _cache_lock:
            if key in _warned:
                continue
            _warned.add(key)
        log.warning("s3://%s at %s: %s", caps.bucket, caps.endpoint, weakness)
        logged.append(weakness)
    return logged


def store_capabilities(
    client: Any,
    bucket: str,
    *,
    mode: str = "auto",
    reprobe_after: timedelta = DEFAULT_REPROBE_AFTER,
    refresh: bool = False,
    load: Loader | None = None,
    save: Saver | None = None,
    probe: Prober | None = None,
    now: datetime | None = None,
    **probe_args: Any,
) -> StoreCapabilities:
    """The capabilities of ``bucket`` on ``client``'s store: cached, loaded, or probed now.

    ``aws`` mode assumes AWS behaviour and probes nothing. Otherwise, in this
    order: this process's cache, then ``load(endpoint, bucket)`` (a saved
    :meth:`StoreCapabilities.to_document`), each only while younger than
    ``reprobe_after`` and unless ``refresh``; else a new probe
    (``probe(client, bucket, **probe_args)``, by default
    :func:`rawvault.s3.capability_probe.probe_bucket`), saved with ``save``
    and logged once with a warning per weakness.
    """
    endpoint = endpoint_of(client)
    now = now or datetime.now(UTC)
    if mode == "aws":
        return assumed_aws(endpoint, bucket, now)
    key = (endpoint, bucket)
    if not refresh:
        with _cache_lock:
            cached = _cache.get(key)
        if cached is None and load is not None:
            document = load(endpoint, bucket)
            cached = StoreCapabilities.from_document(document) if document else None
        if cached is not None and now - cached.probed_at < reprobe_after:
            with _cache_lock:
                _cache[key] = cached
            return cached
    if probe is None:
        from rawvault.s3.capability_probe import probe_bucket

        probe = probe_bucket
    caps = replace(probe(client, bucket, **probe_args), endpoint=endpoint)
    if save is not None:
        save(endpoint, bucket, caps.to_document())
    with _cache_lock:
        _cache[key] = caps
    log.info("S3 store capabilities: %s", caps.summary())
    warn_weaknesses_once(caps)
    return caps
