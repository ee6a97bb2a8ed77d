"""Raw files as the Backups page tests seed them: a status pair and ages in hours, saved as new documents."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from shared.db.models import RawFile


def insert_raw_file(
    raw_file_id: str,
    instrument: str,
    project: str,
    status: str,
    backup_status: str | None,
    created_hours_ago: float,
    updated_hours_ago: float,
    *,
    now: datetime,
    **extra: Any,
) -> None:
    """Insert a raw file created and last updated that many hours before ``now`` (no backup status: none set)."""
    fields = {"backup_status": backup_status} if backup_status else {}
    RawFile(
        id=raw_file_id,
        original_name=raw_file_id,
        instrument_id=instrument,
        project_id=project,
        status=status,
        created_at=now - timedelta(hours=created_hours_ago),
        db_updated_at=now - timedelta(hours=updated_hours_ago),
        **fields,
        **extra,
    ).save(force_insert=True)
