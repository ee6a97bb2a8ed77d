"""Find secrets in log files: the value itself, URL-encoded, and base64 at any byte alignment.

Used by ``test_celery_e2e.py`` (``test_no_secret_reaches_any_log``); plain functions so other
log-producing tests can reuse them.
"""

from __future__ import annotations

import base64
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote, quote_plus

MIN_FORM_LENGTH = 8  # shorter fragments would match by chance


def _base64_cores(secret: bytes) -> set[str]:
    """Base64 text that any encoding of a buffer containing ``secret`` must contain, whatever precedes it.

    Base64 encodes 3 bytes into 4 characters, so what ``secret`` looks like depends on its
    offset modulo 3; for each offset, the 4-character groups that hold only bytes of the
    secret are the same in every buffer.
    """
    cores = set()
    for offset in range(3):
        data = b"\0" * offset + secret
        encoded = base64.b64encode(data).decode()
        start = 0 if offset == 0 else 4  # the first group mixes in what precedes the secret
        core = encoded[start : (len(data) // 3) * 4]  # the last group may mix in what follows
        if len(core) >= MIN_FORM_LENGTH:
            cores |= {core, core.replace("+", "-").replace("/", "_")}
    return cores


def forms_of(secret: str) -> set[str]:
    """Every form of ``secret`` to look for: as is, URL-encoded (both ways) and base64 (standard and URL-safe)."""
    forms = {secret, quote(secret, safe=""), quote_plus(secret), quote(secret)}
    forms |= _base64_cores(secret.encode())
    return {form for form in forms if len(form) >= MIN_FORM_LENGTH}


@dataclass(frozen=True)
class Leak:
    """One secret found in one line of one file."""

    secret_name: str
    form: str
    path: Path
    line_number: int
    line: str

    def __str__(self) -> str:
        shown = self.line.strip()[:300]
        return f"{self.path}:{self.line_number}: {self.secret_name} (as {self.form[:12]}...): {shown}"


def scan(files: Iterable[Path], secrets: Mapping[str, str]) -> list[Leak]:
    """Every line of ``files`` that holds any form of any secret."""
    wanted = {form: name for name, secret in secrets.items() for form in forms_of(secret)}
    leaks = []
    for path in files:
        with path.open("r", encoding="utf-8", errors="replace") as handle:
            for number, line in enumerate(handle, start=1):
                for form, name in wanted.items():
                    if form in line:
                        leaks.append(Leak(name, form, path, number, line))
    return leaks


def log_files(*folders: Path) -> list[Path]:
    """Every regular file below ``folders`` (logs only: callers pass log folders)."""
    return sorted(path for folder in folders if folder.is_dir() for path in folder.rglob("*") if path.is_file())
