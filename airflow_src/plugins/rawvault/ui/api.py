"""The Backups page's FastAPI app, mounted by the ``rawvault`` Airflow plugin under ``/rawvault``.

- ``GET /``                  the page (``page.html``); without a login it redirects to Airflow's login
- ``GET /raw-files``         one page of raw files, failed and stuck first (JSON); ``cursor`` pages on
- ``GET /raw-files/counts``  counts per backup status and the filter choices (JSON)
- ``GET /facility``          last free space per folder and totals per instrument and project (JSON)
- ``GET /stores``            every probed bucket's S3 store: summary and weaknesses (JSON)

Airflow mounts plugin apps without any authentication, so every route here
takes Airflow's logged-in user (the same JWT the Airflow UI uses: ``_token``
cookie, or an ``Authorization: Bearer`` header) and shows only the raw files
of the instruments whose ``acquisition_handler.<instrument>`` DAG runs that
user may read, asking Airflow's auth manager DAG by DAG
(:mod:`rawvault.ui.access`). No DAG id is ever taken from the request; a
user who may read none sees an empty page. Nothing here writes.

Every Airflow process imports each ``.py`` file of the plugins folder (a task
does, to find macros), and Airflow's API modules take most of a second to
import: so they are imported by :func:`create_app`, which :class:`LazyApp`
calls on the first request to the api-server, never at import.
"""

from __future__ import annotations

import logging
import threading
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Annotated, Any

from fastapi import Depends, FastAPI, HTTPException, Query, Request, status
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Receive, Scope, Send

from rawvault.ui import queries
from rawvault.ui.access import readable_instruments
from shared.db.interface import DB_ERRORS, DatabaseError, connect_db
from shared.settings import Settings, SettingsError, get_settings

log = logging.getLogger(__name__)

PAGE_PATH = Path(__file__).with_name("page.html")
NO_STORE = {"Cache-Control": "no-store"}
PAGE_HEADERS = {
    **NO_STORE,
    "X-Content-Type-Options": "nosniff",
    # Self-contained page: no network but its own origin; only Airflow itself may frame it.
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; "
        "connect-src 'self'; img-src 'self' data:; frame-ancestors 'self'; base-uri 'none'; form-action 'self'"
    ),
}

_connect_lock = threading.Lock()
# Not configured, unreachable or failing: the page answers 503 with the reason instead of a bare 500.
DATABASE_UNAVAILABLE: tuple[type[Exception], ...] = (DatabaseError, *DB_ERRORS)


def _connect() -> None:
    """Connect once per process; request threads must not race ``connect_db``'s reconnect."""
    with _connect_lock:
        connect_db()


def _split(values: list[str]) -> tuple[str, ...]:
    """``?x=a&x=b`` and ``?x=a,b`` alike, without empty parts."""
    return tuple(part.strip() for value in values for part in value.split(",") if part.strip())


BACKUP_STATUS_HELP = "backup status(es), also 'stuck', 'not_started', 'pipeline_error' (status error)"


def raw_file_filter(
    backup_status: Annotated[list[str], Query(description=BACKUP_STATUS_HELP)] = [],  # noqa: B006
    status_: Annotated[list[str], Query(alias="status", description="raw file status(es)")] = [],  # noqa: B006
    instrument: Annotated[list[str], Query(description="instrument id(s)")] = [],  # noqa: B006
    project: Annotated[list[str], Query(description="project id(s)")] = [],  # noqa: B006
    created_from: Annotated[date | None, Query(description="first day (UTC) of created_at")] = None,
    created_to: Annotated[date | None, Query(description="last day (UTC) of created_at")] = None,
    q: Annotated[
        str, Query(max_length=queries.MAX_SEARCH_CHARS, description="the start of the raw file id (case-sensitive)")
    ] = "",
) -> queries.RawFileFilter:
    """The filters of a request, validated (an unknown value is a 422 naming the allowed ones)."""
    try:
        return queries.RawFileFilter(
            backup_status=_split(backup_status),
            status=_split(status_),
            instrument=_split(instrument),
            project=_split(project),
            created_from=created_from,
            created_to=created_to,
            search=q,
        )
    except queries.InvalidFilterError as error:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, detail=str(error)) from None


