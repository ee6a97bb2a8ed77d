"""The body of one upload request: a read-only, seekable view of a byte range of a local file."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import Self

from rawvault.s3.errors import LocalFileChangedError

ProgressCallback = Callable[[int], None]


class RequestBody:
    """What botocore asks of any request body besides ``read``/``seek``/``tell``/``len()``.

    Readable, seekable, a body even when empty, and closed at the end of a ``with`` block.
    """

    def __bool__(self) -> bool:  # an empty body is still a body
        return True

    def seekable(self) -> bool:
        return True

    def readable(self) -> bool:
        return True

    def close(self) -> None:
        """Release what the body holds open (nothing here)."""

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


class PartReader(RequestBody):
    """A read-only, seekable view of ``size`` bytes of a file from ``offset``: the body of one request.

    botocore reads it (for the checksum, then to send it) and seeks back to
    retry a request; every read and rewind is reported to ``progress`` (with a
    negative count for a rewind), like boto3's transfer callbacks.
    """

    def __init__(self, path: Path, offset: int, size: int, progress: ProgressCallback | None = None) -> None:
        self.path = path
        self._offset = offset
        self._size = size
        self._position = 0
        self._progress = progress
        self._handle = path.open("rb")

    def __len__(self) -> int:
        return self._size

    def read(self, amount: int | None = -1) -> bytes:
        remaining = self._size - self._position
        if amount is None or amount < 0 or amount > remaining:
            amount = remaining
        if amount <= 0:
            return b""
        self._handle.seek(self._offset + self._position)
        data = self._handle.read(amount)
        if len(data) < amount:
            raise LocalFileChangedError(
                f"{self.path} ended after {self._offset + self._position + len(data)} bytes while "
                f"{self._offset + self._size} were expected: the file shrank during the upload"
            )
        self._position += len(data)
        if self._progress:
            self._progress(len(data))
        return data

    def seek(self, offset: int, whence: int = 0) -> int:
        base = {0: 0, 1: self._position, 2: self._size}[whence]
        target = min(max(base + offset, 0), self._size)
        if self._progress and target != self._position:
            self._progress(target - self._position)
        self._position = target
        return target

    def tell(self) -> int:
        return self._position

    def close(self) -> None:
        self._handle.close()
