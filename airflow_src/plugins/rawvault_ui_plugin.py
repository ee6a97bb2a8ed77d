"""The ``rawvault`` Airflow plugin: a "Backups" page in the Airflow UI (Airflow 3.1+ plugin API).

- ``fastapi_apps`` mounts :mod:`rawvault.ui.api` on the api-server at ``/rawvault``:
  the page (``/rawvault/``) and its read-only JSON (``/rawvault/raw-files``).
  Airflow does not authenticate plugin apps; that app requires an Airflow
  login with permission to read DAG runs on every route. It is built on its
  first request, so the many processes that import plugins stay fast.
- ``external_views`` adds "Backups" to the navigation (``destination: nav``);
  the UI shows the page in a same-origin iframe at ``<base>/plugin/backups``.
  ``href`` is relative (no leading slash) so a ``[api] base_url`` sub-path works.
"""

from __future__ import annotations

from airflow.plugins_manager import AirflowPlugin

from rawvault.ui.api import app as backups_app

URL_PREFIX = "/rawvault"


class RawvaultPlugin(AirflowPlugin):
    """Registers the Backups page and its API."""

    name = "rawvault"
    fastapi_apps = [
        {"app": backups_app, "url_prefix": URL_PREFIX, "name": "rawvault backups"},
    ]
    external_views = [
        {
            "name": "Backups",
            "href": f"{URL_PREFIX.lstrip('/')}/",
            "destination": "nav",
            "url_route": "backups",
        },
    ]
