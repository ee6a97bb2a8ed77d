"""Defaults shared by rawvault's DAG files, so each file only wires tasks (names: :mod:`rawvault.keys`)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from shared.settings import Settings

START_DATE = datetime(2026, 1, 1, tzinfo=UTC)


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
