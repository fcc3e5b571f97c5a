"""Request targets for log lines without their query string: a key sent as ``?api_key=...``
(or under any other name, or none) never reaches a log. TEI's routes take no query."""

from __future__ import annotations

import logging

ACCESS_LOGGER = "uvicorn.access"


def redact_target(target: str) -> str:
    """``/embed?api_key=s3cret`` -> ``/embed?***``."""
    path, mark, _ = target.partition("?")
    return f"{path}?***" if mark else target


class RedactQueryFilter(logging.Filter):
    """Masks the query string in uvicorn's access lines (``client - "METHOD target HTTP/v"
    status``): the target is the third argument."""

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        if isinstance(args, tuple) and len(args) >= 3 and isinstance(args[2], str):
            record.args = (*args[:2], redact_target(args[2]), *args[3:])
        return True


def redact_access_log() -> None:
    """Install :class:`RedactQueryFilter` on uvicorn's access logger (once per process)."""
    logger = logging.getLogger(ACCESS_LOGGER)
    if not any(isinstance(f, RedactQueryFilter) for f in logger.filters):
        logger.addFilter(RedactQueryFilter())
