"""The backup use cases on the stores facilities run: moto's server (AWS-like) and ``rclone serve s3`` (issue 15).

rclone differs from AWS the way on-premises stores do (see ``test_s3_servers.py``): it ignores
``If-None-Match``, reports a multipart object's ETag as the whole file's MD5, implements no versioning, no
bucket configuration and no Object Lock. The core cases run on both (``s3_backend``): backup, an
interrupted and resumed multipart upload (also after the store forgot the unfinished upload), repair,
restore and verify, each through the use case (``upload_raw_file``, ``restore_raw_file``,
``verify_backups``) with the capability probe the upload runs. Then what only one of them can show:
``compatibility: strict`` refusing rclone, a concurrent writer on rclone (no conditional writes), Object
Lock and lifecycle on moto's server, and the bandwidth limit of ``backup.s3.bandwidth`` in the upload.
"""

from __future__ import annotations

import hashlib
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import EndpointConnectionError

pytest.register_assert_rewrite("tests.s3_fixtures")  # it is imported here before pytest loads it as a plugin

from rawvault.audit import AuditSelection, verify_backups  # noqa: E402
from rawvault.backup import upload_raw_file  # noqa: E402
from rawvault.restore import restore_raw_file  # noqa: E402
from rawvault.s3.capabilities import StoreCapabilityError, forget_cached  # noqa: E402
from rawvault.s3.errors import S3BackupError, S3TransientError  # noqa: E402
from rawvault.s3.retention import retention_from_head  # noqa: E402
from shared.db.interface import create_raw_file, get_raw_file  # noqa: E402
from shared.settings import Settings  # noqa: E402
from tests.s3_fixtures import (  # noqa: E402
    MIB,
    PART,
    S3Backend,
    after_upload_part,
    backend_of,
    file_info_of,
    make_bruker_set,
    make_settings,
    multipart_uploads,
    unique_prefix,
    write_file,
)

pytest_plugins = ["tests.s3_fixtures"]
pytestmark = pytest.mark.slow  # about a minute and a half: every core case twice, a 4 s bandwidth-limited upload

CREATED = datetime(2026, 11, 22, 10, 0, tzinfo=UTC)
BASE = "thermo1/2026_11"


@pytest.fixture(autouse=True)
def _fresh_capabilities() -> Any:
    forget_cached()  # each test's buckets are probed by its own upload
    yield
    forget_cached()


def register_thermo(settings: Settings, name: str, size: int, seed: int = 1) -> str:
    """A single-file raw file with its verified local backup copy (as copy_raw_file leaves it)."""
    folder = settings.locations.backup / BASE
    write_file(folder / name, size, seed)
    create_raw_file(
        name, instrument_id="thermo1", created_at=CREATED, file_info=file_info_of(folder, [name]),
        backup_status="copying_done", etag_part_size=PART,
    )  # fmt: skip
    return name


def register_bruker(settings: Settings, name: str) -> str:
    folder = settings.locations.backup / "tims1/2026_11"
    paths = make_bruker_set(folder, name)
    create_raw_file(
        name, instrument_id="tims1", created_at=CREATED, file_info=file_info_of(folder, paths),
        backup_status="copying_done", etag_part_size=PART,
    )  # fmt: skip
    return name


def upload(settings: Settings, raw_file_id: str, backend: S3Backend, client: Any) -> Any:
    """The backup use case, with the backend's clients (another botocore config where the store needs it)."""
    return upload_raw_file(
        raw_file_id, settings, client=client, progress_interval=1,
        client_factory=lambda extra: backend.client(config=extra),
    )  # fmt: skip


def bucket_of(settings: Settings) -> str:
    assert settings.backup.s3 is not None
    return f"{settings.backup.s3.bucket_prefix}-fallback"


def assert_backed_up(settings: Settings, raw_file_id: str, client: Any, tmp_path: Path) -> None:
    """upload_done, restored byte-identical, and verify finds no drift."""
    raw_file = get_raw_file(raw_file_id)
    assert raw_file.backup_status == "upload_done", raw_file.backup_status_details
    target = tmp_path / f"restored-{raw_file_id}"
    restore_raw_file(raw_file_id, target, client, progress_interval=60)
    folder = settings.locations.backup / raw_file.backup_base_path
    for path in raw_file.file_info:
        assert (target / path).read_bytes() == (folder / path).read_bytes(), path
    report = verify_backups(client, AuditSelection(raw_file_id=raw_file_id))
    assert report.ok and report.objects_checked >= len(raw_file.file_info), report.table()


# --- the core cases on both stores -------------------------------------------------------------------------


