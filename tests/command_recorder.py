"""pymongo command monitoring for the tests: every command a piece of code sends, and what it got back.

:class:`CommandRecorder` is a pymongo ``CommandListener``; pymongo gives
listeners to clients created after their registration, so
:func:`recording_connection` registers one and reconnects ``shared.db``.
:mod:`tests.query_shapes` checks the recorded commands.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from pymongo import monitoring

READ_COMMANDS = frozenset({"find", "aggregate", "count", "distinct"})


@dataclass
class Command:
    """One command sent to MongoDB, and how many documents its answer held (``find``/``aggregate``/getMore)."""

    name: str
    collection: str
    body: Mapping[str, Any]
    returned: int = 0
    ids: list[Any] = field(default_factory=list)  # the _id of each document returned

    def __str__(self) -> str:
        shown = {key: value for key, value in self.body.items() if key not in ("lsid", "$db", "$clusterTime")}
        return f"{self.name} {self.collection}: {shown}"


class CommandRecorder(monitoring.CommandListener):
    """Keeps every command sent to ``database`` while :meth:`recording` is active."""

    def __init__(self, database: str) -> None:
        self.database = database
        self.commands: list[Command] | None = None
        self._by_request: dict[int, Command] = {}
        self._by_cursor: dict[int, Command] = {}

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        if self.commands is None or event.database_name != self.database:
            return
        if event.command_name == "getMore":  # more documents of an earlier find/aggregate
            earlier = self._by_cursor.get(int(event.command["getMore"]))
            if earlier is not None:
                self._by_request[event.request_id] = earlier
            return
        collection = event.command.get(event.command_name)
        command = Command(event.command_name, str(collection), dict(event.command))
        self.commands.append(command)
        self._by_request[event.request_id] = command

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        command = self._by_request.pop(event.request_id, None)
        cursor = event.reply.get("cursor") if command is not None else None
        if command is None or not isinstance(cursor, Mapping):
            return
        batch = cursor.get("firstBatch") or cursor.get("nextBatch") or []
        command.returned += len(batch)
        command.ids += [document.get("_id") for document in batch if isinstance(document, Mapping)]
        if cursor.get("id"):
            self._by_cursor[int(cursor["id"])] = command

    def failed(self, event: monitoring.CommandFailedEvent) -> None:
        pass

    @contextmanager
    def recording(self) -> Iterator[list[Command]]:
        """Record the commands sent inside the ``with`` block into the yielded list."""
        commands: list[Command] = []
        self.commands = commands
        try:
            yield commands
        finally:
            self.commands = None
            self._by_request.clear()
            self._by_cursor.clear()


@contextmanager
def recording_connection(uri: str) -> Iterator[CommandRecorder]:
    """Reconnect ``shared.db`` to ``uri`` with a :class:`CommandRecorder` registered for its database."""
    from pymongo import uri_parser

    from shared.db import interface

    recorder = CommandRecorder(uri_parser.parse_uri(uri)["database"])
    monitoring.register(recorder)  # applies to clients created from now on: reconnect
    interface.reset_connection()
    interface.connect_db(uri)
    try:
        yield recorder
    finally:
        # pymongo keeps global listeners for good; a finished recorder records nothing (commands is None).
        interface.reset_connection()
        interface.connect_db(uri)


def documents_read(commands: Sequence[Command], collection: str = "raw_file") -> int:
    """How many documents of ``collection`` the recorded finds returned."""
    return sum(command.returned for command in commands if command.collection == collection and command.name == "find")


def ids_read(commands: Sequence[Command], collection: str = "raw_file") -> set[Any]:
    """The ids of the documents of ``collection`` the recorded finds returned."""
    finds = [command for command in commands if command.collection == collection and command.name == "find"]
    return {raw_file_id for command in finds for raw_file_id in command.ids}


def query_commands(commands: Sequence[Command]) -> list[Command]:
    """The commands that read (find, aggregate, count, distinct): what a page load is bounded by."""
    return [command for command in commands if command.name in READ_COMMANDS]
