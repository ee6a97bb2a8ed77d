"""Local receivers for alerts, for dev and tests: a real SMTP server and a real HTTP webhook endpoint.

- :class:`SmtpReceiver`: aiosmtpd on a free 127.0.0.1 port (optionally with
  AUTH LOGIN/PLAIN over plain text, so a connection's password is really
  used); collects every message it accepts.
- :class:`WebhookReceiver`: stdlib ``http.server`` in a thread; collects the
  JSON body of every POST. It can answer an error status (``fail_with``) or be
  stopped and started again on the same port to simulate a channel that is
  down. Slack incoming webhooks are JSON POSTs too, so it stands in for Slack.

Both run in threads of the calling process, bind only 127.0.0.1 and stop when
their context exits.
"""

from __future__ import annotations

import email
import email.policy
import json
import threading
import time
import warnings
from dataclasses import dataclass, field
from email.message import EmailMessage
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any

from devtools.servers import HOST, free_port


@dataclass
class ReceivedMail:
    """One message the SMTP server accepted."""

    mail_from: str
    rcpt_tos: list[str]
    message: EmailMessage

    @property
    def subject(self) -> str:
        return str(self.message["Subject"] or "")

    def body(self) -> str:
        """The text of every text part, joined (HTML included as it is)."""
        parts = [part for part in self.message.walk() if part.get_content_maintype() == "text"]
        return "\n".join(str(part.get_content()) for part in parts)


class SmtpReceiver:
    """An aiosmtpd SMTP server that keeps what it receives; ``login``/``password`` require AUTH with them."""

    def __init__(self, port: int | None = None, login: str | None = None, password: str | None = None) -> None:
        self.port = port or free_port()
        self.login = login
        self.password = password
        self.messages: list[ReceivedMail] = []
        self.auth_attempts: list[tuple[str, bool]] = []  # (login, accepted)
        self._lock = threading.Lock()
        self._controller: Any = None

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802 (aiosmtpd hook name)
        message = email.message_from_bytes(envelope.original_content, policy=email.policy.default)
        with self._lock:
            self.messages.append(ReceivedMail(envelope.mail_from, list(envelope.rcpt_tos), message))  # type: ignore[arg-type]
        return "250 Message accepted for delivery"

    def _authenticate(self, server: Any, session: Any, envelope: Any, mechanism: str, auth_data: Any) -> Any:
        from aiosmtpd.smtp import AuthResult, LoginPassword

        ok = isinstance(auth_data, LoginPassword) and (
            auth_data.login.decode() == self.login and auth_data.password.decode() == self.password
        )
        with self._lock:
            self.auth_attempts.append((auth_data.login.decode() if isinstance(auth_data, LoginPassword) else "", ok))
        return AuthResult(success=ok)

    def start(self) -> None:
        """Listen on 127.0.0.1:``port`` (the same port after a stop)."""
        from aiosmtpd.controller import Controller

        if self._controller is not None:
            return
        auth: dict[str, Any] = {}
        if self.login is not None:
            # Plain-text AUTH is fine on loopback; production SMTP uses STARTTLS (the connection's default).
            auth = {"authenticator": self._authenticate, "auth_require_tls": False, "auth_required": True}
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", "Requiring AUTH while not requiring TLS", UserWarning)
            self._controller = Controller(self, hostname=HOST, port=self.port, **auth)
            self._controller.start()

    def stop(self) -> None:
        """Stop listening: connections are refused until :meth:`start`."""
        if self._controller is not None:
            self._controller.stop()
            self._controller = None

    def received(self) -> list[ReceivedMail]:
        with self._lock:
            return list(self.messages)

    def __enter__(self) -> SmtpReceiver:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


@dataclass
class ReceivedPost:
    """One POST the webhook receiver got."""

    path: str
    headers: dict[str, str]
    body: Any  # the decoded JSON, or the raw text when it was not JSON
    answered: int = 200


@dataclass
class _State:
    posts: list[ReceivedPost] = field(default_factory=list)
    fail_with: int | None = None
    delay_seconds: float = 0.0
    lock: threading.Lock = field(default_factory=threading.Lock)


class WebhookReceiver:
    """A JSON webhook endpoint on 127.0.0.1.

    ``fail_with = 500`` answers errors, ``delay_seconds`` answers late (a hanging
    endpoint), :meth:`stop` refuses connections.
    """

    def __init__(self, port: int | None = None) -> None:
        self.port = port or free_port()
        self._state = _State()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    @property
    def fail_with(self) -> int | None:
        return self._state.fail_with

    @fail_with.setter
    def fail_with(self, status: int | None) -> None:
        self._state.fail_with = status

    @property
    def delay_seconds(self) -> float:
        return self._state.delay_seconds

    @delay_seconds.setter
    def delay_seconds(self, seconds: float) -> None:
        self._state.delay_seconds = seconds

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        state = self._state

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                text = self.rfile.read(length).decode("utf-8", errors="replace")
                try:
                    body: Any = json.loads(text)
                except ValueError:
                    body = text
                if state.delay_seconds:
                    time.sleep(state.delay_seconds)
                status = state.fail_with or 200
                with state.lock:
                    state.posts.append(ReceivedPost(self.path, dict(self.headers), body, status))
                reply = b"ok" if status == 200 else b"receiver told to fail"
                self.send_response(status)
                self.send_header("Content-Type", "text/plain")
                self.send_header("Content-Length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)

            def log_message(self, format: str, *args: Any) -> None:
                pass  # keep test output quiet

        return Handler

    def start(self) -> None:
        """Listen on 127.0.0.1:``port`` (the same port after a stop)."""
        if self._server is not None:
            return
        ThreadingHTTPServer.allow_reuse_address = True
        self._server = ThreadingHTTPServer((HOST, self.port), self._handler())
        self._thread = threading.Thread(target=self._server.serve_forever, name=f"webhook-{self.port}", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop listening: connections are refused until :meth:`start`."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None

    def received(self, only_ok: bool = True) -> list[ReceivedPost]:
        """The POSTs received (by default only those answered 200: the ones the sender saw delivered)."""
        with self._state.lock:
            return [post for post in self._state.posts if not only_ok or post.answered == 200]

    def __enter__(self) -> WebhookReceiver:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
