"""The only door between rawvault and MongoDB: the connection, every read query and every write.

Every write is an atomic ``$set`` of only the fields it changes, so two tasks
updating different fields of one ``RawFile`` never lose each other's writes.
Nothing outside ``shared.db`` imports mongoengine or pymongo: callers catch
:class:`DatabaseError` and :data:`DB_ERRORS`. The Backups page's queries are
in :mod:`shared.db.backups_view` and :mod:`shared.db.backups_counts`, verify's
selection in :mod:`shared.db.uploaded`. Every read is bounded by one of the
indexes declared on ``RawFile`` (tests/integration/test_query_shapes.py).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Iterator
from datetime import datetime, timedelta
from typing import Any, Unpack

import mongoengine
from mongoengine.errors import NotUniqueError, OperationError
from pymongo import uri_parser
from pymongo.errors import OperationFailure, PyMongoError

from shared.db.models import BackupStatus, Project, RawFile, RawFileStatus, utc_now
from shared.db.uploaded_filter import UploadedFilters, uploaded_query

log = logging.getLogger(__name__)

ENV_VAR_MONGO_URI = "RAWVAULT_MONGO_URI"
DEFAULT_DB_NAME = "rawvault"
# Fail in seconds, not pymongo's default 30 s, when the server is down: a task then
# fails with a clear message and is retried, instead of hanging a worker slot.
SERVER_SELECTION_TIMEOUT_MS = 10_000
_MAX_ID_ATTEMPTS = 100
_NAMES_PER_QUERY = 500  # share names per $in of the watcher's read
# A raw file the sweeper gives up on is marked so at a sweep within this long after its last update;
# after that the sweeper never reads it again (its reads stay bounded however many pile up).
GIVEN_UP_NOTICE = timedelta(days=7)

_connected: tuple[int, str] | None = None  # (pid, uri): pymongo clients must not cross a fork


class DatabaseError(RuntimeError):
    """The database is not configured or not reachable."""


# What a query or write raises when MongoDB fails (unreachable, timed out, refused the operation).
DB_ERRORS: tuple[type[Exception], ...] = (PyMongoError, OperationError)


class RawFileNotFoundError(LookupError):
    """No ``RawFile`` document has the requested id."""


def connect_db(uri: str | None = None) -> None:
    """Connect mongoengine to ``uri`` (default: ``$RAWVAULT_MONGO_URI``); cheap to call again."""
    global _connected
    uri = uri or os.environ.get(ENV_VAR_MONGO_URI)
    if not uri:
        raise DatabaseError(
            f"{ENV_VAR_MONGO_URI} is not set: set it to the MongoDB URI, e.g. "
            "mongodb://user:password@mongodb:27017/rawvault?authSource=admin (credentials never go in the YAML)"
        )
    if _connected == (os.getpid(), uri):
        return
    try:
        parsed = uri_parser.parse_uri(uri)
    except Exception as error:  # pymongo raises several types for a malformed URI
        raise DatabaseError(f"{ENV_VAR_MONGO_URI} is not a valid MongoDB URI: {error}") from None
    mongoengine.disconnect_all()
    mongoengine.connect(
        db=parsed.get("database") or DEFAULT_DB_NAME,
        host=uri,
        tz_aware=True,
        serverSelectionTimeoutMS=SERVER_SELECTION_TIMEOUT_MS,
        uuidRepresentation="standard",
        # Acknowledge a write only once it is in the journal: a MongoDB crash (SIGKILL, power loss) then
        # never rolls back a status or upload claim a task already acted on (measured: < 1 ms per write).
        journal=True,
    )
    _connected = (os.getpid(), uri)
    nodes = ", ".join(f"{host}:{port}" for host, port in parsed["nodelist"])
    log.info("connected to MongoDB at %s", nodes)  # never the URI: it may hold a password
    _drop_legacy_indexes()


def _drop_legacy_indexes() -> None:
    """Drop the indexes earlier versions created that no query uses now (writes and RAM for nothing)."""
    from shared.db.alerts import LEGACY_ALERT_INDEXES, AlertRecord
    from shared.db.models import LEGACY_RAW_FILE_INDEXES

    for document, names in ((RawFile, LEGACY_RAW_FILE_INDEXES), (AlertRecord, LEGACY_ALERT_INDEXES)):
        try:
            collection = document._get_collection()
            for name in sorted(set(names) & set(collection.index_information())):
                collection.drop_index(name)
                log.info("dropped index %s of %s: no query uses it", name, collection.name)
        except OperationFailure as error:  # e.g. a read-only user: the index only costs space
            log.warning("could not drop the unused indexes %s: %s", ", ".join(names), error)


def reset_connection() -> None:
    """Disconnect and forget the connection, so the next :func:`connect_db` connects anew (tests, a new server)."""
    global _connected
    mongoengine.disconnect_all()
    _connected = None


def get_raw_file(raw_file_id: str) -> RawFile:
    """The ``RawFile`` with this id, or :class:`RawFileNotFoundError` naming it."""
    connect_db()
    raw_file = RawFile.objects(id=raw_file_id).first()
    if raw_file is None:
        raise RawFileNotFoundError(
            f"raw file {raw_file_id!r} is not in the database (collection raw_file): check the raw_file_id "
            "in the DAG run conf; raw files are registered by instrument_watcher.<instrument_id>"
        )
    return raw_file


def backup_base_path(instrument_id: str, created_at: datetime, raw_file_id: str, original_name: str) -> str:
    """Folder of a raw file in the backup (and its S3 key prefix), relative: ``<instrument>/<YYYY_MM>``.

    A raw file whose id differs from its name (the name was taken) gets a
    subfolder named after its id, so two acquisitions with the same name
    never share a backup path.
    """
    base = f"{instrument_id}/{created_at:%Y_%m}"
    return base if raw_file_id == original_name else f"{base}/{raw_file_id}"


def create_raw_file(
    original_name: str,
    *,
    instrument_id: str,
    created_at: datetime,
    **fields: Any,
) -> RawFile:
    """Insert a new ``RawFile``; never overwrites an existing one.

    The id is the file name. When that id is taken (the same name acquired on
    another day or another instrument), the id becomes
    ``<name>-<instrument_id>-<YYYYMMDDTHHMMSS>`` and, should even that be
    taken, gets a counter. ``backup_base_path`` is set in the same insert, so
    a renamed raw file's backup lands in a folder of its own.
    """
    connect_db()
    stamp = created_at.strftime("%Y%m%dT%H%M%S")
    candidates = [original_name, f"{original_name}-{instrument_id}-{stamp}"]
    candidates += [f"{candidates[1]}-{n}" for n in range(2, _MAX_ID_ATTEMPTS)]
    for raw_file_id in candidates:
        raw_file = RawFile(
            id=raw_file_id,
            original_name=original_name,
            instrument_id=instrument_id,
            created_at=created_at,
            backup_base_path=backup_base_path(instrument_id, created_at, raw_file_id, original_name),
            **fields,
        )
        try:
            raw_file.save(force_insert=True)
        except NotUniqueError:
            log.info("raw file id %r is taken, trying the next one", raw_file_id)
            continue
        return raw_file
    raise DatabaseError(f"could not find a free raw file id for {original_name!r} after {_MAX_ID_ATTEMPTS} attempts")


def update_raw_file(raw_file_id: str, *, expected: dict[str, Any] | None = None, **fields: Any) -> bool:
    """Atomically ``$set`` ``fields`` on one raw file (and its ``db_updated_at``).

    With ``expected``, update only while those fields still have those values
    (a compare-and-set, e.g. to claim an upload) and return whether it
    matched. Without it, a missing document raises :class:`RawFileNotFoundError`.
    """
    connect_db()
    query = {"id": raw_file_id, **(expected or {})}
    update = {f"set__{name}": value for name, value in fields.items()}
    matched = RawFile.objects(**query).update_one(**update, set__db_updated_at=utc_now())
    if matched:
        return True
    if expected is None:
        raise RawFileNotFoundError(
            f"cannot update raw file {raw_file_id!r}: it is not in the database (collection raw_file)"
        )
    return False


def list_raw_files_on_share(instrument_id: str, names: Iterable[str]) -> list[RawFile]:
    """The instrument's registrations of these share names not moved (or purged) off the share, oldest first.

    Only the names now on the share: the instrument's history (years of raw
    files, failed ones among them) is never read.
    """
    connect_db()
    names = sorted(set(names))
    found: list[RawFile] = []
    for start in range(0, len(names), _NAMES_PER_QUERY):
        chunk = names[start : start + _NAMES_PER_QUERY]
        found += RawFile.objects(instrument_id=instrument_id, original_name__in=chunk).only(
            "id", "original_name", "instrument_type", "source_inode", "source_mtime_ns", "status", "created_at"
        )
    off_share = (RawFileStatus.MOVED.value, RawFileStatus.PURGED.value)
    on_share = [raw_file for raw_file in found if raw_file.status not in off_share]
    return sorted(on_share, key=lambda raw_file: (raw_file.created_at, raw_file.id))


def queued_raw_file_ids(instrument_id: str) -> list[str]:
    """Ids of the instrument's raw files still ``queued`` (their handler has not looked at them), oldest first."""
    connect_db()
    queued = RawFile.objects(status=RawFileStatus.QUEUED.value, instrument_id=instrument_id).only("id", "created_at")
    return [raw_file.id for raw_file in sorted(queued, key=lambda raw_file: (raw_file.created_at, raw_file.id))]


