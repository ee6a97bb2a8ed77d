"""A TCP proxy on 127.0.0.1 for fault tests: slow it down (bytes per second) or take it down and up again.

Put it between the S3 clients and the S3 server (``AIRFLOW_CONN_AWS_DEFAULT``'s
``endpoint_url`` pointing at :attr:`TcpProxy.endpoint_url`):

- :meth:`TcpProxy.throttle` limits the bytes per second sent to the server, shared
  by every connection (two uploads at once share the rate), so uploads take as
  long as a test needs, e.g. to hold the ``s3_upload_pool`` full;
- :meth:`TcpProxy.stop` resets every connection and stops listening (S3 is down
  for every client: connection refused), :meth:`TcpProxy.start` listens again on
  the same port; the server keeps its state, as a real S3 does through an outage.

Threads only: run it in the test (or benchmark) process.
"""

from __future__ import annotations

import contextlib
import socket
import struct
import threading
import time

from devtools.servers import HOST, free_port

CHUNK_BYTES = 16 * 1024


class TcpProxy:
    """A TCP proxy to ``HOST:target_port`` that can be throttled, stopped and started again on its port."""

    def __init__(self, target_port: int, port: int | None = None) -> None:
        self.target_port = target_port
        self.port = port or free_port()
        self._listener: socket.socket | None = None
        self._sockets: set[socket.socket] = set()
        self._lock = threading.Lock()
        self._rate: float | None = None  # bytes per second towards the server; None: unlimited
        self._next_send = 0.0  # monotonic time the shared rate allows the next chunk

    @property
    def endpoint_url(self) -> str:
        return f"http://{HOST}:{self.port}"

    @property
    def running(self) -> bool:
        return self._listener is not None

    def throttle(self, bytes_per_second: float | None) -> None:
        """Limit what all connections together send to the server (None: no limit); applies at once."""
        with self._lock:
            self._rate = bytes_per_second
            self._next_send = time.monotonic()

    def start(self) -> TcpProxy:
        """Listen (again) on :attr:`port`."""
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind((HOST, self.port))
        listener.listen(128)
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True, name="proxy-accept").start()
        return self

    def stop(self) -> None:
        """Stop listening and reset every open connection (clients see S3 go away)."""
        listener, self._listener = self._listener, None
        if listener is not None:
            with contextlib.suppress(OSError):
                listener.shutdown(socket.SHUT_RDWR)  # wakes the accepting thread
            listener.close()
        with self._lock:
            sockets, self._sockets = self._sockets, set()
        for sock in sockets:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))  # close with a RST
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()

    def __enter__(self) -> TcpProxy:
        return self.start()

    def __exit__(self, *_exc: object) -> None:
        self.stop()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return  # stopped
            try:
                upstream = socket.create_connection((HOST, self.target_port), timeout=5)
                upstream.settimeout(None)
            except OSError:
                client.close()
                continue
            with self._lock:
                self._sockets.update((client, upstream))
            threading.Thread(target=self._pump, args=(client, upstream, True), daemon=True).start()
            threading.Thread(target=self._pump, args=(upstream, client, False), daemon=True).start()

    def _wait_for_rate(self, size: int) -> None:
        with self._lock:
            if self._rate is None:
                return
            now = time.monotonic()
            start = max(now, self._next_send)
            self._next_send = start + size / self._rate
        if start > now:
            time.sleep(start - now)

    def _pump(self, src: socket.socket, dst: socket.socket, to_server: bool) -> None:
        try:
            while data := src.recv(CHUNK_BYTES):
                if to_server:
                    self._wait_for_rate(len(data))
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (src, dst):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
            with self._lock:
                self._sockets.discard(src)
                self._sockets.discard(dst)
            src.close()
