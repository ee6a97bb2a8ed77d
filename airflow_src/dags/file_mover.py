"""file_mover.<instrument_id>: after the configured delay, move a backed-up acquisition aside."""

from __future__ import annotations

from airflow.providers.standard.operators.python import PythonOperator
from airflow.providers.standard.sensors.python import PythonSensor
from airflow.sdk import DAG

from rawvault import keys
from rawvault.impl import tasks
from rawvault.impl.dag_defaults import per_raw_file_dag_kwargs
from shared.settings import get_settings

DOC = """
Moves one acquisition (conf: `{"raw_file_id": ...}`) into the instrument folder's
target subfolder, once its local backup is verified and the share still matches it.
"""

settings = get_settings()

for instrument_id in settings.instruments:
    with DAG(
        dag_id=keys.file_mover_dag_id(instrument_id),
        **per_raw_file_dag_kwargs(settings, instrument_id, queue=keys.FILE_MOVER_QUEUE, doc_md=DOC, purpose="move"),
    ):
        wait = PythonSensor(
            task_id=keys.WAIT_BEFORE_MOVING_TASK,
            python_callable=tasks.file_mover_delay_passed,
            op_kwargs={"delay_minutes": max(settings.file_mover.delay_minutes, 0)},
            mode="reschedule",
            poke_interval=min(300.0, max(settings.acquisition.poke_interval_seconds, 1.0)),
            # The sensor's default 7-day timeout would fail long delays; give it the delay plus a day.
            timeout=(max(settings.file_mover.delay_minutes, 0) + 24 * 60) * 60,
        )
        move = PythonOperator(task_id=keys.MOVE_RAW_FILE_TASK, python_callable=tasks.move_raw_file)
        wait >> move
