"""Log lines as text (the default) or one JSON object each (``CACHED_TEI_LOG_FORMAT=json``).

The command line configures logging once with :func:`configure_logging`; the proxy sets
:data:`request_context` for each request, so that the lines logged while serving it carry its
request id and trace id.
"""

from __future__ import annotations

import logging
import sys
from contextvars import ContextVar
from datetime import datetime, timezone
from typing import Literal, NamedTuple

from pydantic import Field
from pydantic_settings import BaseSettings

from .environment import environment_settings

LogFormat = Literal["text", "json"]

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
# Loggers that follow the level asked for; every other library logs its warnings and errors.
OWN_LOGGERS = ("cached_tei", "uvicorn")


class LogSettings(BaseSettings):
    """How the command line and the proxy write their logs."""

    model_config = environment_settings("CACHED_TEI_")

    log_format: LogFormat = Field(
        "text", description="text, or json: one JSON object per line (time, level, logger...)"
    )


class RequestContext(NamedTuple):
    """What identifies the request being served, for its log lines (a tuple: one is made per
    request)."""

    request_id: str
    trace_id: str | None = None


request_context: ContextVar[RequestContext | None] = ContextVar(
    "cached_tei_request_context", default=None
)


class JSONFormatter(logging.Formatter):
    """One JSON object per record: time (UTC, ISO 8601), level, logger, message, the request's
    ``request_id`` and ``trace_id`` when there is one, and ``exception`` when one is logged."""

    def format(self, record: logging.LogRecord) -> str:
        import orjson

        entry: dict[str, str] = {
            "time": datetime.fromtimestamp(record.created, timezone.utc).isoformat(
                timespec="milliseconds"
            ),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        context = request_context.get()
        if context is not None:
            entry["request_id"] = context.request_id
            if context.trace_id is not None:
                entry["trace_id"] = context.trace_id
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        if record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        return orjson.dumps(entry).decode()


def json_line(logger: str, level: int, message: str) -> str:
    """The JSON line a record of ``logger`` at ``level`` gives, whatever the levels let through."""
    return JSONFormatter().format(logging.LogRecord(logger, level, "", 0, message, None, None))


class _Handler(logging.StreamHandler):  # type: ignore[type-arg]
    """The stderr handler configure_logging installs (and replaces when called again)."""


def configure_logging(level: str | int, log_format: LogFormat | None = None) -> None:
    """Log to stderr: ``cached_tei`` and uvicorn at ``level``, other libraries' warnings and
    errors; as text or JSON lines (None keeps the format configured before, text at first)."""
    root = logging.getLogger()
    previous = [handler for handler in root.handlers if isinstance(handler, _Handler)]
    if log_format is None:
        json_before = any(isinstance(handler.formatter, JSONFormatter) for handler in previous)
        log_format = "json" if json_before else "text"
    for handler in previous:
        root.removeHandler(handler)
    handler = _Handler(sys.stderr)
    handler.setFormatter(
        JSONFormatter() if log_format == "json" else logging.Formatter(TEXT_FORMAT)
    )
    root.addHandler(handler)
    root.setLevel(logging.WARNING)
    for name in OWN_LOGGERS:
        logging.getLogger(name).setLevel(level)
