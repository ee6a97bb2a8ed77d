"""The Backups page's facility panel: the last free space of each folder, and what each S3 store can do.

The api-server may not mount the instrument shares, so it never measures: it shows the last measurement
(``shared.db.free_space``, recorded by the alert check) with its time, and the last probe of each bucket's
store (``shared.db.s3_stores``). No Airflow imports.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from rawvault.ui.rows import format_age, format_size
from shared.db.free_space import BACKUP_ROOT, latest_free_space
from shared.db.s3_stores import list_store_capabilities


def free_space_rows(instruments: tuple[str, ...], now: datetime) -> list[dict[str, Any]]:
    """One row per instrument folder the caller may read, then the backup root; unmeasured ones say so."""
    folders = [(f"instrument:{iid}", f"instrument {iid}") for iid in instruments] + [(BACKUP_ROOT, "backup root")]
    found = latest_free_space(folder_id for folder_id, _ in folders)
    rows: list[dict[str, Any]] = []
    for folder_id, label in folders:
        measured = found.get(folder_id)
        if measured is None:
            rows.append({"folder": folder_id, "label": label, "measured_at": None})
            continue
        at = measured["measured_at"]
        at = at if at.tzinfo else at.replace(tzinfo=UTC)
        free, total = int(measured["free_bytes"]), int(measured["total_bytes"])
        rows.append(
            {
                "folder": folder_id,
                "label": label,
                "path": measured.get("path"),
                "free_bytes": free,
                "total_bytes": total,
                "free_human": format_size(free),
                "total_human": format_size(total),
                "free_percent": round(100.0 * free / total, 1) if total else None,
                "measured_at": at.isoformat(),
                "measured_age": format_age((now - at).total_seconds()),
            }
        )
    return rows


def store_rows(now: datetime) -> list[dict[str, Any]]:
    """Each probed bucket: its store, the probe's one-line summary and weaknesses, and when it was probed."""
    rows = []
    for store in list_store_capabilities():
        probed_at = store.probed_at if store.probed_at.tzinfo else store.probed_at.replace(tzinfo=UTC)
        rows.append(
            {
                "endpoint": store.endpoint,
                "bucket": store.bucket,
                "summary": store.summary or "",
                "weaknesses": list(store.weaknesses or []),
                "probed_at": probed_at.isoformat(),
                "probed_age": format_age((now - probed_at).total_seconds()),
            }
        )
    return rows