def newer_acquisition_exists(raw_file: RawFile) -> bool:
    """Whether the instrument has started another acquisition after this one (so this one is finished)."""
    connect_db()
    return bool(
        RawFile.objects(
            instrument_id=raw_file.instrument_id, created_at__gt=raw_file.created_at, id__ne=raw_file.id
        ).first()
    )


def raw_files_uploading() -> Iterable[RawFile]:
    """Every ``upload_in_progress`` raw file (whole documents: the sweeper checks their claims)."""
    connect_db()
    return RawFile.objects(backup_status=BackupStatus.UPLOAD_IN_PROGRESS.value)


def _retry_candidates(
    backup_status: str, fields: tuple[str, ...], max_attempts: int | None, given_up_since: datetime | None
) -> list[RawFile]:
    """Raw files of ``backup_status`` with fewer than ``max_attempts`` attempts, or updated since ``given_up_since``.

    Those with more attempts and no update since are given up on and said so: never read again.
    """
    if max_attempts is None:
        return list(RawFile.objects(backup_status=backup_status).only(*fields))
    # Every attempt count below the limit, and none recorded (documents older than the counter): points of the index.
    attempts = [None, *range(max_attempts)]
    found = {
        raw_file.id: raw_file
        for raw_file in RawFile.objects(backup_status=backup_status, s3_upload_attempts__in=attempts).only(*fields)
    }
    if given_up_since is not None:
        recent = RawFile.objects(backup_status=backup_status, db_updated_at__gte=given_up_since).only(*fields)
        found.update((raw_file.id, raw_file) for raw_file in recent if raw_file.id not in found)
    return list(found.values())


