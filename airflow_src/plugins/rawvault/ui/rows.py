"""The Backups page's table rows: one raw ``raw_file`` document (and its alert record) as the JSON a row shows.

No Airflow imports and no queries: :mod:`rawvault.ui.queries` reads the
documents and the alert records and builds the page from these rows.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote, urlencode

from rawvault.keys import handler_dag_id
from shared.db.alerts import OK_STATE
from shared.db.models import BackupStatus
from shared.db.predicates import PIPELINE_ERROR_STATUS


def format_size(size: int | None) -> str:
    """``size`` in bytes as B, KiB, MiB, GiB or TiB with one decimal; an empty string when unknown."""
    if size is None:
        return ""
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(value) < 1024:
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} TiB"


def format_age(seconds: float | None) -> str:
    """A coarse age: ``45 s``, ``12 min``, ``5 h``, ``3 d``."""
    if seconds is None:
        return ""
    seconds = max(0.0, seconds)
    for limit, divisor, unit in ((60, 1, "s"), (3600, 60, "min"), (86400, 3600, "h")):
        if seconds < limit:
            return f"{int(seconds // divisor)} {unit}"
    return f"{int(seconds // 86400)} d"


def acquisition_runs_path(instrument_id: str, raw_file_id: str) -> str:
    """Path, relative to the Airflow UI's base URL, of the handler runs whose conf names this raw file.

    The Airflow 3 UI's DAG runs tab (``dags/<dag_id>/runs``) filters with
    ``conf_contains``; the quoted id matches the conf value exactly where JSON
    writes it unchanged (plain ASCII without quotes or backslashes).
    """
    dag_id = handler_dag_id(instrument_id)
    plain = raw_file_id.isascii() and raw_file_id.isprintable() and not set(raw_file_id) & {'"', "\\"}
    needle = f'"{raw_file_id}"' if plain else raw_file_id
    return f"dags/{quote(dag_id, safe='')}/runs?{urlencode({'conf_contains': needle})}"


def _as_utc(value: datetime | None) -> datetime | None:
    if value is None:
        return None
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def _iso(value: datetime | None) -> str | None:
    value = _as_utc(value)
    return value.isoformat() if value else None


def format_eta(seconds: float | None) -> str:
    """An ETA as ``H:MM:SS``; ``unknown`` while there is no rate yet."""
    if seconds is None or seconds < 0:
        return "unknown"
    whole = round(seconds)
    return f"{whole // 3600}:{whole % 3600 // 60:02d}:{whole % 60:02d}"


def upload_progress_field(doc: dict[str, Any], now: datetime) -> dict[str, Any] | None:
    """A running upload's progress as its heartbeat last recorded it (``upload_progress``), or None."""
    progress = doc.get("upload_progress")
    if doc.get("backup_status") != BackupStatus.UPLOAD_IN_PROGRESS.value or not progress:
        return None
    done, total = int(progress.get("bytes_done") or 0), int(progress.get("bytes_total") or 0)
    at = _as_utc(progress.get("at"))
    rate = float(progress.get("bytes_per_second") or 0.0)
    return {
        "bytes_done": done,
        "bytes_total": total,
        "percent": round(100.0 * done / total, 1) if total else 100.0,
        "done_human": format_size(done),
        "total_human": format_size(total),
        "mib_per_second": round(rate / (1 << 20), 1),
        "eta_seconds": progress.get("eta_seconds"),
        "eta": format_eta(progress.get("eta_seconds")),
        "at": at.isoformat() if at else None,
        "age": format_age((now - at).total_seconds()) if at else "",
    }


def last_alert_field(record: dict[str, Any] | None) -> dict[str, Any] | None:
    """A row's ``last_alert``: the state last announced for the raw file (``open``: not resolved), or None."""
    if record is None:
        return None
    return {
        "state": record["state"],
        "kind": record.get("kind") or None,
        "open": record["state"] != OK_STATE,
        "at": _iso(record.get("changed_at")),
        "title": record.get("title"),
        "last_bad_state": record.get("last_bad_state"),
        "last_bad_at": _iso(record.get("last_bad_at")),
    }


def raw_file_row(
    doc: dict[str, Any], *, now: datetime, stuck: bool, last_alert: dict[str, Any] | None = None
) -> dict[str, Any]:
    """One table row from a raw ``raw_file`` document (no mongoengine defaults filled in).

    The document has the columns of ``shared.db.backups_view.ROW_PROJECTION``
    (``file_count`` and a set's ``size`` computed by MongoDB) or is whole.

    ``stuck`` comes from the query group the document was found in, so the row
    and the sort always agree; ``last_alert`` is the raw file's alert ledger
    record (:func:`shared.db.alerts.last_alerts`).
    """
    file_info = doc.get("file_info") or {}
    size = doc.get("size")
    if size is None and file_info:
        size = sum(int(entry[0]) for entry in file_info.values() if entry)
    file_count = doc["file_count"] if "file_count" in doc else len(file_info)
    created_at = _as_utc(doc.get("created_at"))
    updated_at = _as_utc(doc.get("db_updated_at"))
    purged_at = _as_utc(doc.get("purged_at"))
    age_seconds = (now - created_at).total_seconds() if created_at else None
    backup_status = doc.get("backup_status")
    raw_file_id = str(doc["_id"])
    instrument_id = doc.get("instrument_id") or ""
    return {
        "id": raw_file_id,
        "original_name": doc.get("original_name"),
        "instrument_id": instrument_id,
        "instrument_type": doc.get("instrument_type"),
        "project_id": doc.get("project_id"),
        "size": size,
        "size_human": format_size(size),
        "file_count": file_count,
        "status": doc.get("status"),
        "status_details": doc.get("status_details"),
        "backup_status": backup_status,
        "backup_status_details": doc.get("backup_status_details"),
        "failed": backup_status in BackupStatus.FAILED or doc.get("status") == PIPELINE_ERROR_STATUS,
        "pipeline_error": doc.get("status") == PIPELINE_ERROR_STATUS,
        "stuck": stuck,
        "s3_backup_key": doc.get("s3_backup_key"),
        "s3_etag": doc.get("s3_etag"),
        "s3_upload_attempts": doc.get("s3_upload_attempts") or 0,
        "created_at": created_at.isoformat() if created_at else None,
        "updated_at": updated_at.isoformat() if updated_at else None,
        # The purge (file_remover): when the set was deleted from the share, or why it is kept.
        "purged_at": purged_at.isoformat() if purged_at else None,
        "purge_blocked_reason": doc.get("purge_blocked_reason"),
        "age_seconds": age_seconds,
        "age": format_age(age_seconds),
        "acquisition_runs_path": acquisition_runs_path(instrument_id, raw_file_id),
        # Scrubbing (backup_verifier, verify --read-data): the last re-read of the data in S3 and the local backup.
        "scrub_status": doc.get("scrub_status"),  # ok | drift | None (never scrubbed)
        "scrub_details": doc.get("scrub_details"),
        "scrubbed_at": _iso(doc.get("scrubbed_at")),
        "last_alert": last_alert_field(last_alert),
        # The running upload's bytes, rate and ETA (recorded by the claim's heartbeat with its lease).
        "upload_progress": upload_progress_field(doc, now),
    }


__all__ = [
    "acquisition_runs_path",
    "format_age",
    "format_eta",
    "format_size",
    "last_alert_field",
    "raw_file_row",
    "upload_progress_field",
]
