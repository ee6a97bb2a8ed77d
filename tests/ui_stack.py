"""A real ``airflow api-server`` with the rawvault plugin, for the Backups page's tests and benchmarks.

SQLite metadata DB, the simple auth manager (or a subclass, ``auth_manager``)
with known passwords, the settings of :func:`tests.pipeline_env.write_pipeline_env`
and a MongoDB database of its own; :func:`http` makes one request without
following redirects.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from devtools.local_stack import (
    StackPaths,
    StackState,
    airflow_env,
    run_airflow,
    start_process,
    stop_stack,
    wait_for_http,
)
from devtools.servers import VENV_BIN, free_port
from tests.pipeline_env import write_pipeline_env


@dataclass
class UiServer:
    """The running api-server and how to reach it."""

    base_url: str
    mongo_uri: str
    passwords: Mapping[str, str]

    def token(self, username: str) -> str:
        """A JWT from the simple auth manager (POST /auth/token)."""
        body = json.dumps({"username": username, "password": self.passwords[username]}).encode()
        request = urllib.request.Request(
            f"{self.base_url}/auth/token", data=body, headers={"Content-Type": "application/json"}, method="POST"
        )
        with urllib.request.urlopen(request, timeout=30) as response:
            return json.load(response)["access_token"]


def http(url: str, *, token: str | None = None, cookie: str | None = None, method: str = "GET", body=None):
    """(status, JSON or text body, headers) of one request; never follows redirects."""

    class NoRedirect(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *args, **kwargs):
            return None

    headers = {"Accept": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    if cookie:
        headers["Cookie"] = f"_token={cookie}"
    data = None
    if body is not None:
        data = json.dumps(body).encode()
        headers["Content-Type"] = "application/json"
    request = urllib.request.Request(url, data=data, headers=headers, method=method)
    opener = urllib.request.build_opener(NoRedirect)
    try:
        with opener.open(request, timeout=120) as response:
            status, raw, response_headers = response.status, response.read(), response.headers
    except urllib.error.HTTPError as error:
        status, raw, response_headers = error.code, error.read(), error.headers
    try:
        return status, json.loads(raw), response_headers
    except ValueError:
        return status, raw.decode(errors="replace"), response_headers


@contextmanager
def ui_server(
    mongo_uri: str,
    users: Mapping[str, tuple[str, str]],
    *,
    auth_manager: str | None = None,
    extra_env: Mapping[str, str] | None = None,
    reserialize: bool = True,
    settings: Mapping[str, Any] | None = None,
) -> Iterator[UiServer]:
    """An api-server on a free port with ``users`` (name -> (role, password)); stopped and removed on exit.

    ``settings``: sections merged into the test settings (e.g. more ``instruments``).
    """
    run_dir = Path(tempfile.mkdtemp(prefix="rawvault-ui-"))
    paths = StackPaths(run_dir)
    paths.airflow_home.mkdir(parents=True)
    settings_env = write_pipeline_env(run_dir / "env", **(settings or {}))
    passwords_file = run_dir / "passwords.json"
    passwords_file.write_text(json.dumps({name: password for name, (_role, password) in users.items()}))
    port = free_port()
    state = StackState(mongo_uri=mongo_uri, s3_endpoint="http://127.0.0.1:9", api_port=port)
    extra: dict[str, str] = {
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": ",".join(f"{name}:{role}" for name, (role, _) in users.items()),
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(passwords_file),
        "AIRFLOW__API__WORKERS": "1",
        "AIRFLOW__CORE__LAZY_LOAD_PLUGINS": "False",
        **(extra_env or {}),
    }
    if auth_manager:
        extra["AIRFLOW__CORE__AUTH_MANAGER"] = auth_manager
    env = airflow_env(paths, state, rawvault_env={"RAWVAULT_CONFIG": str(settings_env.config_path)}, extra=extra)
    env.pop("RAWVAULT_ENV", None)
    try:
        run_airflow(paths, env, "db", "migrate")
        if reserialize:  # DAGs in the metadata DB, so the runs page a raw file links to exists
            run_airflow(paths, env, "dags", "reserialize")
        api = [str(VENV_BIN / "airflow"), "api-server", "--host", "127.0.0.1", "--port", str(port)]
        start_process(paths, "api-server", api, env)
        server = UiServer(state.api_url, mongo_uri, {name: password for name, (_r, password) in users.items()})
        try:
            wait_for_http(f"{server.base_url}/api/v2/monitor/health", timeout=180, what="airflow api-server")
        except RuntimeError as error:
            log = (paths.logs / "api-server.log").read_text(errors="replace")[-3000:]
            raise RuntimeError(f"{error}\n{log}") from None
        yield server
    finally:
        stop_stack(paths)
        shutil.rmtree(run_dir, ignore_errors=True)


def database_uri(server_uri: str, db_name: str) -> str:
    """``server_uri`` with ``db_name`` as its database."""
    base, _, query = server_uri.partition("?")
    return f"{base.rsplit('/', 1)[0]}/{db_name}" + (f"?{query}" if query else "")


def raw_file_fields(**fields: Any) -> dict[str, Any]:
    """Keyword arguments for ``RawFile`` without the unset ones."""
    return {name: value for name, value in fields.items() if value is not None}
