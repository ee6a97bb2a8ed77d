"""The Celery stack's readiness: its environment never inherits a logging level that hides "<node> ready.",
and the "not ready in time" error shows the workers' own log tails first (CI cut them off once)."""

from __future__ import annotations

from pathlib import Path

import pytest

from devtools.celery_stack import (
    READY_TAIL_LINES,
    SCHEDULER,
    CeleryStack,
    CeleryWorker,
    PostgresCluster,
    celery_env,
    not_ready_message,
)
from devtools.local_stack import StackPaths, StackState


def test_the_stack_logs_at_info_whatever_the_callers_environment_says(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AIRFLOW__LOGGING__LOGGING_LEVEL", "WARNING")  # what the CLI run in-process once left
    env = celery_env(
        StackPaths(tmp_path),
        StackState(mongo_uri="mongodb://127.0.0.1:1", s3_endpoint="http://127.0.0.1:2", api_port=3),
        {},
        "redis://127.0.0.1:4/0",
        PostgresCluster(root=tmp_path, port=5),
    )
    assert env["AIRFLOW__LOGGING__LOGGING_LEVEL"] == "INFO"


def test_not_ready_lists_the_workers_short_tails_first(tmp_path: Path) -> None:
    paths = StackPaths(tmp_path)
    paths.logs.mkdir(parents=True)
    slow, ready = CeleryWorker("s3", "s3-worker@h", ("q",)), CeleryWorker("instrument", "instrument-worker@h", ("i",))
    for name in ("airflow-api-server", "airflow-dag-processor", "redis", SCHEDULER, slow.process_name):
        (paths.logs / f"{name}.log").write_text("".join(f"{name} line {n}\n" for n in range(100)))
    (paths.logs / f"{ready.process_name}.log").write_text("instrument-worker@h ready.\n")
    stack = CeleryStack(
        paths=paths,
        state=StackState(mongo_uri="m", s3_endpoint="s", api_port=1),
        env={"AIRFLOW__LOGGING__LOGGING_LEVEL": "INFO"},
        redis_url="r",
        postgres=PostgresCluster(root=tmp_path, port=1),
        workers=[ready, slow],
        api=None,  # type: ignore[arg-type]
    )
    message = not_ready_message(stack, {"scheduler": {"status": "healthy"}}, [slow])
    assert "celery-worker-s3 (s3-worker@h)" in message.splitlines()[0]
    order = [line.split()[1] for line in message.splitlines() if line.startswith("--- ")]
    assert order[:3] == ["celery-worker-s3.log", "celery-worker-instrument.log", f"{SCHEDULER}.log"], order
    assert set(order[3:]) == {"airflow-api-server.log", "airflow-dag-processor.log", "redis.log"}
    assert f"celery-worker-s3 line {100 - READY_TAIL_LINES}" in message
    assert f"celery-worker-s3 line {99 - READY_TAIL_LINES}\n" not in message
