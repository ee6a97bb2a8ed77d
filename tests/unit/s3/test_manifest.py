"""The manifest: a pure function of the set (issue 17 item 5), stale when S3's values differ, replaced only
conditionally (If-Match) and read back; moto's in-process S3."""

from __future__ import annotations

from typing import Any

import boto3
import pytest

from rawvault.s3 import manifest
from rawvault.s3.errors import ExistingObjectMismatchError
from rawvault.s3.put import ObjectSettings

pytest_plugins = ["tests.unit.fakes"]

BUCKET, KEY = "rv-unit", "t1/2026_11/N.d.rawvault-manifest.json"
SETTINGS = ObjectSettings()


def files(**s3_etags: str) -> dict[str, dict[str, Any]]:
    return {
        f"N.d/{name}": {"key": f"t1/2026_11/N.d/{name}", "size": 3, "md5": "m" * 32, "etag": "m" * 32,
                        "s3_etag": etag, "checksum_sha256": f"sha-{etag}", "verified_by": "checksum"}
        for name, etag in s3_etags.items()
    }  # fmt: skip


def build(**s3_etags: str) -> dict[str, Any]:
    return manifest.build(
        raw_file_id="N.d", bucket=BUCKET, key_prefix="t1/2026_11/", part_size=5, metadata={"raw-file-id": "N.d"},
        files=files(**s3_etags),
    )  # fmt: skip


def test_the_manifest_is_a_pure_function_of_the_set() -> None:
    first = build(a="e1", b="e2")
    assert first == build(a="e1", b="e2") and manifest.encode(first) == manifest.encode(build(b="e2", a="e1"))
    assert not {"completed_at", "created_at", "written_at"} & set(first)  # no wall-clock time


def test_a_manifest_is_stale_for_the_files_whose_s3_values_differ() -> None:
    old = build(a="e1", b="e2")
    assert manifest.stale_files(old, build(a="e1", b="e2")) == []
    assert manifest.stale_files(old, build(a="e1", b="new")) == ["N.d/b"]
    legacy = {**old, "completed_at": "2026-11-22T08:00:00Z"}  # written before manifests were pure
    assert manifest.stale_files(legacy, build(a="e1", b="e2")) == []  # kept: s3_etag does not change
    without_checksum = {**old, "files": {p: {**e, "checksum_sha256": None} for p, e in old["files"].items()}}
    assert manifest.stale_files(without_checksum, old) == ["N.d/a", "N.d/b"]


@pytest.fixture
def s3(fake_s3: Any) -> Any:
    fake_s3.create_bucket(Bucket=BUCKET)
    return fake_s3


def test_write_refuses_to_replace_and_reads_back(s3: Any) -> None:
    etag = manifest.write(s3, BUCKET, KEY, build(a="e1"), SETTINGS, {})
    assert manifest.read(s3, BUCKET, KEY) == (build(a="e1"), etag)
    assert manifest.write(s3, BUCKET, KEY, build(a="e1"), SETTINGS, {}) == etag  # the same manifest: fine
    with pytest.raises(ExistingObjectMismatchError, match="not overwritten"):
        manifest.write(s3, BUCKET, KEY, build(a="other"), SETTINGS, {})
    assert manifest.read(s3, BUCKET, KEY) == (build(a="e1"), etag)


def test_replace_is_conditional_on_the_manifest_that_was_read(s3: Any) -> None:
    old_etag = manifest.write(s3, BUCKET, KEY, build(a="e1"), SETTINGS, {})
    new_etag = manifest.replace(s3, BUCKET, KEY, build(a="e2"), old_etag=old_etag, settings=SETTINGS, metadata={})
    assert manifest.read(s3, BUCKET, KEY) == (build(a="e2"), new_etag) and new_etag != old_etag
    with pytest.raises(manifest.ManifestChangedError, match=f"it had ETag {old_etag}"):  # someone else's since
        manifest.replace(s3, BUCKET, KEY, build(a="e3"), old_etag=old_etag, settings=SETTINGS, metadata={})
    assert manifest.read(s3, BUCKET, KEY) == (build(a="e2"), new_etag)
    # Another writer wrote this very manifest meanwhile: its ETag serves.
    same = manifest.replace(s3, BUCKET, KEY, build(a="e2"), old_etag=old_etag, settings=SETTINGS, metadata={})
    assert same == new_etag


def test_replace_writes_a_manifest_that_vanished_meanwhile(s3: Any) -> None:
    etag = manifest.replace(s3, BUCKET, KEY, build(a="e1"), old_etag="gone", settings=SETTINGS, metadata={})
    assert manifest.read(s3, BUCKET, KEY) == (build(a="e1"), etag)


def test_a_write_that_does_not_read_back_fails(s3: Any) -> None:
    other = boto3.client("s3", region_name="us-east-1")

    def someone_else_writes(**_kwargs: Any) -> None:
        other.put_object(Bucket=BUCKET, Key=KEY, Body=manifest.encode(build(a="intruder")))

    s3.meta.events.register("after-call.s3.PutObject", someone_else_writes)
    with pytest.raises(manifest.VerificationError, match="reads back as another manifest"):
        manifest.write(s3, BUCKET, KEY, build(a="e1"), SETTINGS, {})