FilterDep = Annotated[queries.RawFileFilter, Depends(raw_file_filter)]


def caller_view() -> queries.PageView:
    """The caller's view of the page (settings, readable instruments): :func:`create_app` puts Airflow's auth here."""
    raise RuntimeError("the Backups API needs Airflow's authentication: build it with rawvault.ui.api.create_app()")


ViewDep = Annotated[queries.PageView, Depends(caller_view)]


def load_settings_or_503() -> Settings:
    """The api-server's rawvault settings (instruments, backup type, deadline), or a 503 naming the fix."""
    try:
        return get_settings()
    except SettingsError as error:
        log.warning("Backups page: the rawvault settings cannot be read: %s", error)
        raise HTTPException(
            status.HTTP_503_SERVICE_UNAVAILABLE,
            detail=f"the api-server cannot read the rawvault settings ({error}); set RAWVAULT_ENV or "
            "RAWVAULT_CONFIG in its environment",
        ) from None


StuckAfterHours = Annotated[
    float | None, Query(gt=0, le=24 * 365, description="in progress and not updated this long = stuck")
]


def _stuck_after(hours: float | None) -> timedelta | None:
    return timedelta(hours=hours) if hours else None


def _database_unavailable(error: Exception) -> HTTPException:
    log.warning("Backups page: MongoDB query failed: %s", error)
    return HTTPException(
        status.HTTP_503_SERVICE_UNAVAILABLE,
        detail=f"the rawvault database is not available ({type(error).__name__}: {error}); "
        "check RAWVAULT_MONGO_URI in the api-server's environment and that MongoDB is running",
    )


def get_raw_files(
    filters: FilterDep,
    view: ViewDep,
    limit: Annotated[int, Query(ge=1, le=queries.MAX_LIMIT)] = 50,
    cursor: Annotated[
        str | None, Query(max_length=2000, description="next_cursor or previous_cursor of an earlier page")
    ] = None,
    stuck_after_hours: StuckAfterHours = None,
) -> JSONResponse:
    """One page of raw files: failed, then stuck, then the rest, newest first within each."""
    try:
        _connect()
        page = queries.list_raw_files(
            filters, limit=limit, cursor=cursor, view=view, stuck_after=_stuck_after(stuck_after_hours)
        )
    except queries.InvalidFilterError as error:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, detail=str(error)) from None
    except DATABASE_UNAVAILABLE as error:
        raise _database_unavailable(error) from None
    return JSONResponse(page.as_dict(), headers=NO_STORE)


def get_raw_file_counts(filters: FilterDep, view: ViewDep, stuck_after_hours: StuckAfterHours = None) -> JSONResponse:
    """Counts per backup status (ignoring the backup_status filter) and the filter choices."""
    try:
        _connect()
        counts: dict[str, Any] = queries.count_by_backup_status(
            filters, view=view, stuck_after=_stuck_after(stuck_after_hours)
        )
    except queries.InvalidFilterError as error:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, detail=str(error)) from None
    except DATABASE_UNAVAILABLE as error:
        raise _database_unavailable(error) from None
    return JSONResponse(counts, headers=NO_STORE)


def get_facility(view: ViewDep) -> JSONResponse:
    """The last free space and totals per project of the instruments the caller may read, and the backup root."""
    from rawvault.ui.facility import free_space_rows, totals_rows

    readable = tuple(i for i in view.instruments if view.readable is None or i in view.readable)
    now = datetime.now(UTC)
    try:
        _connect()
        answer = {"folders": free_space_rows(readable, now), "totals": totals_rows(readable, now)}
    except DATABASE_UNAVAILABLE as error:
        raise _database_unavailable(error) from None
    return JSONResponse(answer, headers=NO_STORE)


def get_stores() -> JSONResponse:
    """What each bucket's S3 store can do as last probed, with what is weaker there (``buckets probe``)."""
    try:
        _connect()
        stores = queries.store_rows()
    except DATABASE_UNAVAILABLE as error:
        raise _database_unavailable(error) from None
    return JSONResponse({"stores": stores}, headers=NO_STORE)


def get_page() -> HTMLResponse:
    """The Backups page (read on each request: an edited page needs no restart)."""
    return HTMLResponse(PAGE_PATH.read_text(encoding="utf-8"), headers=PAGE_HEADERS)


