"""backup_alerts and backup_digest: tell a person once per change of state, and once a day (alerts.enabled)."""

from __future__ import annotations

from airflow.providers.standard.operators.python import PythonOperator
from airflow.sdk import DAG

from rawvault import keys
from rawvault.impl import alert_tasks
from rawvault.impl.dag_defaults import NEXT_RUN_IS_THE_RETRY, cross_instrument_dag_kwargs
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


def alerts_dag(dag_id: str, schedule: str, doc_md: str) -> DAG:
    """One of the two alert DAGs; channels retry their own deliveries, the next run retries the rest."""
    kwargs = cross_instrument_dag_kwargs(
        settings, schedule=schedule, doc_md=doc_md, task_defaults=NEXT_RUN_IS_THE_RETRY, extra_tags=("alerts",)
    )
    return DAG(dag_id=dag_id, **kwargs)


if alerts.enabled:
    with alerts_dag(keys.ALERTS_DAG_ID, alerts.check_schedule, ALERTS_DOC):
        PythonOperator(task_id=keys.CHECK_ALERTS_TASK, python_callable=alert_tasks.check_alerts)

    if alerts.digest.enabled:
        with alerts_dag(keys.DIGEST_DAG_ID, alerts.digest.schedule, DIGEST_DOC):
            PythonOperator(task_id=keys.SEND_DIGEST_TASK, python_callable=alert_tasks.send_digest)
