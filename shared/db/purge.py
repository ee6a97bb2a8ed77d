"""Reads of the ``raw_file`` collection for the purge (``rawvault.purge``); it writes through ``update_raw_file``."""

from __future__ import annotations

from shared.db.interface import connect_db
from shared.db.models import RawFile, RawFileStatus

# What choosing the candidates needs; a set that is checked is read whole (get_raw_file).
CANDIDATE_FIELDS = ("id", "instrument_id", "original_name", "created_at", "size", "status", "purge_started_at")


def purge_candidates(instrument_id: str) -> list[RawFile]:
    """The instrument's moved raw files: purges a crash interrupted first, then the oldest acquisition first."""
    connect_db()
    moved = RawFile.objects(instrument_id=instrument_id, status=RawFileStatus.MOVED.value)
    candidates = list(moved.only(*CANDIDATE_FIELDS).order_by("created_at", "id"))
    return sorted(candidates, key=lambda raw_file: raw_file.purge_started_at is None)  # stable: keeps the age order


__all__ = ["CANDIDATE_FIELDS", "purge_candidates"]
