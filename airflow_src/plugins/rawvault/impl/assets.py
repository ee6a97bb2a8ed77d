"""The Airflow side of :mod:`rawvault.assets`: the outlets of the upload tasks and the extra of their events."""

from __future__ import annotations

import logging
from typing import Any

from airflow.sdk import Asset, AssetAlias

from rawvault.assets import RETRY_ALIAS, backup_asset_uri, event_extra

log = logging.getLogger(__name__)


def backup_asset(instrument_id: str) -> Asset:
    """Instrument ``instrument_id``'s asset "backed up and verified in S3" (named by its URI)."""
    uri = backup_asset_uri(instrument_id)
    return Asset(name=uri, uri=uri)


def retry_alias() -> AssetAlias:
    """s3_upload_retry's outlet: the instrument's asset is attached to it at run time."""
    return AssetAlias(name=RETRY_ALIAS)


def record_backup_event(context: dict[str, Any], instrument_id: str, raw_file_id: str, result: Any) -> None:
    """Give this run's asset event its extra (raw file id, bucket, key prefix, ETag).

    The handler's task has the instrument's asset as its outlet: Airflow emits its event when the task
    succeeds, with this extra. The retry DAG's task has the alias: the event is added to the instrument's asset.
    """
    extra = event_extra(
        raw_file_id=raw_file_id,
        instrument_id=instrument_id,
        bucket=result.bucket,
        key_prefix=result.key_prefix,
        s3_etag=result.s3_etag,
        uploaded=len(result.uploaded),
    )
    outlet_events = context["outlet_events"]
    outlets = {getattr(outlet, "name", None) for outlet in getattr(context.get("task"), "outlets", None) or []}
    asset = backup_asset(instrument_id)
    if asset.name in outlets:
        outlet_events[asset].extra.update(extra)
    elif RETRY_ALIAS in outlets:
        outlet_events[retry_alias()].add(asset, extra=extra)
    else:
        log.warning("%s: the task has no rawvault asset outlet: no asset event", raw_file_id)
