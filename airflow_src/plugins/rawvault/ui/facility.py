"""The Backups page's facility panel: last free space per folder and totals per instrument and project.

The alert check measures and computes both (``shared.db.totals``: at most hourly).

The api-server may not mount the instrument shares, so it never measures: it shows the last measurement
(``shared.db.free_space``, recorded by the alert check) with its time. The stores' capabilities are
``GET stores`` (:func:`rawvault.ui.queries.store_rows`, for callers who may read every DAG). No Airflow imports.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from rawvault.ui.rows import format_age, format_size
from shared.db.free_space import BACKUP_ROOT, latest_free_space
from shared.db.totals import latest_totals


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


def _share(part: int, whole: int) -> float | None:
    return round(100.0 * part / whole, 1) if whole else None


def totals_rows(instruments: tuple[str, ...], now: datetime) -> list[dict[str, Any]]:
    """One row per (instrument, project) of these instruments, from the alert check's last snapshot.

    The page never aggregates; an instrument never computed has one row saying so.
    """
    found = latest_totals(instruments)
    rows: list[dict[str, Any]] = []
    for instrument_id in instruments:
        snapshot = found.get(instrument_id)
        if snapshot is None:
            rows.append({"instrument_id": instrument_id, "measured_at": None})
            continue
        at = snapshot["measured_at"]
        at = at if at.tzinfo else at.replace(tzinfo=UTC)
        for project in snapshot.get("projects") or []:
            raw_files, size = int(project["raw_files"]), int(project["bytes"])
            rows.append(
                {
                    **project,
                    "instrument_id": instrument_id,
                    "bytes_human": format_size(size),
                    "verified_by": snapshot.get("verified_by"),
                    "verified_percent": _share(int(project["verified_raw_files"]), raw_files),
                    "verified_bytes_percent": _share(int(project["verified_bytes"]), size),
                    "measured_at": at.isoformat(),
                    "measured_age": format_age((now - at).total_seconds()),
                }
            )
    return rows
