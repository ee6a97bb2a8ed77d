"""file_remover.<instrument_id>: free the share by deleting moved acquisitions after re-checking their backup."""

from __future__ import annotations

from airflow.providers.standard.operators.python import PythonOperator
from airflow.sdk import DAG

from rawvault import keys
from rawvault.impl import purge_tasks
from rawvault.impl.dag_defaults import dag_kwargs
from shared.settings import get_settings, purge_policy

DOC = """
Deletes moved acquisitions from the instrument's `file_mover.target_folder` (oldest first, never one younger
than `purge.min_age_days`, at most `purge.max_per_run` per run) until the instrument folder has
`purge.min_free_gb` free. A set is deleted only when the share, the local backup (fresh MD5s) and S3 (manifest,
every object) all match its record now; otherwise it is kept and the reason recorded on the raw file
(`purge_blocked_reason`). With `purge.dry_run` it only reports what it would delete. See README "Purge".
"""

settings = get_settings()

for instrument_id in settings.instruments:
    policy = purge_policy(settings, instrument_id)
    if not policy.enabled:
        continue
    with DAG(
        dag_id=keys.file_remover_dag_id(instrument_id),
        schedule=policy.schedule,
        max_active_runs=1,  # one purge at a time per share (each deletion is also a compare-and-set)
        # On the instrument's queue: its worker has the share mounted.
        **dag_kwargs(settings, instrument_id, queue=instrument_id, doc_md=DOC),
    ):
        PythonOperator(
            task_id=keys.PURGE_BACKED_UP_SETS_TASK,
            python_callable=purge_tasks.purge_backed_up_sets,
            op_kwargs={"instrument_id": instrument_id},
            retries=0,  # the next scheduled run is the retry: it checks everything again and finishes a stopped purge
        )
