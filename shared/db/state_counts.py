"""Raw files per backup status, for the state metrics: one index count per status, never a collection scan."""

from __future__ import annotations

from shared.db.coverage import ALL_BACKUP_STATUSES
from shared.db.interface import connect_db
from shared.db.models import RawFile


def backup_status_counts() -> dict[str | None, int]:
    """Status -> number of raw files (``None``: no backup started yet), each counted on the ``backup_status`` index."""
    connect_db()
    collection = RawFile._get_collection()
    return {status: collection.count_documents({"backup_status": status}) for status in ALL_BACKUP_STATUSES}