_FAILED_FIELDS = ("id", "backup_status", "s3_upload_attempts", "s3_upload_attempted_at", "s3_upload_failed_at",
                  "backup_status_details", "db_updated_at")  # fmt: skip
_PENDING_FIELDS = ("id", "backup_status", "s3_upload_attempts", "file_info", "backup_base_path", "db_updated_at",
                   "backup_status_details")  # fmt: skip


def failed_uploads(*, max_attempts: int | None = None, given_up_since: datetime | None = None) -> list[RawFile]:
    """``upload_failed`` raw files, with the fields that decide their retry.

    With ``max_attempts``: those that may still be retried, and those updated
    since ``given_up_since`` (to be marked given up once); without: every one.
    """
    connect_db()
    return _retry_candidates(BackupStatus.UPLOAD_FAILED.value, _FAILED_FIELDS, max_attempts, given_up_since)


def uploads_pending_since(
    cutoff: datetime, *, max_attempts: int | None = None, given_up_since: datetime | None = None
) -> list[RawFile]:
    """``copying_done`` raw files not updated since ``cutoff`` (or never): their upload never ran.

    ``max_attempts`` and ``given_up_since`` as for :func:`failed_uploads`.
    """
    connect_db()
    if max_attempts is None:
        pending = RawFile.objects(backup_status=BackupStatus.COPYING_DONE.value, db_updated_at__not__gt=cutoff)
        return list(pending.only(*_PENDING_FIELDS))
    candidates = _retry_candidates(BackupStatus.COPYING_DONE.value, _PENDING_FIELDS, max_attempts, given_up_since)
    return [raw_file for raw_file in candidates if raw_file.db_updated_at is None or raw_file.db_updated_at <= cutoff]