async def login_redirect_for_page(request: Request, error: StarletteHTTPException) -> Response:
    """A browser opening the page without a valid login goes to Airflow's login and comes back."""
    from airflow.api_fastapi.app import get_auth_manager

    # 401: no or expired token; 403 "Invalid JWT token": a stale cookie. Any other 403 is a real refusal.
    not_logged_in = error.status_code == status.HTTP_401_UNAUTHORIZED or error.detail == "Invalid JWT token"
    if not_logged_in and request.scope.get("endpoint") is get_page:
        login_url = get_auth_manager().get_url_login(next_url=str(request.url))
        return RedirectResponse(login_url, status_code=status.HTTP_303_SEE_OTHER)
    return JSONResponse({"detail": error.detail}, status_code=error.status_code, headers=error.headers)


def require_every_dag(view: ViewDep) -> None:
    """The S3 stores (every project's buckets) are for callers who may read the runs of every DAG: else 403."""
    if view.readable is not None:
        raise HTTPException(
            status_code=status.HTTP_403_FORBIDDEN,
            detail="the S3 stores name every project's buckets: shown only to users who may read every DAG's runs",
        )


def _view_of_caller_dependency() -> Any:
    """A FastAPI dependency: the logged-in Airflow user's :class:`~rawvault.ui.queries.PageView`."""
    from airflow.api_fastapi.app import get_auth_manager
    from airflow.api_fastapi.auth.managers.models.resource_details import DagAccessEntity, DagDetails
    from airflow.api_fastapi.core_api.security import get_user
    from airflow.configuration import conf
    from airflow.models.dag import DagModel

    from rawvault.keys import handler_dag_id

    # A default, not an annotation: this module's annotations are strings FastAPI resolves in its globals.
    def view_of_caller(user: Any = Depends(get_user)) -> queries.PageView:  # noqa: B008 - FastAPI's way
        settings = load_settings_or_503()
        manager = get_auth_manager()
        teams: dict[str, str | None] = {}
        if conf.getboolean("core", "multi_team", fallback=False):
            teams = DagModel.get_dag_id_to_team_name_mapping([handler_dag_id(i) for i in settings.instruments])

        def may_read_runs(dag_id: str | None) -> bool:
            # Reading raw files is reading what the acquisition_handler runs did: the same permission, per DAG.
            details = DagDetails(id=dag_id, team_name=teams.get(dag_id)) if dag_id else None
            return manager.is_authorized_dag(
                method="GET", access_entity=DagAccessEntity.RUN, details=details, user=user
            )

        return queries.PageView.from_settings(settings, readable_instruments(settings.instruments, may_read_runs))

    return view_of_caller


def create_app() -> FastAPI:
    """The app with Airflow's authentication on every route (imports Airflow's API modules)."""
    from airflow.api_fastapi.core_api.security import get_user

    logged_in = [Depends(get_user)]
    backups = FastAPI(
        title="rawvault backups",
        description="Read-only view of rawvault's raw files and their backups.",
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
    )
    backups.dependency_overrides[caller_view] = _view_of_caller_dependency()
    backups.add_api_route("/raw-files", get_raw_files, methods=["GET"])
    backups.add_api_route("/raw-files/counts", get_raw_file_counts, methods=["GET"])
    backups.add_api_route("/facility", get_facility, methods=["GET"])
    backups.add_api_route("/stores", get_stores, methods=["GET"], dependencies=[Depends(require_every_dag)])
    backups.add_api_route("/", get_page, methods=["GET"], dependencies=logged_in, response_class=HTMLResponse)
    backups.add_exception_handler(StarletteHTTPException, login_redirect_for_page)  # type: ignore[arg-type]
    return backups


class LazyApp:
    """An ASGI app that builds the real one on its first request (see the module docstring)."""

    def __init__(self) -> None:
        self._app: ASGIApp | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self._app is None:  # no await before the assignment: one event loop cannot race here
            self._app = create_app()
        await self._app(scope, receive, send)


app = LazyApp()

__all__ = [
    "LazyApp",
    "app",
    "caller_view",
    "create_app",
    "get_page",
    "get_raw_file_counts",
    "get_raw_files",
    "get_stores",
    "login_redirect_for_page",
    "raw_file_filter",
]
