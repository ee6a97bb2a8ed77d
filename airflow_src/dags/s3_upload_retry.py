"""s3_upload_retry: one retry of one raw file's S3 upload, triggered by backup_sweeper (S3 only)."""

from __future__ import annotations

from datetime import timedelta

from airflow.providers.standard.operators.python import PythonOperator
from airflow.sdk import DAG, Param

from rawvault import keys
from rawvault.impl import assets, sweeper_tasks
from rawvault.impl.dag_defaults import cross_instrument_dag_kwargs, raw_file_id_params
from shared.settings import get_settings

DOC = """
Uploads one raw file to S3 again (conf `{"raw_file_id": ..., "attempts": ...}`, set by `backup_sweeper`)
from its recorded `file_info` and local backup folder, resuming unfinished multipart uploads.
Skipped when another run is uploading it or has attempted it since the sweep (`attempts` differs);
leave `attempts` out to retry by hand whatever the count. No retries of its own: the next sweep
retries a failure after its backoff.
"""

settings = get_settings()

if settings.s3_enabled and settings.backup.s3 is not None:
    with DAG(
        dag_id=keys.UPLOAD_RETRY_DAG_ID,
        **cross_instrument_dag_kwargs(
            settings,
            schedule=None,
            doc_md=DOC,
            queue=keys.S3_UPLOADER_QUEUE,
            max_active_runs=sweeper_tasks.MAX_ACTIVE_RETRY_RUNS,
        ),
        params={
            **raw_file_id_params("upload again"),
            keys.ATTEMPTS_KEY: Param(
                None, type=["null", "integer"], minimum=0, description="its upload attempts when the sweep saw it"
            ),
        },
    ):
        PythonOperator(
            task_id=keys.UPLOAD_TO_S3_TASK,
            python_callable=sweeper_tasks.retry_upload_to_s3,
            outlets=[assets.retry_alias()],  # the raw file's instrument asset, attached at run time
            pool=keys.S3_UPLOAD_POOL,
            retries=0,  # the next sweep is the retry, with backoff
            execution_timeout=timedelta(hours=settings.backup.s3.upload_timeout_hours),
        )
