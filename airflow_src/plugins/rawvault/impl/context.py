"""Reading what a task needs from the Airflow context."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from rawvault.keys import RAW_FILE_ID_KEY, watcher_dag_id


def raw_file_id_from(context: Mapping[str, Any]) -> str:
    """The ``raw_file_id`` of the DAG run's conf, or a clear error when it is missing."""
    dag_run = context.get("dag_run")
    conf = (getattr(dag_run, "conf", None) or {}) if dag_run is not None else {}
    raw_file_id = conf.get(RAW_FILE_ID_KEY) or context.get("params", {}).get(RAW_FILE_ID_KEY)
    if not raw_file_id or not isinstance(raw_file_id, str):
        raise ValueError(
            f"this DAG run has no {RAW_FILE_ID_KEY!r} in its conf: trigger it with "
            f'{{"{RAW_FILE_ID_KEY}": "<raw file id>"}} ({watcher_dag_id("<instrument_id>")} does this)'
        )
    return raw_file_id
