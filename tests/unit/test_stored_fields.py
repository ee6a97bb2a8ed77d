"""The stored shape of ``RawFile`` and ``Project`` is the contract: collection, keys, their order, indexes.

A document saved with every field set must read back from the raw collection
with exactly these keys in exactly this order (BSON keeps the order written),
however the model's Python classes are organised.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from mongoengine import DateTimeField, DictField, StringField

from shared.db.models import Project, RawFile

pytest_plugins = ["tests.unit.fakes"]

RAW_FILE_KEYS = [
    "_id", "original_name", "instrument_id", "instrument_type", "project_id", "status", "status_details", "size",
    "source_inode", "source_mtime_ns", "source_mtimes", "created_at", "error_step", "error_at", "error_transient",
    "redrive_count", "redriven_at", "monitor_size", "monitor_size_since", "file_info", "staging_token",
    "etag_part_size", "backup_status", "backup_status_details", "backup_base_path", "s3_backup_key", "s3_etag",
    "s3_upload_attempts", "s3_upload_attempted_at", "s3_upload_failed_at", "s3_multipart_uploads",
    "upload_claim_owner", "upload_claim_expires_at", "upload_progress", "sample_key", "purge_started_at",
    "purged_at", "purge_checked_at", "purge_blocked_reason", "purge_evidence", "scrubbed_at", "scrub_status",
    "scrub_details", "db_created_at", "db_updated_at",
]  # fmt: skip
RAW_FILE_INDEXES = [
    [("backup_status", 1), ("created_at", 1), ("_id", 1)],
    [("status", 1), ("backup_status", 1), ("created_at", 1), ("_id", 1)],
    [("instrument_id", 1), ("backup_status", 1), ("created_at", 1), ("_id", 1)],
    [("project_id", 1), ("backup_status", 1), ("created_at", 1), ("_id", 1)],
    [("created_at", 1), ("_id", 1)],
    [("instrument_id", 1), ("created_at", 1), ("_id", 1)],
    [("instrument_id", 1), ("original_name", 1)],
    [("instrument_id", 1), ("project_id", 1)],
    [("backup_status", 1), ("db_updated_at", 1), ("status", 1)],
    [("instrument_id", 1), ("status", 1), ("created_at", 1), ("_id", 1)],
    [("backup_status", 1), ("s3_upload_attempts", 1)],
    [("backup_status", 1), ("sample_key", 1)],
    [("backup_status", 1), ("scrubbed_at", 1), ("created_at", 1)],
    [("scrub_status", 1)],
    [("purge_blocked_reason", 1)],
]
AT = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)


def _value(name: str, field: Any) -> Any:
    if field.choices:
        return field.choices[0]
    if isinstance(field, DateTimeField):
        return AT
    if isinstance(field, DictField):
        return {"key": 1}
    if isinstance(field, StringField):
        return f"{name}-value"
    return 1  # IntField, FloatField, BooleanField take a number


def _every_field_set() -> RawFile:
    return RawFile(**{name: _value(name, field) for name, field in RawFile._fields.items()})


def test_a_raw_file_with_every_field_set_is_stored_with_the_same_keys_in_the_same_order(fake_db: None) -> None:
    assert RawFile._get_collection_name() == "raw_file"
    assert list(_every_field_set().to_mongo().keys()) == RAW_FILE_KEYS
    _every_field_set().save()
    stored = RawFile._get_collection().find_one({"_id": "id-value"})
    assert list(stored.keys()) == RAW_FILE_KEYS  # no _cls, nothing nested


def test_the_raw_file_indexes_are_unchanged() -> None:
    specs = [(spec["fields"], spec.get("sparse", False)) for spec in RawFile._meta["index_specs"]]
    assert [fields for fields, _sparse in specs] == RAW_FILE_INDEXES
    assert [sparse for _fields, sparse in specs] == [False] * 13 + [True, True]
    assert RawFile._meta["strict"] is False


def test_a_project_is_stored_with_the_same_keys(fake_db: None) -> None:
    Project(id="p1", name="n", description="d").save()
    stored = Project._get_collection().find_one({"_id": "p1"})
    assert Project._get_collection_name() == "project"
    assert list(stored.keys()) == ["_id", "name", "description", "db_created_at"]
