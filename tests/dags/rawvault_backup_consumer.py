"""The README's example consumer: a facility's processing DAG scheduled on "backed up" (README "Airflow assets").

tests/integration/test_upload_events.py runs it after a real upload, started by the scheduler's own code.
"""

from __future__ import annotations

from datetime import datetime

from airflow.sdk import DAG, Asset, task

THERMO1_BACKED_UP = Asset("x-rawvault://thermo1")  # one asset per instrument, named by its URI

with DAG(
    dag_id="process_thermo1_backups",
    schedule=[THERMO1_BACKED_UP],
    start_date=datetime(2026, 1, 1),
    catchup=False,
):

    @task(inlets=[THERMO1_BACKED_UP])
    def process_backed_up_raw_file(*, triggering_asset_events=None, inlet_events=None) -> dict:
        """Start processing from the S3 copy: the event's extra says where it is."""
        events = list((triggering_asset_events or {}).get(THERMO1_BACKED_UP, [])) or list(
            inlet_events[THERMO1_BACKED_UP][-1:]
        )
        extra = dict(events[-1].extra)
        print(f"processing {extra['raw_file_id']} from {extra['s3_backup_key']} (ETag {extra['etag']})")
        return extra

    process_backed_up_raw_file()
