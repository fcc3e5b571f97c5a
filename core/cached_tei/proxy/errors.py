"""Error responses in TEI's shapes, and the mapping from engine errors to them.

Native routes answer ``{"error", "error_type"}``, the OpenAI route ``{"message", "code",
"type"}``. TEI's own errors pass through with their type, status and message; failures that
are not TEI's (upstream down, misconfigured) get the closest TEI type.
"""

from __future__ import annotations

import logging

from starlette.responses import Response

from ..errors import InputError, ModelChangedError, StoreConfigurationError, TEIError
from ..jsonio import dumps
from .schemas import BadRequest

log = logging.getLogger(__name__)

STATUS_BY_TYPE = {
    "Validation": 422,
    "Tokenizer": 422,
    "Empty": 400,
    "Overloaded": 429,
    "Backend": 424,
    "Unhealthy": 503,
}
# Engine names for upstream failures that mean "TEI cannot be reached right now".
_UNREACHABLE = frozenset({"Unavailable", "BadGateway", "GatewayTimeout"})


class APIError(Exception):
    """A TEI-shaped error: ``error_type`` is one of TEI's types."""

    def __init__(self, error_type: str, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.error_type = error_type
        self.message = message
        self.status = status if status is not None else STATUS_BY_TYPE[error_type]


def error_response(error: APIError, openai: bool) -> Response:
    if openai:
        body = {"message": error.message, "code": error.status, "type": error.error_type}
    else:
        body = {"error": error.message, "error_type": error.error_type}
    return Response(dumps(body), status_code=error.status, media_type="application/json")


def plain_response(error: BadRequest) -> Response:
    return Response(error.text, status_code=error.status, media_type="text/plain; charset=utf-8")


def from_engine(exc: Exception) -> APIError:
    """The response-worthy form of an exception raised by ``Engine.embed``."""
    if isinstance(exc, TEIError):
        if exc.error_type in STATUS_BY_TYPE:
            return APIError(exc.error_type, exc.message, exc.status)
        if exc.error_type in _UNREACHABLE or exc.status is None:
            log.warning("upstream unavailable: %s", exc)
            return APIError("Unhealthy", f"upstream TEI is unavailable: {exc.message}")
        log.error("upstream failed: %s", exc)
        return APIError("Backend", f"upstream TEI failed: {exc.message}", 502)
    if isinstance(exc, InputError):
        return APIError("Validation", str(exc))
    if isinstance(exc, ModelChangedError):
        return APIError("Unhealthy", str(exc))
    if isinstance(exc, StoreConfigurationError):
        log.error("cache misconfigured: %s", exc)
        return APIError("Unhealthy", str(exc))
    raise exc
