"""acquisition_handler.<instrument_id>: monitor -> checksum -> local copy -> (S3 upload | file mover)."""

from __future__ import annotations

from datetime import timedelta

from airflow.providers.standard.operators.python import PythonOperator
from airflow.providers.standard.operators.trigger_dagrun import TriggerDagRunOperator
from airflow.providers.standard.sensors.python import PythonSensor
from airflow.sdk import DAG

from rawvault import keys
from rawvault.impl import assets, tasks
from rawvault.impl.dag_defaults import per_raw_file_dag_kwargs
from rawvault.impl.handler_failures import record_handler_failure
from shared.settings import get_settings

DOC = """
Backs up one acquisition (conf: `{"raw_file_id": ...}`, set by `instrument_watcher`).
`monitor_acquisition` waits for it to finish, `compute_checksum` records size, MD5 and
S3 ETag of every file, `copy_raw_file` makes the verified local copy; then `upload_to_s3`
(S3 backups only) and `start_file_mover` run side by side. Retry any failed task by clearing it.
A failed task (after its retries) is recorded on the RawFile (`status=error`, step, reason, time, transient
or not); `acquisition_redrive` starts a transient one again as a new run (`...__redrive<N>`).
"""

settings = get_settings()

for instrument_id in settings.instruments:
    with DAG(
        dag_id=keys.handler_dag_id(instrument_id),
        # Many acquisitions may wait for an upload slot or an S3 retry at once: that must never hold back
        # the monitoring, checksum and local copy of new ones (pools and worker slots are the real limits).
        max_active_runs=settings.airflow.max_active_handler_runs,
        max_active_tasks=settings.airflow.max_active_handler_runs,
        user_defined_macros={keys.RUN_ID_MACRO: keys.run_id_for},
        **per_raw_file_dag_kwargs(settings, instrument_id, queue=instrument_id, doc_md=DOC, purpose="back up"),
    ):
        # Every pipeline task records its final failure on the RawFile (upload_to_s3 records its own).
        recorded = {"on_failure_callback": record_handler_failure}
        step_timeout = timedelta(hours=settings.acquisition.step_timeout_hours)
        monitor = PythonSensor(
            task_id=keys.MONITOR_ACQUISITION_TASK,
            python_callable=tasks.monitor_acquisition,
            op_kwargs={"instrument_id": instrument_id},
            mode="reschedule",
            poke_interval=settings.acquisition.poke_interval_seconds,
            timeout=settings.acquisition.timeout_hours * 3600,
            **recorded,
        )
        checksum = PythonOperator(
            task_id=keys.COMPUTE_CHECKSUM_TASK,
            python_callable=tasks.compute_checksum,
            execution_timeout=step_timeout,
            **recorded,
        )
        copy = PythonOperator(
            task_id=keys.COPY_RAW_FILE_TASK,
            python_callable=tasks.copy_raw_file,
            execution_timeout=step_timeout,
            **recorded,
        )
        if settings.file_mover.delay_minutes < 0:
            start_mover = PythonOperator(task_id=keys.START_FILE_MOVER_TASK, python_callable=tasks.file_mover_disabled)
        else:
            start_mover = TriggerDagRunOperator(
                task_id=keys.START_FILE_MOVER_TASK,
                trigger_dag_id=keys.file_mover_dag_id(instrument_id),
                conf={keys.RAW_FILE_ID_KEY: keys.RAW_FILE_ID_TEMPLATE},
                trigger_run_id=keys.RUN_ID_TEMPLATE,
                skip_when_already_exists=True,
                **recorded,
            )
        monitor >> checksum >> copy >> start_mover

        if settings.s3_enabled:
            s3 = settings.backup.s3
            upload = PythonOperator(
                task_id=keys.UPLOAD_TO_S3_TASK,
                python_callable=tasks.upload_to_s3,
                op_kwargs={"instrument_id": instrument_id},
                outlets=[assets.backup_asset(instrument_id)],  # "backed up": README "Airflow assets"
                queue=settings.queue(keys.S3_UPLOADER_QUEUE),
                pool=keys.S3_UPLOAD_POOL,
                retries=s3.upload_retries,
                retry_delay=timedelta(minutes=s3.upload_retry_delay_minutes),
                retry_exponential_backoff=True,
                max_retry_delay=keys.MAX_UPLOAD_RETRY_DELAY,  # backup_sweeper's backoff has the same cap
                execution_timeout=timedelta(hours=s3.upload_timeout_hours),
            )
            copy >> upload
