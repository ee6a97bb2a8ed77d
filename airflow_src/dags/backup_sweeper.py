"""backup_sweeper: retry failed and stale S3 uploads on a schedule, with capped attempts and backoff (S3 only)."""

from __future__ import annotations

from datetime import timedelta

from airflow.providers.standard.operators.python import PythonOperator
from airflow.sdk import DAG

from rawvault.impl import tasks
from rawvault.impl.dag_defaults import S3_UPLOAD_POOL, S3_UPLOADER_QUEUE, START_DATE, default_args
from shared.settings import get_settings

DOC = """
Finds raw files whose S3 upload failed (`upload_failed`, fewer than `backup.s3.max_upload_attempts`
attempts, backoff passed) or went stale (`upload_in_progress` whose claim lease expired: the worker
died), and retries each in `retry_upload_to_s3` (one mapped task per raw file, queue s3_uploader,
pool s3_upload_pool), which resumes unfinished multipart uploads. Raw files past the attempt cap are
logged; clear their `upload_to_s3` task to retry by hand.
"""

settings = get_settings()

if settings.s3_enabled and settings.backup.s3 is not None:
    s3 = settings.backup.s3
    with DAG(
        dag_id="backup_sweeper",
        schedule=s3.sweep_schedule,
        start_date=START_DATE,
        catchup=False,
        max_active_runs=1,
        default_args=default_args(settings, S3_UPLOADER_QUEUE),
        tags=["rawvault"],
        doc_md=DOC,
    ):
        find = PythonOperator(task_id="find_backups_to_retry", python_callable=tasks.find_backups_to_retry)
        PythonOperator.partial(
            task_id="retry_upload_to_s3",
            python_callable=tasks.retry_upload_to_s3,
            pool=S3_UPLOAD_POOL,
            retries=0,  # the next sweep is the retry, with backoff
            execution_timeout=timedelta(hours=s3.upload_timeout_hours),
        ).expand(op_kwargs=find.output)
