"""Store capabilities without a server: summary, weaknesses, strict mode, request arguments, cache, documents."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from typing import Any

import pytest

from rawvault.s3 import capabilities
from rawvault.s3.capabilities import (
    Conditional,
    EtagShape,
    StoreCapabilities,
    StoreCapabilityError,
    assumed_aws,
    botocore_config_for,
    checksum_args,
    complete_condition_args,
    put_condition_args,
    require_capabilities,
    store_capabilities,
)
from rawvault.s3.errors import S3PermanentError

pytest_plugins = ["tests.unit.fakes"]

NOW = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)
AWS_LIKE = StoreCapabilities("https://s3.eu-central-1.amazonaws.com", "facility-p1", NOW, versioning="enabled")
# What rclone serve s3 1.75.2 did when probed over HTTP (tests/integration/test_s3_capabilities.py).
RCLONE_LIKE = StoreCapabilities(
    "http://127.0.0.1:9000",
    "facility-p1",
    NOW,
    conditional_put=Conditional.IGNORED,
    conditional_complete=Conditional.IGNORED,
    sha256_multipart=False,
    checksum_validated=False,
    multipart_etag=EtagShape.WHOLE_MD5,
    complete_etag_matches_head=False,
    versioning="off",
)


def test_aws_like_store_has_no_weakness_and_passes_strict() -> None:
    assert AWS_LIKE.conditional_writes and AWS_LIKE.sha256_checksums
    assert AWS_LIKE.weaknesses() == []
    require_capabilities(AWS_LIKE, "strict")
    assert "If-None-Match enforced on PUT / enforced on complete" in AWS_LIKE.summary()


def test_summary_is_one_line_naming_each_feature() -> None:
    summary = RCLONE_LIKE.summary()
    assert "\n" not in summary
    for part in (
        "s3://facility-p1 at http://127.0.0.1:9000",
        "probed 2026-11-30",
        "If-None-Match ignored on PUT / ignored on complete",
        "SHA-256 yes on PUT / no on multipart (not validated)",
        "multipart ETag whole-md5",
        "versioning off",
        "Object Lock no",
        "default encryption none",
    ):
        assert part in summary


def test_weaknesses_say_what_is_weaker_and_what_rawvault_does_instead() -> None:
    weaker = RCLONE_LIKE.weaknesses()
    assert any(w.startswith("If-None-Match ignored on PUT") and "HEAD" in w for w in weaker)
    assert any(w.startswith("If-None-Match ignored on CompleteMultipartUpload") for w in weaker)
    assert any("no SHA-256 checksums kept for multipart objects" in w for w in weaker)
    assert any("without checking it" in w for w in weaker)
    assert any(w.startswith("versioning off") for w in weaker)
    # A whole-file MD5 ETag is a stronger check than AWS's, not a weakness.
    assert not any("ETags of an unknown shape" in w for w in weaker)
    other = StoreCapabilities("e", "b", NOW, multipart_etag=EtagShape.OTHER)
    assert any("reading them back" in w for w in other.weaknesses())
    assert any("no Object Lock" in w for w in AWS_LIKE.weaknesses(object_lock_required=True))


def test_strict_refuses_naming_every_missing_feature() -> None:
    with pytest.raises(StoreCapabilityError) as refused:
        require_capabilities(RCLONE_LIKE, "strict")
    message = str(refused.value)
    assert isinstance(refused.value, S3PermanentError)
    assert "conditional writes on PUT (If-None-Match ignored)" in message
    assert "conditional writes on CompleteMultipartUpload (If-None-Match ignored)" in message
    assert "SHA-256 checksums on multipart objects" in message
    assert "SHA-256 checksums on PUT" not in message
    assert "backup.s3.compatibility: auto" in message
    require_capabilities(RCLONE_LIKE, "auto")  # auto and aws never refuse
    require_capabilities(RCLONE_LIKE, "aws")


def test_strict_with_object_lock_configured_needs_it_on_the_bucket() -> None:
    with pytest.raises(StoreCapabilityError, match=r"Object Lock on the bucket \(backup.s3.object_lock is set\)"):
        require_capabilities(AWS_LIKE, "strict", object_lock_required=True)
    require_capabilities(StoreCapabilities("e", "b", NOW, object_lock=True), "strict", object_lock_required=True)


def test_request_arguments_follow_the_store() -> None:
    assert checksum_args(AWS_LIKE) == {"ChecksumAlgorithm": "SHA256"}
    assert put_condition_args(AWS_LIKE) == complete_condition_args(AWS_LIKE) == {"IfNoneMatch": "*"}
    assert put_condition_args(RCLONE_LIKE) == complete_condition_args(RCLONE_LIKE) == {}
    refusing = StoreCapabilities("e", "b", NOW, conditional_put=Conditional.REFUSED, sha256_put=False)
    assert put_condition_args(refusing) == {} and checksum_args(refusing) == {}
    assert botocore_config_for(AWS_LIKE) is None
    config = botocore_config_for(StoreCapabilities("e", "b", NOW, default_checksums=False))
    assert config is not None
    assert config.request_checksum_calculation == config.response_checksum_validation == "when_required"


def test_document_round_trip() -> None:
    document = RCLONE_LIKE.to_document()
    assert document["summary"] == RCLONE_LIKE.summary() and document["weaknesses"] == RCLONE_LIKE.weaknesses()
    assert StoreCapabilities.from_document({**document, "added_by_a_newer_rawvault": 1}) == RCLONE_LIKE
    naive = {**document, "probed_at": NOW.replace(tzinfo=None)}  # MongoDB without tz_aware
    assert StoreCapabilities.from_document(naive).probed_at == NOW


class FakeClient:
    meta = SimpleNamespace(endpoint_url="http://store.example:9000/")


def test_cache_probes_once_then_memory_then_the_saved_document(monkeypatch: pytest.MonkeyPatch) -> None:
    capabilities.forget_cached()
    probes: list[str] = []
    saved: dict[tuple[str, str], Any] = {}

    def probe(client: Any, bucket: str, **_kwargs: Any) -> StoreCapabilities:
        probes.append(bucket)
        return StoreCapabilities("ignored", bucket, NOW)

    def save(endpoint: str, bucket: str, document: Any) -> None:
        saved[(endpoint, bucket)] = document

    def load(endpoint: str, bucket: str) -> Any:
        return saved.get((endpoint, bucket))

    kwargs: dict[str, Any] = {"probe": probe, "load": load, "save": save, "now": NOW}
    first = store_capabilities(FakeClient(), "b1", **kwargs)
    assert first.endpoint == "http://store.example:9000" and probes == ["b1"]
    assert store_capabilities(FakeClient(), "b1", **kwargs) == first and probes == ["b1"]  # memory
    capabilities.forget_cached()  # another worker process: loads what the first one saved
    assert store_capabilities(FakeClient(), "b1", **kwargs) == first and probes == ["b1"]
    later = {**kwargs, "now": NOW + timedelta(days=8)}  # older than reprobe_after (7 days): probed again
    store_capabilities(FakeClient(), "b1", **later)
    assert probes == ["b1", "b1"]
    store_capabilities(FakeClient(), "b1", refresh=True, **kwargs)  # on demand
    assert probes == ["b1", "b1", "b1"]
    assumed = store_capabilities(FakeClient(), "b2", mode="aws", **kwargs)  # no probe at all
    assert assumed.assumed and probes == ["b1", "b1", "b1"]
    assert assumed == assumed_aws("http://store.example:9000", "b2", NOW)
    assert "assumed AWS behaviour (compatibility: aws)" in assumed.summary()
    capabilities.forget_cached()


# --- hooks of the upload path (issue 15 item 2) ------------------------------------------------------------------


def test_each_weakness_is_warned_once_per_process_and_bucket(caplog: pytest.LogCaptureFixture) -> None:
    capabilities.forget_cached()
    with caplog.at_level("WARNING", logger="rawvault.s3.capabilities"):
        first = capabilities.warn_weaknesses_once(RCLONE_LIKE)
        again = capabilities.warn_weaknesses_once(RCLONE_LIKE)
        other_bucket = capabilities.warn_weaknesses_once(
            StoreCapabilities(RCLONE_LIKE.endpoint, "facility-p2", NOW, conditional_put=Conditional.IGNORED)
        )
        with_lock = capabilities.warn_weaknesses_once(RCLONE_LIKE, object_lock_required=True)
    assert first == RCLONE_LIKE.weaknesses() and again == []
    assert any("If-None-Match ignored on PUT" in w for w in other_bucket)
    assert len(with_lock) == 1 and "Object Lock" in with_lock[0]  # only what was not said yet
    assert caplog.text.count("s3://facility-p1 at http://127.0.0.1:9000: If-None-Match ignored on PUT") == 1
    capabilities.forget_cached()


def test_overwrites_are_forbidden_by_header_only_where_the_store_enforces_it(fake_s3: Any) -> None:
    from rawvault.s3.put import forbid_overwrites

    sent: list[dict[str, Any]] = []
    fake_s3.meta.events.register_last("before-parameter-build.s3.PutObject", lambda params, **_: sent.append(params))
    fake_s3.create_bucket(Bucket="rv-unit-c")
    forbid_overwrites(fake_s3, RCLONE_LIKE)  # ignored there: the writes are guarded by a HEAD instead
    fake_s3.put_object(Bucket="rv-unit-c", Key="a", Body=b"1")
    forbid_overwrites(fake_s3, AWS_LIKE)
    fake_s3.put_object(Bucket="rv-unit-c", Key="b", Body=b"1")
    assert "IfNoneMatch" not in sent[0] and sent[1]["IfNoneMatch"] == "*"


def test_a_write_on_a_store_without_conditional_writes_checks_the_key_under_the_guard(fake_s3: Any) -> None:
    from rawvault.s3.errors import ObjectAppearedError
    from rawvault.s3.put import check_key_free

    fake_s3.create_bucket(Bucket="rv-unit-g")
    guarded: list[str] = []
    check_key_free(fake_s3, "rv-unit-g", "k", lambda: guarded.append("k"), what="a.raw")  # free: nothing raised
    fake_s3.put_object(Bucket="rv-unit-g", Key="k", Body=b"someone else's")
    with pytest.raises(ObjectAppearedError, match=r"appeared at s3://rv-unit-g/k before a.raw was written.*"):
        check_key_free(fake_s3, "rv-unit-g", "k", lambda: guarded.append("k"), what="a.raw")
    assert guarded == ["k", "k"]  # the claim is checked before each HEAD