def test_backup_restore_and_verify(mongo_uri: str, s3_backend: S3Backend, tmp_path: Path) -> None:
    settings = make_settings(tmp_path, unique_prefix(), auto_create_buckets=True, max_concurrency=4)
    client = s3_backend.client()
    single = register_thermo(settings, "big.raw", 12 * MIB)  # 3 parts: rclone's ETag is the whole file's MD5
    bruker = register_bruker(settings, "20261122_tims1_stores.d")
    upload(settings, single, s3_backend, client)
    upload(settings, bruker, s3_backend, client)
    head = client.head_object(Bucket=bucket_of(settings), Key=f"{BASE}/{single}")
    recorded = get_raw_file(single).file_info[single]
    # moto: md5-of-part-MD5s-3, verified as recorded; rclone: the whole file's MD5, accepted as such.
    assert head["ETag"].strip('"') == (recorded[2] if s3_backend.name == "moto" else recorded[1])
    assert_backed_up(settings, single, client, tmp_path)
    assert_backed_up(settings, bruker, client, tmp_path)


def test_interrupted_multipart_upload_resumes(mongo_uri: str, s3_backend: S3Backend, tmp_path: Path) -> None:
    settings = make_settings(tmp_path, unique_prefix(), auto_create_buckets=True, max_concurrency=1)
    client = s3_backend.client()
    raw_file_id = register_thermo(settings, "resume.raw", 17 * MIB)  # 4 parts
    parts = [0]

    def connection_lost(**_kwargs: Any) -> None:
        parts[0] += 1
        if parts[0] == 2:
            raise EndpointConnectionError(endpoint_url=s3_backend.endpoint_url)

    after_upload_part(client, connection_lost)
    with pytest.raises(S3TransientError):
        upload(settings, raw_file_id, s3_backend, client)
    assert get_raw_file(raw_file_id).backup_status == "upload_failed"
    assert len(get_raw_file(raw_file_id).s3_multipart_uploads) == 1  # kept for the retry
    result = upload(settings, raw_file_id, s3_backend, client)
    assert 2 <= result.parts_resumed < 4  # the stored parts were verified, not sent again (one may be in flight)
    assert multipart_uploads(client, bucket_of(settings)) == []
    assert_backed_up(settings, raw_file_id, client, tmp_path)


def test_resume_of_an_upload_the_store_forgot_starts_over(
    mongo_uri: str, s3_backend: S3Backend, tmp_path: Path
) -> None:
    # rclone forgets unfinished uploads when it restarts and after 24 h idle: the recorded upload id is unknown.
    settings = make_settings(tmp_path, unique_prefix(), auto_create_buckets=True, max_concurrency=1)
    client = s3_backend.client()
    raw_file_id = register_thermo(settings, "forgotten.raw", 12 * MIB)

    def connection_lost(**_kwargs: Any) -> None:
        raise EndpointConnectionError(endpoint_url=s3_backend.endpoint_url)

    interrupted = s3_backend.client()
    after_upload_part(interrupted, connection_lost)
    with pytest.raises(S3TransientError):
        upload(settings, raw_file_id, s3_backend, interrupted)
    ((key, upload_id),) = get_raw_file(raw_file_id).s3_multipart_uploads.items()
    client.abort_multipart_upload(Bucket=bucket_of(settings), Key=key, UploadId=upload_id)  # the store forgets
    result = upload(settings, raw_file_id, s3_backend, client)
    assert result.parts_resumed == 0
    assert_backed_up(settings, raw_file_id, client, tmp_path)


def test_repair_of_an_object_deleted_after_upload_done(mongo_uri: str, s3_backend: S3Backend, tmp_path: Path) -> None:
    settings = make_settings(tmp_path, unique_prefix(), auto_create_buckets=True, max_concurrency=4)
    client = s3_backend.client()
    raw_file_id = register_bruker(settings, "20261122_tims1_repair.d")
    upload(settings, raw_file_id, s3_backend, client)
    lost = f"tims1/2026_11/{raw_file_id}/analysis.tdf"
    client.delete_object(Bucket=bucket_of(settings), Key=lost)
    assert not verify_backups(client, AuditSelection(raw_file_id=raw_file_id)).ok
    result = upload(settings, raw_file_id, s3_backend, client)
    assert not result.already_complete and result.uploaded == [f"{raw_file_id}/analysis.tdf"]
    assert_backed_up(settings, raw_file_id, client, tmp_path)


# --- rclone only: strict mode and a concurrent writer -----------------------------------------------------


@pytest.fixture
def rclone(rclone_s3_server: Any) -> S3Backend:
    return backend_of("rclone", rclone_s3_server)


