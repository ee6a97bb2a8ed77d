"""An HTTP proxy in front of the S3 server, for tests that must see or steer what a client reads.

A test points a client (or the CLI, through ``AIRFLOW_CONN_AWS_DEFAULT``) at
:attr:`S3Proxy.endpoint_url` instead of the S3 server. The proxy forwards every
request unchanged and lets the test:

- count the object bytes S3 answered ``GetObject`` requests with (:attr:`S3Proxy.bytes_read`),
  and list the requests (:attr:`S3Proxy.requests`);
- hold requests whose path matches a rule until the test releases them (:meth:`S3Proxy.hold`),
  to put two processes in a chosen order or act on the file system while one waits;
- change the bytes of a response body on the way (``corrupt=``), like a broken network or disk would;
- answer ``HeadObject`` with other headers (:meth:`S3Proxy.override_head`), like a store whose
  metadata is stale (an ETag and checksum of an object version that is gone).

It runs in the test process (threads), binds a free port on 127.0.0.1 and
is stopped by its context manager. moto does not check request signatures, so
forwarding the signed request from another host:port is fine.
"""

from __future__ import annotations

import http.client
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import unquote, urlsplit

from devtools.servers import HOST

HOP_BY_HOP = frozenset({"connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade"})


@dataclass
class Request:
    """One request the proxy forwarded: method, decoded path, Range header, response bytes."""

    method: str
    path: str
    range: str | None
    status: int = 0
    body_bytes: int = 0


@dataclass
class Hold:
    """Requests matching ``match`` wait until :meth:`release`; ``seen`` is set when the first one arrives."""

    match: Callable[[Request], bool]
    released: threading.Event = field(default_factory=threading.Event)
    seen: threading.Event = field(default_factory=threading.Event)
    corrupt: Callable[[Request, bytes], bytes] | None = None
    on_arrival: Callable[[Request], None] | None = None
    arrived: int = 0

    def release(self) -> None:
        self.released.set()


class S3Proxy:
    """A forwarding HTTP proxy to ``upstream`` (the S3 server's endpoint URL); see the module docstring."""

    def __init__(self, upstream: str, *, timeout: float = 120.0) -> None:
        parts = urlsplit(upstream)
        self.upstream_host = parts.hostname or HOST
        self.upstream_port = parts.port or 80
        self.timeout = timeout
        self.requests: list[Request] = []
        self.holds: list[Hold] = []
        self.head_overrides: list[tuple[Callable[[Request], bool], dict[str, str]]] = []
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer((HOST, 0), self._handler_class())
        self._server.daemon_threads = True
        self._thread: threading.Thread | None = None

    @property
    def endpoint_url(self) -> str:
        return f"http://{HOST}:{self._server.server_address[1]}"

    @property
    def bytes_read(self) -> int:
        """Object bytes returned to ``GET`` requests of objects (not bucket listings)."""
        with self._lock:
            return sum(r.body_bytes for r in self.requests if r.method == "GET" and r.status in (200, 206))

    def gets(self, contains: str = "") -> list[Request]:
        """The ``GET`` requests whose path contains ``contains``."""
        with self._lock:
            return [r for r in self.requests if r.method == "GET" and contains in r.path]

    def reset(self) -> None:
        with self._lock:
            self.requests.clear()

    def hold(
        self,
        match: Callable[[Request], bool],
        *,
        corrupt: Callable[[Request, bytes], bytes] | None = None,
        on_arrival: Callable[[Request], None] | None = None,
    ) -> Hold:
        """Hold the requests ``match`` selects until the returned :class:`Hold` is released."""
        hold = Hold(match, corrupt=corrupt, on_arrival=on_arrival)
        with self._lock:
            self.holds.append(hold)
        return hold

    def override_head(self, match: Callable[[Request], bool], headers: dict[str, str]) -> None:
        """Answer the HEAD requests ``match`` selects with ``headers`` in place of S3's own values."""
        with self._lock:
            self.head_overrides.append((match, {name.lower(): value for name, value in headers.items()}))

    def _head_override(self, request: Request) -> dict[str, str]:
        with self._lock:
            return next((headers for match, headers in self.head_overrides if match(request)), {})

    def start(self) -> S3Proxy:
        self._thread = threading.Thread(target=self._server.serve_forever, name="s3-proxy", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        for hold in self.holds:
            hold.release()
        self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def __enter__(self) -> S3Proxy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _matching_hold(self, request: Request) -> Hold | None:
        with self._lock:
            return next((hold for hold in self.holds if hold.match(request)), None)

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: object) -> None:
                pass  # quiet: the test's own output matters

            def _forward(self) -> None:
                request = Request(self.command, unquote(urlsplit(self.path).path), self.headers.get("Range"))
                with proxy._lock:
                    proxy.requests.append(request)
                hold = proxy._matching_hold(request)
                if hold is not None:
                    hold.arrived += 1
                    hold.seen.set()
                    if hold.on_arrival is not None:
                        hold.on_arrival(request)
                    hold.released.wait(proxy.timeout)
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else None
                headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP_BY_HOP}
                upstream = http.client.HTTPConnection(proxy.upstream_host, proxy.upstream_port, timeout=proxy.timeout)
                try:
                    upstream.request(self.command, self.path, body=body, headers=headers)
                    response = upstream.getresponse()
                    data = response.read()
                    response_headers = response.getheaders()
                    status, reason = response.status, response.reason
                finally:
                    upstream.close()
                if hold is not None and hold.corrupt is not None and self.command == "GET" and data:
                    data = hold.corrupt(request, data)
                request.status = status
                request.body_bytes = len(data) if self.command == "GET" else 0
                self.send_response(status, reason)
                for name, value in response_headers:
                    if name.lower() not in HOP_BY_HOP and name.lower() != "content-length":
                        self.send_header(name, value)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if data:
                    self.wfile.write(data)

            do_GET = do_PUT = do_POST = do_DELETE = _forward  # noqa: N815 - http.server calls do_<METHOD>

            def do_HEAD(self) -> None:
                self._forward_head()

            def _forward_head(self) -> None:
                request = Request("HEAD", unquote(urlsplit(self.path).path), None)
                with proxy._lock:
                    proxy.requests.append(request)
                headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP_BY_HOP}
                upstream = http.client.HTTPConnection(proxy.upstream_host, proxy.upstream_port, timeout=proxy.timeout)
                try:
                    upstream.request("HEAD", self.path, headers=headers)
                    response = upstream.getresponse()
                    response.read()
                    request.status = response.status
                    override = proxy._head_override(request)
                    self.send_response(response.status, response.reason)
                    for name, value in response.getheaders():
                        if name.lower() not in HOP_BY_HOP and name.lower() not in override:
                            self.send_header(name, value)
                    for name, value in override.items():
                        self.send_header(name, value)
                    self.end_headers()
                finally:
                    upstream.close()

        return Handler


@contextmanager
def s3_proxy(upstream: str) -> Iterator[S3Proxy]:
    """A started :class:`S3Proxy` in front of ``upstream``, stopped on exit."""
    with S3Proxy(upstream) as proxy:
        yield proxy


def flip_first_byte(_request: Request, data: bytes) -> bytes:
    """A corruption for :meth:`S3Proxy.hold`: the first byte of the body inverted."""
    return bytes([data[0] ^ 0xFF]) + data[1:]
