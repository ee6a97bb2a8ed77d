"""A stored message as each channel shows it: e-mail subject and HTML, Slack text, webhook JSON.

Every value from the database (raw file names, reasons) is escaped for the
channel; nothing is ever rendered as a template.
"""

from __future__ import annotations

import html
from typing import Any

MAX_SUBJECT_CHARS = 200
MAX_SLACK_CHARS = 3500  # Slack shows at most ~4000 characters of a message's text before cutting it
_SLACK_MARK = {"error": ":red_circle:", "warning": ":warning:", "recovered": ":white_check_mark:", "info": ":memo:"}


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def email_subject(message: dict[str, Any]) -> str:
    """``[label] title`` on one line."""
    subject = _one_line(f"[{message.get('label') or 'rawvault'}] {message.get('title', '')}")
    return subject if len(subject) <= MAX_SUBJECT_CHARS else subject[: MAX_SUBJECT_CHARS - 1] + "…"


def email_html(message: dict[str, Any]) -> str:
    """The e-mail body: title, details table, lines, link, hint, footer; everything escaped."""
    esc = html.escape
    parts = [f"<h3>{esc(message.get('title', ''))}</h3>"]
    details = message.get("details") or []
    if details:
        rows = "".join(
            f'<tr><td style="padding-right:1em;color:#555"><b>{esc(str(name))}</b></td>'
            f'<td style="white-space:pre-wrap">{esc(str(value))}</td></tr>'
            for name, value in details
        )
        parts.append(f"<table>{rows}</table>")
    lines = message.get("lines") or []
    if lines:
        parts.append('<pre style="font-family:inherit;white-space:pre-wrap">' + esc("\n".join(lines)) + "</pre>")
    if message.get("link"):
        parts.append(f'<p><a href="{esc(message["link"], quote=True)}">Open the task log in Airflow</a></p>')
    if message.get("hint"):
        parts.append(f"<p><i>{esc(message['hint'])}</i></p>")
    footer = f"rawvault {message.get('label', '')} · {message.get('subject', '')} · {message.get('at', '')}"
    parts.append(f'<p style="color:#888;font-size:small">{esc(footer)}</p>')
    return "\n".join(parts)


def _slack_escape(text: str) -> str:
    # Slack's mrkdwn: only &, < and > need escaping (https://api.slack.com/reference/surfaces/formatting).
    return str(text).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def slack_text(message: dict[str, Any]) -> str:
    """The Slack message text (mrkdwn)."""
    mark = _SLACK_MARK.get(message.get("severity", ""), ":memo:")
    lines = [f"{mark} *{_slack_escape(message.get('title', ''))}*"]
    lines += [f"• {_slack_escape(name)}: {_slack_escape(value)}" for name, value in message.get("details") or []]
    lines += [_slack_escape(line) for line in message.get("lines") or []]
    if message.get("link"):
        lines.append(f"<{message['link']}|Task log in Airflow>")
    if message.get("hint"):
        lines.append(f"_{_slack_escape(message['hint'])}_")
    lines.append(f"_{_slack_escape(message.get('label', ''))} · {_slack_escape(message.get('subject', ''))}_")
    text = "\n".join(lines)
    return text if len(text) <= MAX_SLACK_CHARS else text[: MAX_SLACK_CHARS - 1] + "…"


def webhook_json(message: dict[str, Any]) -> dict[str, Any]:
    """The webhook body: the stored message as it is (``format: rawvault-alert/1``, see README "Alerts")."""
    return dict(message)