def test_strict_refuses_rclone_naming_the_missing_features(mongo_uri: str, rclone: S3Backend, tmp_path: Path) -> None:
    settings = make_settings(tmp_path, unique_prefix(), compatibility="strict")
    client = rclone.client()
    client.create_bucket(Bucket=bucket_of(settings))  # strict does not auto-create on a store like this one
    raw_file_id = register_thermo(settings, "strict.raw", 1 * MIB)
    with pytest.raises(StoreCapabilityError, match=r"If-None-Match") as refused:
        upload(settings, raw_file_id, rclone, client)
    assert "compatibility" in str(refused.value)
    raw_file = get_raw_file(raw_file_id)
    assert raw_file.backup_status == "upload_failed" and "If-None-Match" in raw_file.backup_status_details
    assert client.list_objects_v2(Bucket=bucket_of(settings)).get("KeyCount", 0) == 0  # nothing uploaded


OTHER = b"another writer's bytes"


@pytest.mark.parametrize(
    "when",
    [
        "before the key check",  # the guard's HEAD finds it: checked, found different, never replaced
        "between the check and the PUT",  # rawvault's PUT replaces it (the store ignores If-None-Match)
        "right after the PUT",  # rawvault's object is replaced before it is verified
        "after the verification",  # replaced before the manifest of the set is written
    ],
)
def test_a_concurrent_writer_never_gets_recorded_as_the_backup(
    mongo_uri: str, rclone: S3Backend, tmp_path: Path, when: str
) -> None:
    settings = make_settings(tmp_path, unique_prefix(), auto_create_buckets=True, max_concurrency=1)
    client, writer = rclone.client(), rclone.client()
    raw_file_id = register_bruker(settings, "20261122_tims1_race.d")
    target = f"tims1/2026_11/{raw_file_id}/analysis.tdf"
    done = [False]

    def write_other(**_kwargs: Any) -> None:
        if not done[0]:
            done[0] = True
            writer.put_object(Bucket=bucket_of(settings), Key=target, Body=OTHER)

    def on(event: str, key: str | None = None) -> None:
        """Run the writer at ``event`` of rawvault's request for ``key`` (the target by default)."""

        def note_key(params: dict[str, Any], context: dict[str, Any], **_kwargs: Any) -> None:
            context["test_key"] = params.get("Key")

        def handler(context: dict[str, Any], **_kwargs: Any) -> None:
            if context.get("test_key") == (key or target):
                write_other()

        client.meta.events.register(f"before-parameter-build.s3.{event.rsplit('.', 1)[1]}", note_key)
        client.meta.events.register(event, handler)

    if when == "before the key check":
        # The check phase lists the set's keys (the key is free then); the first HEAD of the key is the guard's.
        def first_head(params: dict[str, Any], **_kwargs: Any) -> None:
            if params.get("Key") == target:
                write_other()

        client.meta.events.register("before-parameter-build.s3.HeadObject", first_head)
    elif when == "between the check and the PUT":
        on("before-call.s3.PutObject")
    elif when == "right after the PUT":
        on("after-call.s3.PutObject")
    else:
        # analysis.tdf is PUT and its verifying HEAD has answered: another writer replaces it. (Not "when the
        # next file starts": files run side by side, so another file's start may come before this PUT.)
        put_done = [False]

        def after_put(params: dict[str, Any], **_kwargs: Any) -> None:
            put_done[0] = put_done[0] or params.get("Key") == target

        def note_head(params: dict[str, Any], context: dict[str, Any], **_kwargs: Any) -> None:
            context["verifying_head"] = put_done[0] and params.get("Key") == target

        def after_verifying_head(context: dict[str, Any], **_kwargs: Any) -> None:
            if context.get("verifying_head"):
                write_other()

        client.meta.events.register("before-parameter-build.s3.PutObject", after_put)
        client.meta.events.register("before-parameter-build.s3.HeadObject", note_head)
        client.meta.events.register("after-call.s3.HeadObject", after_verifying_head)

    outcome: Any = None
    try:
        outcome = upload(settings, raw_file_id, rclone, client)
    except S3BackupError as error:
        outcome = error
    assert done[0], "the writer ran"
    print(f"{when}: {type(outcome).__name__}: {outcome}")  # for the report: which check stopped it
    raw_file = get_raw_file(raw_file_id)
    held = client.get_object(Bucket=bucket_of(settings), Key=target)["Body"].read()
    recorded_md5 = raw_file.file_info[f"{raw_file_id}/analysis.tdf"][1]
    if raw_file.backup_status == "upload_done":
        # Only when S3 holds the recorded bytes (rawvault's PUT came last), and verify agrees.
        assert hashlib.md5(held).hexdigest() == recorded_md5, f"{when}: upload_done for another writer's bytes"
        assert when == "between the check and the PUT"
        assert verify_backups(client, AuditSelection(raw_file_id=raw_file_id)).ok
    else:
        assert raw_file.backup_status == "upload_failed", outcome
        assert held == OTHER  # the other writer's object is left as it is, never deleted
        assert raw_file.s3_etag is None
        manifest = f"tims1/2026_11/{raw_file_id}.rawvault-manifest.json"
        assert "Contents" not in client.list_objects_v2(Bucket=bucket_of(settings), Prefix=manifest)


