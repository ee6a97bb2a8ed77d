"""The capability probe over HTTP against moto's server and rclone serve s3 (and rclone over HTTPS)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import boto3
import pytest

pytest.register_assert_rewrite("tests.s3_fixtures")  # it is imported here before pytest loads it as a plugin

from devtools.servers import RcloneS3Server  # noqa: E402
from rawvault.s3 import capabilities  # noqa: E402
from rawvault.s3.capabilities import (  # noqa: E402
    Conditional,
    EtagShape,
    StoreCapabilityError,
    botocore_config_for,
    no_flexible_checksums_config,
    require_capabilities,
    store_capabilities,
)
from rawvault.s3.capability_probe import PROBE_PREFIX, probe_bucket  # noqa: E402
from rawvault.s3.errors import S3AccessDeniedError  # noqa: E402
from rawvault.s3.retention import apply_object_lock, bucket_creation_args  # noqa: E402
from shared.settings import ObjectLockSettings  # noqa: E402
from tests.s3_fixtures import REGION, AuthS3, S3Backend, backend_of  # noqa: E402

pytest_plugins = ["tests.s3_fixtures"]

# What each server did when probed with boto3 1.44 over HTTP (moto: as AWS, except that it keeps a
# SHA-256 it is sent without checking it against the body).
EXPECTED = {
    "moto": {
        "default_checksums": True,
        "conditional_put": Conditional.ENFORCED,
        "conditional_complete": Conditional.ENFORCED,
        "sha256_put": True,
        "sha256_multipart": True,
        "checksum_validated": False,
        "multipart_etag": EtagShape.PART_MD5S,
        "complete_etag_matches_head": True,
        "versioning": "enabled",
        "object_lock": False,
        "default_encryption": None,
    },
    "rclone": {
        "default_checksums": True,
        "conditional_put": Conditional.IGNORED,
        "conditional_complete": Conditional.IGNORED,
        "sha256_put": True,
        "sha256_multipart": False,
        "checksum_validated": False,
        "multipart_etag": EtagShape.WHOLE_MD5,
        "complete_etag_matches_head": False,
        "versioning": "off",
        "object_lock": False,
        "default_encryption": None,
    },
}


def all_keys(client: Any, bucket: str) -> list[str]:
    return sorted(obj["Key"] for obj in client.list_objects_v2(Bucket=bucket).get("Contents", []))


def test_probe_measures_what_each_store_does(s3_backend: S3Backend, backend_bucket: str) -> None:
    caps = probe_bucket(s3_backend.client(), backend_bucket, object_args={"ServerSideEncryption": "AES256"})
    measured = {name: getattr(caps, name) for name in EXPECTED[s3_backend.name]}
    assert measured == EXPECTED[s3_backend.name]
    assert caps.notes == () and caps.bucket == backend_bucket and caps.endpoint == s3_backend.endpoint_url


def test_probe_deletes_exactly_what_it_wrote(s3_backend: S3Backend, backend_bucket: str) -> None:
    client = s3_backend.client()
    theirs = ["thermo1/2026_11/a.raw", f"{PROBE_PREFIX}an-earlier-probe/kept-by-someone"]
    for key in theirs:
        client.put_object(Bucket=backend_bucket, Key=key, Body=b"not the probe's")
    probe_bucket(client, backend_bucket)
    assert all_keys(client, backend_bucket) == sorted(theirs)
    if s3_backend.versioning:  # not even a noncurrent version or a delete marker of the probe remains
        versions = client.list_object_versions(Bucket=backend_bucket)
        assert sorted(v["Key"] for v in versions.get("Versions", [])) == sorted(theirs)
        assert versions.get("DeleteMarkers", []) == []
        assert client.list_multipart_uploads(Bucket=backend_bucket).get("Uploads", []) == []


def test_strict_refuses_rclone_naming_the_missing_features(rclone_s3_server: RcloneS3Server) -> None:
    backend = backend_of("rclone", rclone_s3_server)
    caps = probe_bucket(backend.client(), backend.new_bucket())
    with pytest.raises(StoreCapabilityError) as refused:
        require_capabilities(caps, "strict")
    where = f"s3://{caps.bucket} at {backend.endpoint_url}"
    assert str(refused.value).startswith(f"{where} lacks conditional writes on PUT")
    for feature in ("CompleteMultipartUpload (If-None-Match ignored)", "SHA-256 checksums on multipart objects"):
        assert feature in str(refused.value)


def test_strict_accepts_moto(s3_server: Any) -> None:
    backend = backend_of("moto", s3_server)
    require_capabilities(probe_bucket(backend.client(), backend.new_bucket()), "strict")


@pytest.fixture(scope="module")
def rclone_tls() -> Iterator[S3Backend]:
    """rclone serve s3 over HTTPS: botocore sends flexible checksums as an aws-chunked trailer there."""
    with RcloneS3Server(tls=True) as server:
        yield backend_of("rclone-tls", server)


def test_store_rejecting_default_checksums_is_probed_without_them(rclone_tls: S3Backend) -> None:
    client = rclone_tls.client()
    bucket = rclone_tls.new_bucket(rclone_tls.client(config=no_flexible_checksums_config()))
    caps = probe_bucket(
        client, bucket, client_without_checksums=lambda: rclone_tls.client(config=no_flexible_checksums_config())
    )
    assert not caps.default_checksums and not caps.sha256_put and not caps.sha256_multipart
    assert "PUT with boto3's default checksums: MissingContentLength" in caps.notes
    assert caps.multipart_etag is EtagShape.WHOLE_MD5  # the rest was probed with the client without them
    assert any("rejects boto3's default flexible checksums" in weakness for weakness in caps.weaknesses())
    config = botocore_config_for(caps)
    assert config is not None
    fixed = rclone_tls.client(config=config)
    fixed.put_object(Bucket=bucket, Key="raw/a.raw", Body=b"uploads work with this config")
    assert all_keys(fixed, bucket) == ["raw/a.raw"]


def test_without_a_client_lacking_checksums_the_probe_stops_and_strict_refuses(rclone_tls: S3Backend) -> None:
    bucket = rclone_tls.new_bucket(rclone_tls.client(config=no_flexible_checksums_config()))
    caps = probe_bucket(rclone_tls.client(), bucket)
    assert "no client without default checksums was given: nothing more was probed" in caps.notes
    with pytest.raises(StoreCapabilityError, match="SHA-256 checksums on PUT"):
        require_capabilities(caps, "strict")


def test_probe_under_object_lock_hides_what_it_cannot_delete(s3_server: Any) -> None:
    backend = backend_of("moto", s3_server)
    client = backend.client()
    lock = ObjectLockSettings(mode="COMPLIANCE", days=1)
    bucket = f"rv-probe-lock-{backend.new_bucket(client)[-8:]}"
    client.create_bucket(Bucket=bucket, **bucket_creation_args(lock))
    apply_object_lock(client, bucket, lock)
    caps = probe_bucket(client, bucket)
    assert caps.object_lock is True and caps.versioning == "enabled"
    assert any("stay until their retention ends" in note for note in caps.notes)
    assert all_keys(client, bucket) == []  # hidden behind delete markers


def test_access_denied_stops_the_probe_with_the_permission_to_grant(auth_s3: AuthS3) -> None:
    client = boto3.client("s3", endpoint_url=auth_s3.endpoint_url, region_name=REGION, **auth_s3.no_put)
    with pytest.raises(S3AccessDeniedError, match="s3:PutObject"):
        probe_bucket(client, auth_s3.bucket)


def test_capabilities_are_recorded_in_mongodb_and_reused(mongo_uri: str, s3_backend: S3Backend) -> None:
    from shared.db.s3_stores import list_store_capabilities, load_store_capabilities, save_store_capabilities

    capabilities.forget_cached()
    client = s3_backend.client()
    bucket = s3_backend.new_bucket(client)
    probes: list[str] = []

    def counting_probe(*args: Any, **kwargs: Any) -> Any:
        probes.append(args[1])
        return probe_bucket(*args, **kwargs)

    stored = {"load": load_store_capabilities, "save": save_store_capabilities, "probe": counting_probe}
    first = store_capabilities(client, bucket, **stored)
    capabilities.forget_cached()  # a new worker process: MongoDB answers, nothing is probed
    assert store_capabilities(client, bucket, **stored) == first
    assert probes == [bucket]
    (row,) = [store for store in list_store_capabilities() if store.bucket == bucket]
    assert row.summary == first.summary() and row.weaknesses == first.weaknesses()
    store_capabilities(client, bucket, refresh=True, **stored)
    assert probes == [bucket, bucket]
    capabilities.forget_cached()
