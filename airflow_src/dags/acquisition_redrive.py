"""acquisition_redrive: start failed or lost acquisition handlers again, without a person (every backup type)."""

from __future__ import annotations

from airflow.providers.standard.operators.python import PythonOperator
from airflow.providers.standard.operators.trigger_dagrun import TriggerDagRunOperator
from airflow.sdk import DAG

from rawvault import keys
from rawvault.impl import redrive_tasks
from rawvault.impl.dag_defaults import NEXT_RUN_IS_THE_RETRY, cross_instrument_dag_kwargs
from shared.settings import get_settings

DOC = """
Finds raw files whose `acquisition_handler` failed for a transient cause (`status=error`, `error_transient`:
the share or the database unreachable, a timeout), once their backoff since `error_at` has passed
(`acquisition.redrive_delay_minutes` x 2^re-drives, at most 6 h), and raw files whose handler run is lost
(it does not exist, or it ended while the raw file still says queued, monitoring, checksumming or
copying: the failure is recorded first). Each is started again as a new run `<run id>__redrive<N>`, at most
`acquisition.max_redrives` times; then it stays `error` with "gave up after N re-drives". Permanent causes
(a conflict, changed files) are never re-driven. See README "When a backup fails".
"""

settings = get_settings()

with DAG(
    dag_id=keys.REDRIVE_DAG_ID,
    **cross_instrument_dag_kwargs(
        settings, schedule=settings.acquisition.redrive_schedule, doc_md=DOC, task_defaults=NEXT_RUN_IS_THE_RETRY
    ),
):
    find = PythonOperator(
        task_id=keys.FIND_ACQUISITIONS_TO_REDRIVE_TASK, python_callable=redrive_tasks.find_acquisitions_to_redrive
    )
    TriggerDagRunOperator.partial(
        task_id=keys.REDRIVE_HANDLER_TASK,
        logical_date=None,  # many runs of one DAG start at once: no logical date to collide on
        skip_when_already_exists=True,  # the watcher started this attempt's run already
    ).expand_kwargs(find.output)
