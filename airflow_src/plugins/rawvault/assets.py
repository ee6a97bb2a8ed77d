"""The Airflow assets rawvault updates: one per instrument, "its raw files are backed up and verified in S3".

An asset's URI is ``x-rawvault://<instrument_id>`` (Airflow 3 keeps URIs of
an ``x-`` scheme as written, and an asset declared by URI alone is named by
it, so a consumer writes ``Asset("x-rawvault://thermo1")``). Every verified
upload (``upload_to_s3`` of the handler, and of ``s3_upload_retry``) emits one
event with :func:`event_extra` (README "Airflow assets"). Plain functions: the
Airflow objects are made in :mod:`rawvault.impl.assets`.
"""

from __future__ import annotations

from typing import Any

ASSET_SCHEME = "x-rawvault"
RETRY_ALIAS = "rawvault_retried_backups"  # s3_upload_retry's outlet: it learns the instrument only at run time


def backup_asset_uri(instrument_id: str) -> str:
    """The URI (and name) of instrument ``instrument_id``'s backup asset."""
    return f"{ASSET_SCHEME}://{instrument_id}"


def event_extra(
    *, raw_file_id: str, instrument_id: str, bucket: str, key_prefix: str, s3_etag: str, uploaded: int
) -> dict[str, Any]:
    """The extra of one "backed up" event: enough for a consumer to find the data without the database."""
    return {
        "raw_file_id": raw_file_id,
        "instrument_id": instrument_id,
        "bucket": bucket,
        "key_prefix": key_prefix,
        "s3_backup_key": f"s3://{bucket}/{key_prefix}",
        "etag": s3_etag,
        "files_uploaded": uploaded,
    }
