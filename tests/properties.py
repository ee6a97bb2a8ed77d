"""Hypothesis profiles for the property-based tests of outsider-controlled inputs (issue 13, item 9).

``ci`` (the default): derandomized, so every run (and CI) tries the same examples and a
failure reproduces; no example database on disk; no deadline (the machine is shared and
some properties touch a real filesystem or MongoDB). ``explore``: random and ten times as
many examples, to hunt for new failures by hand:

    HYPOTHESIS_PROFILE=explore .venv/bin/python -m pytest tests -k properties

Each property keeps its own example count modest (``max_examples=`` on its
``@settings``); the profile scales it.
"""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

PROFILE_ENV = "HYPOTHESIS_PROFILE"
# Function-scoped fixtures (a MongoDB database, tmp_path) are shared by the examples of one test on purpose:
# each example cleans up what it needs itself.
_SHARED = {"deadline": None, "database": None, "suppress_health_check": [HealthCheck.function_scoped_fixture]}

settings.register_profile("ci", derandomize=True, print_blob=True, **_SHARED)
settings.register_profile("explore", derandomize=False, max_examples=500, **_SHARED)
settings.load_profile(os.environ.get(PROFILE_ENV, "ci"))


def examples(count: int) -> int:
    """``count`` examples under the ``ci`` profile, ten times as many under ``explore``."""
    return count * 10 if os.environ.get(PROFILE_ENV) == "explore" else count
