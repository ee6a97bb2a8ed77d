"""A test auth manager with per-DAG permissions, like FAB's or Keycloak's (``[core] auth_manager``).

The simple auth manager grants DAG access by role only; this subclass reads
``RAWVAULT_TEST_DAG_ACCESS`` (JSON ``{"user": ["dag id", ...] | "*"}``): a
listed user may read (GET) the runs of exactly those DAGs, ``"*"`` every DAG.
As in FAB, a question about no particular DAG (``details`` without an id) is
"may it read every DAG?". Users not listed keep the simple auth manager's rules.
"""

from __future__ import annotations

import json
import os
from typing import Any

from airflow.api_fastapi.auth.managers.simple.simple_auth_manager import SimpleAuthManager

ENV_VAR_DAG_ACCESS = "RAWVAULT_TEST_DAG_ACCESS"


class PerDagAuthManager(SimpleAuthManager):
    """:class:`SimpleAuthManager` with per-DAG read permissions from :data:`ENV_VAR_DAG_ACCESS`."""

    def is_authorized_dag(self, *, method: Any, user: Any, access_entity: Any = None, details: Any = None) -> bool:
        allowed = json.loads(os.environ.get(ENV_VAR_DAG_ACCESS, "{}")).get(user.username)
        if allowed is None:
            return super().is_authorized_dag(method=method, user=user, access_entity=access_entity, details=details)
        if allowed == "*":
            return True
        return method == "GET" and details is not None and details.id is not None and details.id in allowed
