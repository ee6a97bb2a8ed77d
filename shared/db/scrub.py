"""Scrub state of the raw files: which to re-read next within a byte budget, and what a re-read found.

The selection walks the index ``(backup_status, scrubbed_at, created_at)``
from its start (``upload_done``, never scrubbed first, then least recently
scrubbed, oldest acquisition first among equals) and stops as soon as the
budget is full or the next raw file was scrubbed too recently: it reads the
raw files it selects plus one, never sorts or scans the collection.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Unpack

from shared.db.interface import connect_db, select_uploaded_raw_files, update_raw_file
from shared.db.models import BackupStatus, RawFile, ScrubStatus
from shared.db.uploaded_filter import UploadedFilters

MAX_DETAILS_CHARS = 4000
_WALK_BATCH = 50


def recorded_bytes(file_info: dict[str, Any] | None, size: int | None = None) -> int:
    """The bytes of a raw file's data: the sum of its ``file_info`` sizes (``size`` when there is none)."""
    total = 0
    for entry in (file_info or {}).values():
        try:
            total += max(0, int(entry[0]))
        except (TypeError, ValueError, IndexError):
            continue
    return total if file_info else max(0, size or 0)


@dataclass
class ScrubSelection:
    """The raw files one scrub re-reads, their bytes, and those left out because they alone exceed the budget."""

    raw_file_ids: list[str] = field(default_factory=list)
    bytes: int = 0
    too_large: list[tuple[str, int]] = field(default_factory=list)  # (raw file id, bytes)


def select_for_scrub(
    *, budget_bytes: int, due_before: datetime | None = None, **filters: Unpack[UploadedFilters]
) -> ScrubSelection:
    """The least recently scrubbed ``upload_done`` raw files whose data fit in ``budget_bytes`` together.

    ``due_before``: only raw files never scrubbed or scrubbed before it. A raw
    file larger than the whole budget is never read; it is listed in
    ``too_large`` (raise the budget) and the walk goes on past it. The filters
    are those of :func:`shared.db.interface.select_uploaded_raw_files`.
    """
    selection = ScrubSelection()
    queryset = select_uploaded_raw_files(**filters)
    walk = queryset.order_by("scrubbed_at", "created_at").only("id", "size", "scrubbed_at")
    for raw_file in walk.no_cache().batch_size(_WALK_BATCH):  # no_cache: never 100 documents ahead
        if due_before is not None and raw_file.scrubbed_at is not None and raw_file.scrubbed_at >= due_before:
            break  # this one and every later one were scrubbed recently enough
        size = raw_file.size if raw_file.size is not None else _bytes_of(raw_file.id)
        if size > budget_bytes:
            selection.too_large.append((raw_file.id, size))
            continue
        if selection.bytes + size > budget_bytes:
            break
        selection.raw_file_ids.append(raw_file.id)
        selection.bytes += size
    return selection


def _bytes_of(raw_file_id: str) -> int:
    """The data bytes of a raw file recorded without ``size`` (written before it was recorded): from its file_info."""
    found = RawFile.objects(id=raw_file_id).only("file_info").first()
    return recorded_bytes(found.file_info if found else None)


def count_not_scrubbed_since(before: datetime) -> int:
    """``upload_done`` raw files not re-read since ``before``: scrubbed earlier, or never and acquired earlier."""
    connect_db()
    done = BackupStatus.UPLOAD_DONE.value
    stale = RawFile.objects(backup_status=done, scrubbed_at__lt=before).count()
    never = RawFile.objects(backup_status=done, scrubbed_at=None, created_at__lt=before).count()
    return stale + never


def record_scrub_result(raw_file_id: str, *, drift: list[str], at: datetime) -> None:
    """Record a completed scrub of one raw file: ``ok`` without ``drift`` lines, else ``drift`` and the lines."""
    details = "\n".join(drift)
    if len(details) > MAX_DETAILS_CHARS:
        details = details[: MAX_DETAILS_CHARS - 1] + "…"
    update_raw_file(
        raw_file_id,
        scrubbed_at=at,
        scrub_status=(ScrubStatus.DRIFT if drift else ScrubStatus.OK).value,
        scrub_details=details or None,
    )


__all__ = [
    "ScrubSelection",
    "count_not_scrubbed_since",
    "record_scrub_result",
    "recorded_bytes",
    "select_for_scrub",
]
