"""Turn the errors a retry cannot fix into ``AirflowFailException``: the task turns red at once.

A conflict in the backup, files that differ from the recorded ones, a refused
move, an S3 credentials or permission problem: retrying would burn the task's
retries (hours of backoff for an upload) on the same answer. Such a task fails
at once with the error's type and message; a person looks, fixes and clears it.
A file that changed *while* it was read (an acquisition still writing a side
file) is not listed here: it is retried like any transient error. The list is
:data:`rawvault.failures.PERMANENT_ERRORS`, which also decides that such a
failure of the acquisition handler is never re-driven.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import ParamSpec, TypeVar

from airflow.sdk.exceptions import AirflowFailException

from rawvault.failures import PERMANENT_ERRORS

__all__ = ["PERMANENT_ERRORS", "fail_fast"]

P = ParamSpec("P")
R = TypeVar("R")


def fail_fast(task: Callable[P, R]) -> Callable[P, R]:
    """Wrap a task callable: a :data:`PERMANENT_ERRORS` error becomes ``AirflowFailException("<type>: <message>")``."""

    @functools.wraps(task)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return task(*args, **kwargs)
        except PERMANENT_ERRORS as error:
            raise AirflowFailException(f"{type(error).__name__}: {error}") from error

    return wrapper
