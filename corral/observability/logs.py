"""Log output: text or one JSON object per line, with the request and session ids, and no secrets.

The auth middleware binds the request id (and the session id of `/v1/sessions/{id}...` paths) for the
request's task; the brain binds the session id for the worker's task. Both reach every record logged in
that task through context variables. Messages pass through `redact` so an API key or bearer token that
ends up in a log line (an exception message, a URL) is masked.
"""

from __future__ import annotations

import contextvars
import json
import logging
import re
import sys
import time
from typing import Literal

LogFormat = Literal["text", "json"]

request_id_var: contextvars.ContextVar[str | None] = contextvars.ContextVar("corral_request_id", default=None)
session_id_var: contextvars.ContextVar[str | None] = contextvars.ContextVar("corral_session_id", default=None)

_SESSION_PATH = re.compile(r"^/v1/sessions/(sesn_[A-Za-z0-9]+)")
_SECRETS = re.compile(
    r"(?P<prefix>sk-corral-|sk-ant-[a-z0-9]+-|sk-ant-|sk-proj-|sk-)[A-Za-z0-9_\-]{8,}"
    r"|(?P<scheme>(?i:bearer|basic)\s+)[A-Za-z0-9._~+/=\-]{8,}"
    r"|(?P<field>(?i:api[_-]?key|password|secret|token)[\"']?\s*[:=]\s*[\"']?)[^\s\"',;&]{4,}"
)


def redact(text: str) -> str:
    """Masks API keys, bearer credentials and `password=...`-style values."""

    def mask(match: re.Match[str]) -> str:
        kept = match.group("prefix") or match.group("scheme") or match.group("field") or ""
        return f"{kept}[REDACTED]"

    return _SECRETS.sub(mask, text)


def bind_request(request_id: str, path: str) -> None:
    """Called by the auth middleware at the start of every request."""
    request_id_var.set(request_id)
    match = _SESSION_PATH.match(path)
    session_id_var.set(match.group(1) if match else None)


def bind_session(session_id: str) -> None:
    """Called by the brain when a worker starts on a session (its records then carry the session id)."""
    request_id_var.set(None)
    session_id_var.set(session_id)


class _ContextFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = request_id_var.get()
        record.session_id = session_id_var.get()
        return True


class JsonFormatter(logging.Formatter):
    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "time": f"{self.formatTime(record)}.{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": redact(record.getMessage()),
        }
        for key in ("request_id", "session_id"):
            value = getattr(record, key, None)
            if value:
                entry[key] = value
        if record.exc_info:
            entry["exception"] = redact(self.formatException(record.exc_info))
        return json.dumps(entry, ensure_ascii=False)


class TextFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        ids = " ".join(
            str(value) for value in (getattr(record, "request_id", None), getattr(record, "session_id", None)) if value
        )
        text = redact(super().format(record))
        return f"{text} [{ids}]" if ids else text


def configure(level: str, log_format: LogFormat) -> None:
    """One handler on the root logger (uvicorn's loggers propagate to it), to stderr."""
    formatter: logging.Formatter = JsonFormatter() if log_format == "json" else TextFormatter()
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(formatter)
    handler.addFilter(_ContextFilter())
    root = logging.getLogger()
    for existing in list(root.handlers):
        root.removeHandler(existing)
    root.addHandler(handler)
    root.setLevel(level.upper())
    # Alembic narrates every plugin it loads (at import) at INFO; a server start should say only what matters.
    logging.getLogger("alembic").setLevel(max(logging.WARNING, root.level))
