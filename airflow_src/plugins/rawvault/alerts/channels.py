"""The alert channels through Airflow's notifiers: ``SmtpNotifier``, ``SlackWebhookNotifier``, ``HttpNotifier``.

The only module of :mod:`rawvault.alerts` that imports Airflow. Each sender
builds its provider's notifier for one message and calls its ``notify``
directly: ``BaseNotifier.__call__`` would render every field as a Jinja
template (a raw file named ``{{ ... }}`` is data, not a template) and log
the exception as it is (for HTTP that is the URL, which holds a webhook's
token). Secrets stay in the Airflow connections: their password, URL and
URL parts are registered with Airflow's secrets masker and redacted from any
log record written while a message is sent, and failures are described by a
safe reason (``connection refused``, ``HTTP 500``, ...) that names the channel,
never the URL or the password.
"""

from __future__ import annotations

import contextlib
import logging
import re
import smtplib
import socket
import ssl
from collections.abc import Callable, Iterator
from typing import Any
from urllib.error import URLError
from urllib.parse import urlsplit

from rawvault.alerts import render
from rawvault.alerts.delivery import DeliveryError, Sender
from shared.settings.alerts import AlertSettings, EmailChannel, SlackChannel, WebhookChannel

log = logging.getLogger(__name__)

_HTTP_STATUS_RES = (re.compile(r"^(\d{3}):"), re.compile(r"Status Code: (\d{3})"))
_SECRET_KEY_RE = re.compile(r"token|secret|pass|key|auth|signature", re.IGNORECASE)
MIN_SECRET_CHARS = 6  # shorter URL parts ("/", "/api") are not secrets and would redact half of every log


def _url_parts(url: str) -> list[str]:
    parts = urlsplit(url)
    found = [url, parts.path, f"{parts.path}?{parts.query}" if parts.query else "", parts.query, parts.password or ""]
    return [part for part in found if part and len(part) >= MIN_SECRET_CHARS]


def connection_secrets(conn_id: str) -> list[str]:
    """What of a connection must never be logged: password, URLs and their paths, secret-looking extras."""
    from airflow.sdk import BaseHook

    try:
        conn = BaseHook.get_connection(conn_id)
    except Exception:
        return []  # a missing connection has no secrets; sending reports it
    values: list[str] = []
    if conn.password:
        values += [conn.password, *(_url_parts(conn.password) if "://" in conn.password else [])]
    if conn.host and ("://" in conn.host or "/" in conn.host):
        values += _url_parts(conn.host)  # a URL with a path (a webhook's token); a plain host name is no secret
    # HttpHook sends the extra's other keys as headers: Authorization, X-Api-Key, X-Token, ...
    extra: dict[str, Any] = conn.extra_dejson or {}
    values += [value for key, value in extra.items() if _SECRET_KEY_RE.search(key) and isinstance(value, str)]
    return sorted({value for value in values if len(value) >= MIN_SECRET_CHARS}, key=len, reverse=True)


def _clean(text: str, secrets: list[str]) -> str:
    for secret in secrets:
        text = text.replace(secret, "***")
    return text


class _Redact(logging.Filter):
    """Replaces ``secrets`` in a standard-library log record's message and traceback by ``***``."""

    def __init__(self, secrets: list[str]) -> None:
        super().__init__()
        self.secrets = secrets

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        cleaned = _clean(message, self.secrets)
        if cleaned != message:
            record.msg, record.args = cleaned, None
        if record.exc_info:
            text = logging.Formatter().formatException(record.exc_info)
            record.exc_info, record.exc_text = None, _clean(text, self.secrets)
        return True


class _RedactingLog:
    """Stands in for a hook's or notifier's structlog logger: redacts ``secrets``, drops tracebacks.

    HttpHook logs a refused connection with the requests exception, which
    quotes the URL path (a webhook's token), and the server's reply on an
    error status; the send's own failure is reported by :func:`safe_reason`.
    """

    LEVELS = frozenset({"debug", "info", "warning", "warn", "error", "exception", "critical", "fatal"})

    def __init__(self, inner: Any, secrets: list[str]) -> None:
        self._inner = inner
        self._secrets = secrets

    def __getattr__(self, name: str) -> Any:
        method = getattr(self._inner, name)
        if name not in self.LEVELS:
            return method

        def log(event: Any = "", *args: Any, **kwargs: Any) -> Any:
            try:
                text = str(event) % args if args else str(event)
            except (TypeError, ValueError):
                text = " ".join(map(str, (event, *args)))
            kwargs.pop("exc_info", None)
            kwargs = {
                key: _clean(value, self._secrets) if isinstance(value, str) else value for key, value in kwargs.items()
            }
            return getattr(self._inner, "error" if name == "exception" else name)(_clean(text, self._secrets), **kwargs)

        return log


def _quiet(obj: Any, secrets: list[str]) -> None:
    """Give an Airflow LoggingMixin object (notifier, hook) a logger that never writes ``secrets``."""
    obj._log = _RedactingLog(obj.log, secrets)
    client_args = getattr(obj, "extra_client_args", None)
    if isinstance(client_args, dict) and "logger" in client_args:
        # SlackWebhookHook hands its logger to slack_sdk's client, which logs the URL when it retries.
        client_args["logger"] = obj._log


# Standard-library loggers that write the URL of a request (at DEBUG) and do not always reach the root.
URL_LOGGERS = ("urllib3.connectionpool", "slack_sdk.webhook.client", "slack_sdk.http_retry", "requests")


