"""instrument_watcher.<instrument_id>: register new raw files and start their acquisition handlers."""

from __future__ import annotations

from airflow.providers.standard.operators.python import PythonOperator
from airflow.providers.standard.operators.trigger_dagrun import TriggerDagRunOperator
from airflow.sdk import DAG

from rawvault import keys
from rawvault.impl import tasks
from rawvault.impl.dag_defaults import dag_kwargs
from shared.settings import get_settings

DOC = """
Lists the instrument folder on a schedule, registers each new raw file as a `RawFile`
document (project from the file name) and triggers `acquisition_handler.<instrument_id>` for it.
"""

settings = get_settings()

for instrument_id in settings.instruments:
    with DAG(
        dag_id=keys.watcher_dag_id(instrument_id),
        schedule=settings.watcher.schedule,
        max_active_runs=1,
        **dag_kwargs(settings, instrument_id, queue=instrument_id, doc_md=DOC),
    ):
        register = PythonOperator(
            task_id=keys.REGISTER_NEW_RAW_FILES_TASK,
            python_callable=tasks.register_new_raw_files,
            op_kwargs={"instrument_id": instrument_id},
        )
        TriggerDagRunOperator.partial(
            task_id=keys.START_ACQUISITION_HANDLER_TASK,
            trigger_dag_id=keys.handler_dag_id(instrument_id),
            skip_when_already_exists=True,
        ).expand_kwargs(register.output)