def select_uploaded_raw_files(**filters: Unpack[UploadedFilters]) -> Any:
    """The ``upload_done`` raw files matching ``filters``, oldest first (a lazy queryset: ``count()``, slicing).

    The filters and their rule: :mod:`shared.db.uploaded_filter`.
    """
    connect_db()
    return RawFile.objects(__raw__=uploaded_query(**filters)).order_by("created_at", "id")


def get_projects() -> list[Project]:
    """All projects, for matching file names to projects."""
    connect_db()
    return list(Project.objects.order_by("id"))


def create_project(project_id: str, *, name: str = "", description: str = "") -> Project:
    """Insert a project; an existing id is an error, never overwritten."""
    connect_db()
    project = Project(id=project_id, name=name or project_id, description=description)
    try:
        project.save(force_insert=True)
    except NotUniqueError:
        raise DatabaseError(f"project {project_id!r} exists already") from None
    return project


__all__ = [
    "DB_ERRORS",
    "GIVEN_UP_NOTICE",
    "DatabaseError",
    "RawFileNotFoundError",
    "backup_base_path",
    "connect_db",
    "create_project",
    "create_raw_file",
    "failed_uploads",
    "get_projects",
    "get_raw_file",
    "is_database_error",
    "list_raw_files_on_share",
    "newer_acquisition_exists",
    "queued_raw_file_ids",
    "raw_files_by_id",
    "raw_files_uploading",
    "reset_connection",
    "select_uploaded_raw_files",
    "update_raw_file",
    "uploaded_raw_file_ids",
    "uploads_pending_since",
    "utc_now",
]


# --- reads for backup/restore/audit/sweeper (stream S) ---

_BY_ID_BATCH = 256  # documents per query when reading many raw files by id (bounded memory)


def is_database_error(error: BaseException) -> bool:
    """Whether ``error`` comes from the database driver (pymongo or mongoengine), e.g. for a "cannot run" exit."""
    return isinstance(error, DB_ERRORS) or type(error).__module__.startswith(("pymongo", "mongoengine"))


def uploaded_raw_file_ids(**filters: Any) -> list[str]:
    """Ids of the raw files :func:`select_uploaded_raw_files` selects with ``filters``, oldest first."""
    return [doc.id for doc in select_uploaded_raw_files(**filters).only("id")]


def raw_files_by_id(raw_file_ids: Iterable[str]) -> Iterator[RawFile | None]:
    """The raw files with these ids, in the given order, read in batches; ``None`` for one deleted meanwhile."""
    connect_db()
    ids = list(raw_file_ids)
    for start in range(0, len(ids), _BY_ID_BATCH):
        batch = ids[start : start + _BY_ID_BATCH]
        found = {doc.id: doc for doc in RawFile.objects(id__in=batch)}
        for raw_file_id in batch:
            yield found.get(raw_file_id)
