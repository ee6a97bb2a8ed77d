"""backup_alerts and backup_digest: tell a person once per change of state, and once a day (alerts.enabled)."""

from __future__ import annotations

from datetime import timedelta

from airflow.providers.standard.operators.python import PythonOperator
from airflow.sdk import DAG

from rawvault import keys
from rawvault.impl import alert_tasks
from rawvault.impl.dag_defaults import START_DATE, default_args
from shared.settings import get_settings

ALERTS_DOC = """
Checks raw files (failed backups, S3 uploads stuck or given up, acquisitions past `backup.deadline_hours`
without a verified backup) and free space (instrument folders, backup root), and sends one message per
subject per change of state, and one when it is resolved, to the channels of `alerts.channels` (Airflow
connections). A channel that is down keeps its messages for the next run; the task turns red only when
no channel could deliver. Never touches a backup. See README "Alerts".
"""
DIGEST_DOC = """
Sends the daily digest (counts per status, new problems, the oldest unprotected raw file, bytes backed up
per instrument, free space) once per day; a second run the same day sends nothing new.
"""

settings = get_settings()
alerts = settings.alerts

if alerts.enabled:
    task_defaults = {
        **default_args(settings, keys.MAINTENANCE_QUEUE),
        "retries": 0,  # the next scheduled run is the retry; channels retry their own deliveries
        "execution_timeout": timedelta(minutes=30),
    }
    with DAG(
        dag_id=keys.ALERTS_DAG_ID,
        schedule=alerts.check_schedule,
        start_date=START_DATE,
        catchup=False,
        max_active_runs=1,
        default_args=task_defaults,
        tags=["rawvault", "alerts"],
        doc_md=ALERTS_DOC,
    ):
        PythonOperator(task_id=keys.CHECK_ALERTS_TASK, python_callable=alert_tasks.check_alerts)

    if alerts.digest.enabled:
        with DAG(
            dag_id=keys.DIGEST_DAG_ID,
            schedule=alerts.digest.schedule,
            start_date=START_DATE,
            catchup=False,
            max_active_runs=1,
            default_args=task_defaults,
            tags=["rawvault", "alerts"],
            doc_md=DIGEST_DOC,
        ):
            PythonOperator(task_id=keys.SEND_DIGEST_TASK, python_callable=alert_tasks.send_digest)