# --- moto only: Object Lock and lifecycle on an auto-created bucket; verify and retention -----------------


def test_object_lock_and_lifecycle_on_an_auto_created_bucket(mongo_uri: str, s3_server: Any, tmp_path: Path) -> None:
    moto = backend_of("moto", s3_server)
    lock = {"mode": "GOVERNANCE", "days": 3}
    lifecycle = {
        "abort_incomplete_multipart_days": 7,
        "transition": {"days": 30, "storage_class": "STANDARD_IA"},
        "noncurrent_version_expiration_days": 60,
    }
    settings = make_settings(tmp_path, unique_prefix(), auto_create_buckets=True, object_lock=lock, lifecycle=lifecycle)
    client = moto.client()
    single = register_thermo(settings, "locked.raw", 12 * MIB)  # multipart: moto drops its retention, set after
    bruker = register_bruker(settings, "20261122_tims1_locked.d")
    upload(settings, single, moto, client)
    upload(settings, bruker, moto, client)
    bucket = bucket_of(settings)

    configuration = client.get_object_lock_configuration(Bucket=bucket)["ObjectLockConfiguration"]
    assert configuration["ObjectLockEnabled"] == "Enabled"
    default = configuration["Rule"]["DefaultRetention"]
    assert (default["Mode"], default["Days"], default.get("Years", 0)) == ("GOVERNANCE", 3, 0)
    rules = client.get_bucket_lifecycle_configuration(Bucket=bucket)["Rules"]
    assert any(rule.get("AbortIncompleteMultipartUpload", {}).get("DaysAfterInitiation") == 7 for rule in rules)
    assert any(
        transition.get("StorageClass") == "STANDARD_IA" and transition.get("Days") == 30
        for rule in rules
        for transition in rule.get("Transitions", [])
    )
    assert any(rule.get("NoncurrentVersionExpiration", {}).get("NoncurrentDays") == 60 for rule in rules)

    keys = [f"{BASE}/{single}", f"tims1/2026_11/{bruker}.rawvault-manifest.json"]
    keys += [f"tims1/2026_11/{path}" for path in get_raw_file(bruker).file_info]
    for key in keys:
        head = client.head_object(Bucket=bucket, Key=key)
        retention = retention_from_head(head)
        assert retention is not None and retention.mode == "GOVERNANCE", key
        tagged = client.get_object_tagging(Bucket=bucket, Key=key)["TagSet"]
        assert bool(tagged) == (not key.endswith(".rawvault-manifest.json")), key  # data objects only
    assert verify_backups(client, object_lock=settings.backup.s3.object_lock).ok


def test_verify_flags_an_object_without_retention(mongo_uri: str, s3_server: Any, tmp_path: Path) -> None:
    moto = backend_of("moto", s3_server)
    prefix = unique_prefix()
    unlocked = make_settings(tmp_path, prefix)  # uploads without retention ...
    client = moto.client()
    # ... into a bucket with Object Lock but no default retention.
    client.create_bucket(Bucket=bucket_of(unlocked), ObjectLockEnabledForBucket=True)
    raw_file_id = register_thermo(unlocked, "unlocked.raw", 1 * MIB)
    upload(unlocked, raw_file_id, moto, client)
    only_it = AuditSelection(raw_file_id=raw_file_id)
    assert verify_backups(client, only_it).ok  # no object_lock setting: nothing to check
    locked = make_settings(tmp_path, prefix, object_lock={"mode": "COMPLIANCE", "days": 1})
    report = verify_backups(client, only_it, object_lock=locked.backup.s3.object_lock)
    assert not report.ok
    kinds = {(item.kind.value, item.path) for item in report.drift}
    assert ("retention missing/shorter", raw_file_id) in kinds, report.table()


# --- the bandwidth limit in the upload ------------------------------------------------------------------


def test_upload_at_80_mbit_takes_at_least_3_5_seconds_and_logs_the_limit(
    mongo_uri: str, s3_server: Any, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    moto = backend_of("moto", s3_server)
    settings = make_settings(tmp_path, unique_prefix(), auto_create_buckets=True, bandwidth={"limit_mbit": 80})
    client = moto.client()
    raw_file_id = register_thermo(settings, "throttled.raw", 40 * MIB)
    started = time.monotonic()
    with caplog.at_level("INFO", logger="rawvault"):
        upload(settings, raw_file_id, moto, client)
    assert time.monotonic() - started >= 3.5  # 40 MiB at 10 MB/s: 4.19 s less one burst; a lower bound only
    assert get_raw_file(raw_file_id).backup_status == "upload_done"
    assert "bandwidth limit 80 Mbit/s, achieved" in caplog.text  # on the progress lines
