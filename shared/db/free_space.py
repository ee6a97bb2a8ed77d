"""The last free-space measurement of each watched folder (instrument folders, backup root), for the Backups page.

The api-server may not mount the shares, so the alert check (on the maintenance queue, where they are
mounted) records what it measured here and the page shows the last measurement with its time. One small
document per folder, replaced at each check; read by ``_id`` only.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from mongoengine import DateTimeField, Document, IntField, StringField

from shared.db.interface import connect_db

BACKUP_ROOT = "backup"  # the id of the backup root's measurement; instrument folders: "instrument:<id>"


class FreeSpace(Document):
    """Free and total bytes of one folder's file system when the alert check last measured it."""

    id = StringField(primary_key=True)  # "backup" or "instrument:<instrument id>"
    path = StringField(required=True)
    free_bytes = IntField(required=True)
    total_bytes = IntField(required=True)
    measured_at = DateTimeField(required=True)

    meta = {"collection": "free_space", "strict": False}


def record_free_space(measurements: Iterable[dict[str, Any]]) -> int:
    """Replace each folder's measurement (``id``, ``path``, ``free_bytes``, ``total_bytes``, ``measured_at``)."""
    connect_db()
    collection = FreeSpace._get_collection()
    count = 0
    for measurement in measurements:
        document = {key: value for key, value in measurement.items() if key != "id"}
        collection.replace_one({"_id": measurement["id"]}, document, upsert=True)
        count += 1
    return count


def latest_free_space(folder_ids: Iterable[str]) -> dict[str, dict[str, Any]]:
    """The last measurement of each of these folders (by id); folders never measured are left out."""
    connect_db()
    ids = list(folder_ids)
    found = FreeSpace._get_collection().find({"_id": {"$in": ids}})
    return {doc.pop("_id"): doc for doc in found}
