"""backup_verifier: weekly audit of a random sample of the S3 backups (S3 backups only)."""

from __future__ import annotations

from airflow.providers.standard.operators.python import PythonOperator
from airflow.sdk import DAG, Param

from rawvault import keys
from rawvault.impl import verify_tasks
from rawvault.impl.dag_defaults import cross_instrument_dag_kwargs
from shared.settings import get_settings

DOC = """
Checks a random sample of the `upload_done` raw files against S3 with `head_object`:
every file's object exists with the recorded size and ETag, and the set's manifest exists.
Then scrubs (`backup.scrub`): re-reads at most `budget_gb_per_run` of data, least recently
scrubbed raw files first, from S3 (ranged GETs, MD5/ETag/SHA-256) and from the local backup,
so every object is re-read within `period_days`; the result is recorded on each raw file
(Backups page) and drift is alerted once. Turns red when anything is missing or different,
listing the items. Trigger it with `{"sample": 0}` to check every raw file, `{"scrub": false}`
to skip the scrub. On the command line: `scripts/rawvault.sh verify [--read-data]`
(see README "Restore and verify").
"""

settings = get_settings()

if settings.s3_enabled:
    with DAG(
        dag_id=keys.VERIFIER_DAG_ID,
        **cross_instrument_dag_kwargs(
            settings, schedule=verify_tasks.VERIFIER_SCHEDULE, doc_md=DOC, extra_tags=("verify",)
        ),
        params={
            "sample": Param(
                verify_tasks.VERIFIER_SAMPLE, type="integer", minimum=0, description="raw files to check; 0: all"
            ),
            "instrument": Param(None, type=["null", "string"], description="only this instrument id"),
            "project": Param(None, type=["null", "string"], description="only this project id"),
            "scrub": Param(True, type="boolean", description="re-read data within backup.scrub's budget"),
        },
    ):
        PythonOperator(task_id=keys.VERIFY_BACKUPS_TASK, python_callable=verify_tasks.verify_backups)
