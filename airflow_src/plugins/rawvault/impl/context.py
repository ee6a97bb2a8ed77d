"""Reading what a task needs from the Airflow context."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from typing import Any

RAW_FILE_ID_KEY = "raw_file_id"


def raw_file_id_from(context: Mapping[str, Any]) -> str:
    """The ``raw_file_id`` of the DAG run's conf, or a clear error when it is missing."""
    dag_run = context.get("dag_run")
    conf = (getattr(dag_run, "conf", None) or {}) if dag_run is not None else {}
    raw_file_id = conf.get(RAW_FILE_ID_KEY) or context.get("params", {}).get(RAW_FILE_ID_KEY)
    if not raw_file_id or not isinstance(raw_file_id, str):
        raise ValueError(
            f"this DAG run has no {RAW_FILE_ID_KEY!r} in its conf: trigger it with "
            f'{{"{RAW_FILE_ID_KEY}": "<raw file id>"}} (instrument_watcher.<instrument_id> does this)'
        )
    return raw_file_id


_RUN_ID_UNSAFE_RE = re.compile(r"[^A-Za-z0-9_.~:+-]")


def run_id_for(raw_file_id: str) -> str:
    """The one DAG run id a raw file gets in each triggered DAG (so it is never triggered twice).

    Airflow allows only ``[A-Za-z0-9_.~:+-]`` in run ids; other characters
    become ``_`` and a hash of the full id keeps distinct ids distinct.
    """
    digest = hashlib.sha1(raw_file_id.encode(), usedforsecurity=False).hexdigest()[:10]
    return f"rawvault__{_RUN_ID_UNSAFE_RE.sub('_', raw_file_id)[:180]}__{digest}"