@contextlib.contextmanager
def secrets_kept_out_of_logs(secrets: list[str], *logging_objects: Any) -> Iterator[None]:
    """Keep ``secrets`` out of every log written while a message is sent.

    Registered with Airflow's secrets masker (a worker's task log), replaced
    in the messages of the notifier's and hook's own loggers, and filtered
    from standard-library records (urllib3, slack_sdk) meanwhile.
    """
    from airflow.sdk.log import mask_secret

    for secret in secrets:
        mask_secret(secret)
    for obj in logging_objects:
        _quiet(obj, secrets)
    redact = _Redact(secrets)
    # Handlers see what propagates to the root; logger filters catch loggers that do not propagate.
    targets: list[Any] = [*logging.getLogger().handlers, *(logging.getLogger(name) for name in URL_LOGGERS)]
    for target in targets:
        target.addFilter(redact)
    try:
        yield
    finally:
        for target in targets:
            target.removeFilter(redact)


def safe_reason(error: BaseException, conn_id: str) -> str:
    """Why a send failed, without the URL, password or server reply that the exception may quote."""
    from airflow.sdk.exceptions import AirflowNotFoundException

    text = str(error)
    if isinstance(error, AirflowNotFoundException) or "isn't defined" in text or "connection is not found" in text:
        return (
            f"the Airflow connection {conn_id!r} is not defined: create it (UI: Admin > Connections, or the "
            f"environment variable AIRFLOW_CONN_{conn_id.upper().replace('-', '_').replace('.', '_')})"
        )
    if isinstance(error, smtplib.SMTPAuthenticationError):
        return f"the SMTP server refused the login ({error.smtp_code}): check login and password of {conn_id!r}"
    if isinstance(error, smtplib.SMTPRecipientsRefused):
        return "the SMTP server refused the recipients (alerts.channels.email.to)"
    if isinstance(error, smtplib.SMTPResponseException):
        return f"the SMTP server answered {error.smtp_code}"
    if isinstance(error, smtplib.SMTPException) or "Unable to connect to smtp server" in text:
        return f"SMTP failed ({type(error).__name__})"
    if isinstance(error, ssl.SSLError):
        return "TLS failed: check the connection's TLS/SSL settings (extra disable_tls / disable_ssl)"
    if isinstance(error, (socket.timeout, TimeoutError)) or "timed out" in text.lower():
        return "timed out"
    if "refused" in text.lower() or isinstance(error, ConnectionRefusedError):
        return "connection refused"
    if isinstance(error, (URLError, OSError, ConnectionError)) or type(error).__name__ == "ConnectionError":
        return f"network error ({type(error).__name__})"
    for pattern in _HTTP_STATUS_RES:  # HttpHook: "500:Internal Server Error"; Slack: "... Status Code: 500"
        if match := pattern.search(text):
            return f"HTTP {match.group(1)}"
    if "from_email" in text:
        return "no sender address: set alerts.channels.email.from_address or the connection's extra from_email"
    return f"{type(error).__name__} (details withheld: they may contain the channel's URL)"


def _guarded(name: str, conn_id: str, build: Callable[[dict[str, Any]], Any]) -> Sender:
    """A sender that builds the notifier for a message, sends it, and turns any failure into a safe reason."""
    found: list[list[str]] = []  # the connection's secrets, read once per sender (one task run)

    def send(message: dict[str, Any]) -> None:
        if not found or not found[0]:
            found[:] = [connection_secrets(conn_id)]
        secrets = found[0]
        notifier = build(message)
        with secrets_kept_out_of_logs(secrets, notifier, notifier.hook):
            try:
                notifier.notify({})
            except Exception as error:
                raise DeliveryError(f"{name} via connection {conn_id!r}: {safe_reason(error, conn_id)}") from None

    return send


NotifierFor = Callable[[dict[str, Any]], Any]  # the provider's notifier of one message


def _email_notifier(email: EmailChannel, timeout: float) -> NotifierFor:
    """SMTP; the connection sets its own timeout."""
    from airflow.providers.smtp.notifications.smtp import SmtpNotifier

    return lambda message: SmtpNotifier(
        to=list(email.to),
        from_email=email.from_address,
        subject=render.email_subject(message),
        html_content=render.email_html(message),
        smtp_conn_id=email.conn_id,
    )


def _slack_notifier(slack: SlackChannel, timeout: float) -> NotifierFor:
    """A Slack incoming webhook (whole seconds, at least one)."""
    from airflow.providers.slack.notifications.slack_webhook import SlackWebhookNotifier

    return lambda message: SlackWebhookNotifier(
        slack_webhook_conn_id=slack.conn_id,
        text=render.slack_text(message),
        unfurl_links=False,
        timeout=max(1, round(timeout)),
    )


def _webhook_notifier(webhook: WebhookChannel, timeout: float) -> NotifierFor:
    """A JSON POST to an HTTP connection."""
    from airflow.providers.http.notifications.http import HttpNotifier

    return lambda message: HttpNotifier(
        http_conn_id=webhook.conn_id,
        endpoint=webhook.endpoint or None,
        method="POST",
        json=render.webhook_json(message),
        headers={"Content-Type": "application/json"},
        extra_options={"timeout": timeout},
    )


# Channel name (a field of alerts.channels) -> its notifier, imported only when the channel is configured.
CHANNEL_NOTIFIERS: dict[str, Callable[[Any, float], NotifierFor]] = {
    "email": _email_notifier,
    "slack": _slack_notifier,
    "webhook": _webhook_notifier,
}


def build_senders(alerts: AlertSettings) -> dict[str, Sender]:
    """One sender per configured channel, by channel name."""
    senders: dict[str, Sender] = {}
    for name, notifier_for in CHANNEL_NOTIFIERS.items():
        channel = getattr(alerts.channels, name)
        if channel is not None:
            senders[name] = _guarded(name, channel.conn_id, notifier_for(channel, alerts.send_timeout_seconds))
    return senders
