"""OpenTelemetry spans for proxy requests, engine calls, cache reads and writes, and TEI
requests: optional (the ``otel`` extra).

Tracing is on when the standard ``OTEL_*`` variables ask for traces
(``OTEL_EXPORTER_OTLP_ENDPOINT``, ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`` or
``OTEL_TRACES_EXPORTER`` set, and ``OTEL_SDK_DISABLED`` not ``true``). Otherwise nothing from
opentelemetry is imported and every span is one shared object that does nothing.

Attributes are counts and statuses, never texts or cache keys.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Mapping
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from opentelemetry.sdk.trace.export import SpanExporter
    from opentelemetry.trace import Tracer, TracerProvider

log = logging.getLogger(__name__)


class Span(Protocol):
    """What call sites may do with a span: add an attribute once its value is known."""

    def set_attribute(self, key: str, value: str | int | bool) -> None: ...


class _NullSpan:
    """The span (and its context manager) while tracing is off."""

    __slots__ = ()

    def set_attribute(self, key: str, value: str | int | bool) -> None:
        pass

    def __enter__(self) -> _NullSpan:
        return self

    def __exit__(self, *exc: object) -> None:
        return None


NULL_SPAN = _NullSpan()
_tracer: Tracer | None = None
_configured = False


def enabled() -> bool:
    return _tracer is not None


def span(
    name: str, *, client: bool = False, root: bool = False, **attributes: int
) -> AbstractContextManager[Span]:
    """A span around a block, a child of the current one (``root``: of none), with
    ``attributes`` named ``cached_tei.<name>``; ``client`` marks a request to TEI."""
    if _tracer is None:
        return NULL_SPAN
    from opentelemetry.context import Context
    from opentelemetry.trace import SpanKind

    return _tracer.start_as_current_span(
        name,
        context=Context() if root else None,
        kind=SpanKind.CLIENT if client else SpanKind.INTERNAL,
        attributes={f"cached_tei.{key}": value for key, value in attributes.items()},
    )


def server_span(
    method: str, route: str, headers: Iterable[tuple[bytes, bytes]]
) -> AbstractContextManager[Span]:
    """The span of one HTTP request to the proxy, continuing the caller's trace (W3C
    ``traceparent``, or what ``OTEL_PROPAGATORS`` names)."""
    if _tracer is None:
        return NULL_SPAN
    from opentelemetry.propagate import extract
    from opentelemetry.trace import SpanKind

    carrier = {name.decode("latin-1"): value.decode("latin-1") for name, value in headers}
    return _tracer.start_as_current_span(
        f"{method} {route}",
        context=extract(carrier),
        kind=SpanKind.SERVER,
        attributes={"http.request.method": method, "http.route": route},
    )


def inject(headers: dict[str, str]) -> dict[str, str]:
    """``headers`` plus the current trace context (a copy); ``headers`` itself when off."""
    if _tracer is None:
        return headers
    from opentelemetry.propagate import inject as inject_context

    carrier = dict(headers)
    inject_context(carrier)
    return carrier


def use(provider: TracerProvider | None) -> None:
    """Trace with ``provider`` (an application's own, or a test's); None turns tracing off.
    Either way :func:`configure` then leaves it as it is."""
    global _tracer, _configured
    _configured = True
    _tracer = None if provider is None else provider.get_tracer("cached_tei")


def configure() -> None:
    """Turn tracing on if the ``OTEL_*`` variables ask for it; once per process.

    A tracer provider the application set up itself is used as it is; otherwise one is made
    that exports with ``OTEL_TRACES_EXPORTER`` (``otlp``, over HTTP, by default).
    """
    global _configured
    if _configured:
        return
    _configured = True
    exporters = _exporters_wanted(os.environ)
    if not exporters:
        return
    try:
        from opentelemetry import trace
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor

        provider = trace.get_tracer_provider()
        if isinstance(provider, trace.ProxyTracerProvider):  # nobody set one up
            service = os.environ.get("OTEL_SERVICE_NAME", "cached-tei")
            sdk = TracerProvider(resource=Resource.create({"service.name": service}))
            for exporter in exporters:
                sdk.add_span_processor(BatchSpanProcessor(_exporter(exporter)))
            trace.set_tracer_provider(sdk)
            provider = trace.get_tracer_provider()
    except ImportError:
        log.warning(
            "OTEL_* variables ask for traces, but the otel extra is not installed; "
            "pip install 'cached-tei[otel]', or unset them"
        )
        return
    use(provider)
    log.info("tracing on: exporting spans with %s", ", ".join(exporters))


def _exporters_wanted(env: Mapping[str, str]) -> list[str]:
    if env.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return []
    named = [name.strip().lower() for name in env.get("OTEL_TRACES_EXPORTER", "").split(",")]
    exporters = [name for name in named if name and name != "none"]
    if exporters or "none" in named:
        return exporters
    endpoints = ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
    return ["otlp"] if any(env.get(name) for name in endpoints) else []


def _exporter(name: str) -> SpanExporter:
    if name == "console":
        from opentelemetry.sdk.trace.export import ConsoleSpanExporter

        return ConsoleSpanExporter()
    if name != "otlp":
        raise ValueError(f"OTEL_TRACES_EXPORTER={name!r} is not supported; use otlp or console")
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    return OTLPSpanExporter()
