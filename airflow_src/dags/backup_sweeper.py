"""backup_sweeper: find failed, stale and never-uploaded S3 uploads on a schedule, trigger their retries (S3 only)."""

from __future__ import annotations

from airflow.providers.standard.operators.python import PythonOperator
from airflow.providers.standard.operators.trigger_dagrun import TriggerDagRunOperator
from airflow.sdk import DAG

from rawvault import keys
from rawvault.impl import sweeper_tasks
from rawvault.impl.dag_defaults import cross_instrument_dag_kwargs
from shared.settings import get_settings

DOC = """
Finds raw files whose S3 upload failed (`upload_failed`, fewer than `backup.s3.max_upload_attempts`
attempts, backoff passed since the failure), went stale (`upload_in_progress` whose claim lease
expired: the worker died) or never ran (`copying_done` for `backup.s3.pending_upload_after_hours`),
and triggers one `s3_upload_retry` run per raw file (`trigger_upload_retry`). It never uploads
itself, so a long retry never holds up the next sweep. Raw files past the attempt cap are logged;
clear their `upload_to_s3` task to retry by hand.
"""

settings = get_settings()

if settings.s3_enabled and settings.backup.s3 is not None:
    with DAG(
        dag_id=keys.SWEEPER_DAG_ID,
        **cross_instrument_dag_kwargs(settings, schedule=settings.backup.s3.sweep_schedule, doc_md=DOC),
    ):
        find = PythonOperator(
            task_id=keys.FIND_BACKUPS_TO_RETRY_TASK, python_callable=sweeper_tasks.find_upload_retries
        )
        TriggerDagRunOperator.partial(
            task_id=keys.TRIGGER_UPLOAD_RETRY_TASK,
            trigger_dag_id=keys.UPLOAD_RETRY_DAG_ID,
            logical_date=None,  # many runs start at once: no logical date to collide on
            skip_when_already_exists=True,  # that retry was triggered by an earlier sweep
            retries=0,  # the next sweep triggers it again
        ).expand_kwargs(find.output)
