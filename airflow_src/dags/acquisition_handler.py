"""acquisition_handler.<instrument_id>: monitor -> checksum -> local copy -> (S3 upload | file mover)."""

from __future__ import annotations

from datetime import timedelta

from airflow.providers.standard.operators.python import PythonOperator
from airflow.providers.standard.operators.trigger_dagrun import TriggerDagRunOperator
from airflow.providers.standard.sensors.python import PythonSensor
from airflow.sdk import DAG, Param

from rawvault.impl import tasks
from rawvault.impl.context import run_id_for
from rawvault.impl.dag_defaults import S3_UPLOAD_POOL, S3_UPLOADER_QUEUE, dag_kwargs
from shared.settings import get_settings

DOC = """
Backs up one acquisition (conf: `{"raw_file_id": ...}`, set by `instrument_watcher`).
`monitor_acquisition` waits for it to finish, `compute_checksum` records size, MD5 and
S3 ETag of every file, `copy_raw_file` makes the verified local copy; then `upload_to_s3`
(S3 backups only) and `start_file_mover` run side by side. Retry any failed task by clearing it.
"""

settings = get_settings()

for instrument_id in settings.instruments:
    with DAG(
        dag_id=f"acquisition_handler.{instrument_id}",
        schedule=None,
        params={"raw_file_id": Param(type="string", minLength=1, description="id of the RawFile to back up")},
        # Many acquisitions may wait for an upload slot or an S3 retry at once: that must never hold back
        # the monitoring, checksum and local copy of new ones (pools and worker slots are the real limits).
        max_active_runs=settings.airflow.max_active_handler_runs,
        max_active_tasks=settings.airflow.max_active_handler_runs,
        user_defined_macros={"run_id_for": run_id_for},
        **dag_kwargs(settings, instrument_id, queue=instrument_id, doc_md=DOC),
    ):
        monitor = PythonSensor(
            task_id="monitor_acquisition",
            python_callable=tasks.monitor_acquisition,
            mode="reschedule",
            poke_interval=settings.acquisition.poke_interval_seconds,
            timeout=settings.acquisition.timeout_hours * 3600,
        )
        checksum = PythonOperator(task_id="compute_checksum", python_callable=tasks.compute_checksum)
        copy = PythonOperator(task_id="copy_raw_file", python_callable=tasks.copy_raw_file)
        if settings.file_mover.delay_minutes < 0:
            start_mover = PythonOperator(task_id="start_file_mover", python_callable=tasks.file_mover_disabled)
        else:
            start_mover = TriggerDagRunOperator(
                task_id="start_file_mover",
                trigger_dag_id=f"file_mover.{instrument_id}",
                conf={"raw_file_id": "{{ params.raw_file_id }}"},
                trigger_run_id="{{ run_id_for(params.raw_file_id) }}",
                skip_when_already_exists=True,
            )
        monitor >> checksum >> copy >> start_mover

        if settings.s3_enabled:
            s3 = settings.backup.s3
            upload = PythonOperator(
                task_id="upload_to_s3",
                python_callable=tasks.upload_to_s3,
                queue=settings.queue(S3_UPLOADER_QUEUE),
                pool=S3_UPLOAD_POOL,
                retries=s3.upload_retries,
                retry_delay=timedelta(minutes=s3.upload_retry_delay_minutes),
                retry_exponential_backoff=True,
                max_retry_delay=timedelta(hours=6),
                execution_timeout=timedelta(hours=s3.upload_timeout_hours),
            )
            copy >> upload
