"""How many calls are in flight at once: each is held a moment as it starts, so calls that can overlap do."""

from __future__ import annotations

import threading
import time
from typing import Any


class InFlight:
    """The most calls in flight at once (``most``) and how many started (``total``); each held ``hold`` s."""

    def __init__(self, hold: float = 0.05) -> None:
        self.now = self.most = self.total = 0
        self.hold = hold
        self._lock = threading.Lock()

    def watch(self, client: Any, operations: tuple[str, ...]) -> InFlight:
        """Count the requests of ``operations`` a boto3 client sends (every attempt, until it is answered)."""
        for operation in operations:
            client.meta.events.register(f"before-send.s3.{operation}", self.enter)
            client.meta.events.register(f"needs-retry.s3.{operation}", self.leave)  # after every attempt
        return self

    def enter(self, **_kwargs: Any) -> None:
        with self._lock:
            self.now += 1
            self.total += 1
            self.most = max(self.most, self.now)
        time.sleep(self.hold)

    def leave(self, **_kwargs: Any) -> None:
        with self._lock:
            self.now -= 1
