"""Defaults shared by rawvault's DAG files, so each file only wires tasks (names: :mod:`rawvault.keys`)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from airflow.sdk import Param

from rawvault import keys
from shared.settings import Settings

START_DATE = datetime(2026, 1, 1, tzinfo=UTC)

# A scheduled housekeeping run that fails is not retried: the next scheduled run does its work again.
NEXT_RUN_IS_THE_RETRY: dict[str, Any] = {"retries": 0, "execution_timeout": timedelta(minutes=30)}


def default_args(settings: Settings, queue: str) -> dict[str, Any]:
    """Task defaults: the environment's retries, on ``queue`` (prefixed per environment)."""
    return {
        "owner": "rawvault",
        "queue": settings.queue(queue),
        "retries": settings.airflow.task_retries,
        "retry_delay": timedelta(minutes=settings.airflow.retry_delay_minutes),
    }


def dag_kwargs(settings: Settings, instrument_id: str, queue: str, doc_md: str) -> dict[str, Any]:
    """Keyword arguments common to every per-instrument DAG."""
    return {
        "start_date": START_DATE,
        "catchup": False,
        "default_args": default_args(settings, queue),
        "tags": ["rawvault", instrument_id],
        "doc_md": doc_md,
    }


def per_raw_file_dag_kwargs(
    settings: Settings, instrument_id: str, queue: str, doc_md: str, purpose: str
) -> dict[str, Any]:
    """A per-instrument DAG that runs only when triggered, one run per raw file (conf: its id)."""
    return {
        **dag_kwargs(settings, instrument_id, queue, doc_md),
        "schedule": None,
        "params": raw_file_id_params(purpose),
    }


def cross_instrument_dag_kwargs(
    settings: Settings,
    *,
    schedule: str | None,
    doc_md: str,
    queue: str = keys.MAINTENANCE_QUEUE,
    task_defaults: dict[str, Any] | None = None,
    extra_tags: tuple[str, ...] = (),
    max_active_runs: int = 1,
) -> dict[str, Any]:
    """Keyword arguments of a DAG that serves every instrument (one run at a time unless said otherwise).

    ``queue`` defaults to the maintenance queue, so housekeeping never waits behind long uploads;
    ``task_defaults`` override :func:`default_args` (e.g. :data:`NEXT_RUN_IS_THE_RETRY`).
    """
    return {
        "schedule": schedule,
        "start_date": START_DATE,
        "catchup": False,
        "max_active_runs": max_active_runs,
        "default_args": {**default_args(settings, queue), **(task_defaults or {})},
        "tags": ["rawvault", *extra_tags],
        "doc_md": doc_md,
    }


def raw_file_id_params(purpose: str) -> dict[str, Param]:
    """The conf of a DAG run about one raw file: its id, required (``purpose`` completes "id of the RawFile to")."""
    return {keys.RAW_FILE_ID_KEY: Param(type="string", minLength=1, description=f"id of the RawFile to {purpose}")}
