"""The ``s3_store`` collection: what each S3 store's bucket can do, as probed (rawvault.s3.capabilities).

One document per store endpoint and bucket, replaced by every new probe. The
capabilities are kept as the plain mapping ``StoreCapabilities.to_document()``
gives (this module never imports rawvault), with its one-line summary and its
weaknesses as fields of their own for the Backups page.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from mongoengine import DateTimeField, DictField, Document, ListField, StringField

from shared.db.interface import connect_db
from shared.db.models import utc_now


class S3Store(Document):
    """One bucket of one S3 store and what it did when probed."""

    id = StringField(primary_key=True)  # "<endpoint> <bucket>" (see store_id)
    endpoint = StringField(required=True)
    bucket = StringField(required=True)
    probed_at = DateTimeField(required=True)
    summary = StringField()
    weaknesses = ListField(StringField())
    capabilities = DictField()
    db_updated_at = DateTimeField(default=utc_now)

    # One document per probed bucket (a few): the Backups page lists them in this index's order.
    meta = {"collection": "s3_store", "indexes": [{"fields": ["endpoint", "bucket"]}], "strict": False}


def store_id(endpoint: str, bucket: str) -> str:
    """The document id of ``bucket`` at ``endpoint`` (a space never occurs in a URL or a bucket name)."""
    return f"{endpoint.rstrip('/')} {bucket}"


def load_store_capabilities(endpoint: str, bucket: str) -> dict[str, Any] | None:
    """The capabilities saved for ``bucket`` at ``endpoint``, or ``None`` when it was never probed."""
    connect_db()
    store = S3Store.objects(id=store_id(endpoint, bucket)).first()
    if store is None:
        return None
    document = dict(store.capabilities)
    probed_at = store.probed_at
    document["probed_at"] = probed_at if probed_at.tzinfo else probed_at.replace(tzinfo=UTC)
    return document


def save_store_capabilities(endpoint: str, bucket: str, capabilities: Mapping[str, Any]) -> None:
    """Record a probe's result (``StoreCapabilities.to_document()``), replacing the previous one."""
    connect_db()
    document = dict(capabilities)
    probed_at = document.get("probed_at")
    if not isinstance(probed_at, datetime):
        raise ValueError(f"capabilities of s3://{bucket} at {endpoint} have no probed_at datetime: {probed_at!r}")
    S3Store.objects(id=store_id(endpoint, bucket)).update_one(
        upsert=True,
        set__endpoint=endpoint.rstrip("/"),
        set__bucket=bucket,
        set__probed_at=probed_at,
        set__summary=str(document.get("summary", "")),
        set__weaknesses=[str(item) for item in document.get("weaknesses", [])],
        set__capabilities={key: value for key, value in document.items() if key != "probed_at"},
        set__db_updated_at=utc_now(),
    )


def list_store_capabilities() -> list[S3Store]:
    """Every probed bucket, by endpoint and bucket (for the Backups page)."""
    connect_db()
    return list(S3Store.objects.order_by("endpoint", "bucket"))


__all__ = ["S3Store", "list_store_capabilities", "load_store_capabilities", "save_store_capabilities", "store_id"]
