"""The TEI client: reads /info, splits texts into batches TEI accepts, sends them concurrently,
retries transient failures, and turns TEI's error bodies into errors that say what to do."""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import httpx
import numpy as np
import orjson
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception,
    stop_after_attempt,
    stop_before_delay,
    wait_random_exponential,
)

from . import tracing
from .batcher import BatchCallback, BatchLimits, RequestBatcher
from .environment import environment_variable
from .errors import InputError, TEIError
from .pacing import Pacer
from .settings import CachedTEISettings
from .stats import Stats
from .values import URL_SETTINGS, ModelKind, SparseVector

if TYPE_CHECKING:
    from .keys import EmbedOptions

log = logging.getLogger(__name__)

# Seconds one /info probe may take when a remembered /info can stand in.
_PROBE_TIMEOUT = 5.0
# Bytes of a TEI body besides the texts: {"inputs":[...], and the option fields.
_BODY_OVERHEAD = 256
# What a cached-tei proxy (cached-tei serve) answers with: the texts its cache served.
UPSTREAM_HITS_HEADER = "x-cache-hits"


@dataclass(frozen=True)
class TEIInfo:
    """The parts of TEI's ``GET /info`` that cached-tei relies on; ``raw`` holds all of it."""

    model_id: str
    model_sha: str | None
    max_client_batch_size: int
    max_input_length: int | None
    auto_truncate: bool
    version: str | None
    raw: dict[str, Any] = field(repr=False, compare=False)
    # "embedding", "splade", "reranker" or "classifier", from /info's model_type.
    model_type: str = "embedding"

    @classmethod
    def from_json(cls, body: dict[str, Any]) -> TEIInfo:
        return cls(
            model_id=str(body["model_id"]),
            model_sha=body.get("model_sha"),
            max_client_batch_size=int(body.get("max_client_batch_size") or 32),
            max_input_length=body.get("max_input_length"),
            # TEI before 1.9 had no auto-truncate field and did not truncate by default.
            auto_truncate=bool(body.get("auto_truncate", False)),
            version=body.get("version"),
            raw=body,
            model_type=_model_type(body.get("model_type")),
        )


def _model_type(described: Any) -> str:
    """The kind of model /info's ``model_type`` describes (an embedder when it says none)."""
    if not isinstance(described, dict) or not described:
        return "embedding"
    kind = str(next(iter(described)))
    if kind == "embedding" and (described[kind] or {}).get("pooling") == "splade":
        return "splade"
    return kind


# The /info model types each kind's URL accepts, and the route it posts to.
_SERVES: dict[ModelKind, tuple[frozenset[str], str]] = {
    "embedding": (frozenset({"embedding", "splade"}), "embed"),
    "sparse": (frozenset({"splade"}), "embed_sparse"),
    "rerank": (frozenset({"reranker"}), "rerank"),
}
_KIND_NAMES = {
    "embedding": "a dense embedding model",
    "splade": "a sparse (SPLADE) embedding model",
    "reranker": "a reranker",
    "classifier": "a classifier",
}


def _is_transient(exc: BaseException) -> bool:
    return isinstance(exc, TEIError) and exc.transient


_HINTS: list[tuple[Callable[[TEIError], bool], str]] = [
    (
        lambda e: "tokens" in e.message and "less than" in e.message,
        "Enable truncation: pass truncate=True (CACHED_TEI_TRUNCATE=true), "
        "or start TEI with --auto-truncate.",
    ),
    (
        lambda e: "batch size" in e.message,
        "A TEI behind the balancer accepts smaller batches than /info reported; "
        "set CACHED_TEI_BATCH_SIZE to the smallest max_client_batch_size.",
    ),
    (
        lambda e: e.status == 401,
        "Set CACHED_TEI_API_KEY (api_key=...) to the key TEI was started with.",
    ),
    (
        lambda e: e.status == 413,
        "Lower CACHED_TEI_MAX_PAYLOAD_BYTES, or raise TEI's --payload-limit "
        "and nginx's client_max_body_size.",
    ),
    (
        lambda e: e.error_type == "Overloaded" or e.status == 429,
        "TEI stayed overloaded: add replicas, raise its --max-concurrent-requests, "
        "or lower CACHED_TEI_MAX_CONCURRENCY.",
    ),
    (
        lambda e: e.status is None,
        "Check that TEI (or nginx) is running and reachable at CACHED_TEI_URL; "
        "TEI refuses connections while it downloads and warms up the model.",
    ),
    (
        lambda e: e.error_type == "Backend",
        "TEI's model backend failed (often out of GPU memory): lower --max-batch-tokens "
        "or CACHED_TEI_BATCH_SIZE.",
    ),
]
_STATUS_TYPES = {
    401: "Unauthorized",
    413: "PayloadTooLarge",
    415: "UnsupportedMediaType",
    429: "Overloaded",
    502: "BadGateway",
    503: "Unhealthy",
    504: "GatewayTimeout",
}
_HTML_TITLE = re.compile(r"<title>(.*?)</title>", re.IGNORECASE | re.DOTALL)


def _upstream_hits(response: httpx.Response) -> int:
    """The texts a cached-tei proxy at the TEI URL served from its cache (0 from TEI)."""
    header = response.headers.get(UPSTREAM_HITS_HEADER, "")
    return int(header) if header.isdigit() else 0


def error_from_response(response: httpx.Response, url: str) -> TEIError:
    """Build the error for a non-2xx answer, keeping TEI's own message and ``error_type``."""
    status = response.status_code
    try:
        body = response.json()
        message, error_type = str(body["error"]), str(body["error_type"])
    except (ValueError, KeyError, TypeError):
        text = response.text.strip()
        title = _HTML_TITLE.search(text)
        message = (title.group(1).strip() if title else text[:500]) or response.reason_phrase
        error_type = _STATUS_TYPES.get(status, f"HTTP{status}")
    return _with_hint(TEIError(message, status=status, error_type=error_type, url=url))


def _with_hint(error: TEIError) -> TEIError:
    for applies, hint in _HINTS:
        if applies(error):
            return TEIError(
                error.message,
                status=error.status,
                error_type=error.error_type,
                url=error.url,
                hint=hint,
            )
    return error


@dataclass(frozen=True)
class _Connection:
    """A TEIClient's HTTP machinery, made on first use, on the event loop that uses it."""

    http: httpx.AsyncClient
    transport: httpx.AsyncHTTPTransport
    slots: asyncio.Semaphore  # bounds the TEI requests in flight
    embed_url: httpx.URL
    embed_headers: dict[str, str]
    embed_extensions: dict[str, Any]

    @classmethod
    def open(cls, settings: CachedTEISettings, url: str, route: str) -> _Connection:
        headers = {"Content-Type": "application/json"}
        if settings.api_key is not None:
            headers["Authorization"] = f"Bearer {settings.api_key.get_secret_value()}"
        pool_size = settings.max_concurrency + 4
        transport = httpx.AsyncHTTPTransport(
            # httpx loads a CA bundle for every client (50-80 ms) unless told not to;
            # plain http never needs one.
            verify=url.startswith("https://"),
            limits=httpx.Limits(max_connections=pool_size, max_keepalive_connections=pool_size),
        )
        timeout = httpx.Timeout(settings.timeout, connect=min(10.0, settings.timeout))
        http = httpx.AsyncClient(
            base_url=url, headers=headers, timeout=timeout, transport=transport
        )
        return cls(
            http=http,
            transport=transport,
            slots=asyncio.Semaphore(settings.max_concurrency),
            embed_url=http.base_url.join(route),
            embed_headers=headers,
            embed_extensions={"timeout": timeout.as_dict()},
        )

    async def post_embed(self, body: bytes) -> httpx.Response:
        """``POST /embed``, the hot path, straight to the transport with its URL, headers and
        timeouts built once: this skips the client's URL merge, default headers, cookie jar
        and redirect handling, about a third of the CPU of each request."""
        request = httpx.Request(
            "POST",
            self.embed_url,
            headers=tracing.inject(self.embed_headers),
            content=body,
            extensions=self.embed_extensions,
        )
        response = await self.transport.handle_async_request(request)
        await response.aread()
        return response


class TEIClient:
    """Talks to one TEI URL (a server, or nginx in front of several) over a keep-alive pool.

    Bound to the event loop it is first used on. Concurrency is bounded across all calls,
    and concurrent calls share requests (see :mod:`cached_tei.batcher`).
    """

    def __init__(
        self, settings: CachedTEISettings, stats: Stats, kind: ModelKind = "embedding"
    ) -> None:
        self._settings = settings
        self._stats = stats
        self._kind = kind
        self._url = url_of(settings, kind)
        self._connection: _Connection | None = None
        self._info: TEIInfo | None = None
        self._info_read_at = 0.0
        self._info_readable = True  # whether the last re-read of /info succeeded
        self._info_lock: asyncio.Lock | None = None
        self._batcher: RequestBatcher | None = None
        self._pacer: Pacer | None = None

    @property
    def url(self) -> str:
        return self._url

    def _connected(self) -> _Connection:
        if self._connection is None:
            self._connection = _Connection.open(self._settings, self._url, _SERVES[self._kind][1])
        return self._connection

    async def aclose(self) -> None:
        if self._batcher is not None:
            await self._batcher.aclose()
            self._batcher = None
        if self._connection is not None:
            await self._connection.http.aclose()
            self._connection = None

    @property
    def known_info(self) -> TEIInfo | None:
        """``/info`` if it has been read and is not due to be read again, else None."""
        return None if self._info_due() else self._info

    def _info_due(self) -> bool:
        return time.monotonic() - self._info_read_at >= self._settings.info_refresh

    async def info(self, *, retry: bool = True, refresh: bool = False) -> TEIInfo:
        """TEI's ``/info``, read again every ``info_refresh`` seconds (or now, with
        ``refresh``): the model behind the URL can change.

        ``retry=False`` makes the first read one short attempt (a probe) instead of
        retrying transient failures under the deadline. A re-read is always a probe: if it
        fails, the ``/info`` read before stands until the next one.
        """
        asked = time.monotonic()
        if self._info is not None and not refresh and not self._info_due():
            return self._info
        if self._info_lock is None:
            self._info_lock = asyncio.Lock()
        async with self._info_lock:
            if self._info is None:
                self._info = await self._read_info(retry)
                self._info_read_at = time.monotonic()
                log.info(
                    "TEI at %s serves %s (revision %s, max_client_batch_size %d)",
                    self._url,
                    self._info.model_id,
                    self._info.model_sha,
                    self._info.max_client_batch_size,
                )
            elif self._info_due() or (refresh and self._info_read_at < asked):
                await self._reread_info()
        return self._info

    async def recheck_info(self) -> bool:
        """Read ``/info`` again now (unless it was read since this was asked); False if it
        could not be read (the one read before still stands) or was never read."""
        if self._info is None:
            return False
        await self.info(refresh=True)
        return self._info_readable

    async def _read_info(self, retry: bool) -> TEIInfo:
        if retry:
            response = await self._with_retries(lambda: self._send("GET", "/info"))
        else:
            probe = min(self._settings.timeout, _PROBE_TIMEOUT)
            response = await self._send("GET", "/info", timeout=probe)
        info = TEIInfo.from_json(orjson.loads(response.content))
        self._check_kind(info)
        return info

    def _check_kind(self, info: TEIInfo) -> None:
        """Refuse a URL whose model is not of this client's kind (a dense URL for reranking)."""
        accepted, route = _SERVES[self._kind]
        if info.model_type in accepted:
            return
        variable = environment_name(URL_SETTINGS[self._kind])
        served = _KIND_NAMES.get(info.model_type, info.model_type)
        wanted = " or ".join(sorted({_KIND_NAMES[t] for t in accepted}))
        raise TEIError(
            f"{variable} ({self._url}) serves {info.model_id}, {served}, which has no /{route}",
            status=424,
            error_type="ModelType",
            url=self._url,
            hint=f"Point {variable} at a TEI serving {wanted}.",
        )

    async def _reread_info(self) -> None:
        """Read ``/info`` again; a new model is logged and its batch limit applied."""
        before = self._info
        assert before is not None
        try:
            info = await self._read_info(retry=False)
        except (TEIError, ValueError, KeyError, TypeError) as exc:
            log.warning("re-reading /info from %s failed (%s); keeping %s", self._url, exc, before)
            self._info_readable = False
            return
        finally:
            self._info_read_at = time.monotonic()
        self._info_readable = True
        if info != before:
            log.warning(
                "TEI at %s now serves %s (revision %s), before %s (revision %s): its vectors "
                "go to a cache namespace of their own",
                self._url,
                info.model_id,
                info.model_sha,
                before.model_id,
                before.model_sha,
            )
            if self._batcher is not None:
                self._batcher.limits = self._limits(info)
        self._info = info

    async def request(
        self,
        method: str,
        path: str,
        *,
        content: bytes | None = None,
        headers: dict[str, str] | None = None,
    ) -> httpx.Response:
        """Send one request as is (for routes forwarded untouched); errors are not raised."""
        return await self._connected().http.request(method, path, content=content, headers=headers)

    async def embed(
        self, texts: Sequence[str], options: EmbedOptions, on_batch: BatchCallback
    ) -> None:
        """Embed texts, awaiting ``on_batch(start, vectors)`` as each batch of them arrives
        (``vectors``: the float32 rows of ``texts[start:start + len(vectors)]``).

        Concurrent calls with the same request fields share TEI requests while every slot is
        busy (see :mod:`cached_tei.batcher`). If any batch fails, the others still finish
        (and reach ``on_batch``), then the first error is raised: never a partial result.
        """
        sizes = self._body_sizes(texts)
        batcher = await self._request_batcher()
        await batcher.embed(texts, sizes, options.request_fields(), on_batch)

    async def _request_batcher(self) -> RequestBatcher:
        if self._batcher is None:
            info = await self.info()
            if self._batcher is None:  # unless a concurrent first call made it meanwhile
                self._batcher = RequestBatcher(self.embed_batch, self._limits(info), self._paced())
        return self._batcher

    def _limits(self, info: TEIInfo) -> BatchLimits:
        settings = self._settings
        max_texts = min(info.max_client_batch_size, settings.batch_size or 1 << 30)
        return BatchLimits(max_texts, settings.max_payload_bytes - _BODY_OVERHEAD)

    def _paced(self) -> Pacer | None:
        """The pacer of shared requests; None when ``batch_window=0`` turns sharing off."""
        settings = self._settings
        if settings.batch_window == 0:
            return None
        if "batch_window" in settings.model_fields_set:
            log.warning(
                "batch_window is deprecated and ignored: misses no longer wait a fixed window, "
                "they share a TEI request only while every slot is busy. Remove it "
                "(CACHED_TEI_BATCH_WINDOW), or set it to 0 to turn sharing off."
            )
        self._pacer = Pacer(settings.tei_replicas, settings.max_concurrency)
        return self._pacer

    def _body_sizes(self, texts: Sequence[str]) -> list[int]:
        """Bytes each text takes in a request body; refuses a text no request can hold."""
        max_bytes = self._settings.max_payload_bytes - _BODY_OVERHEAD
        sizes = [len(orjson.dumps(text)) + 1 for text in texts]
        for text, size in zip(texts, sizes, strict=True):
            if size > max_bytes:
                raise InputError(
                    f"a text of {size} bytes (starting {text[:40]!r}) does not fit in one "
                    f"TEI request of at most {self._settings.max_payload_bytes} bytes; split it, "
                    "or raise TEI's --payload-limit and CACHED_TEI_MAX_PAYLOAD_BYTES"
                )
        return sizes

    async def embed_batch(self, texts: list[str], fields: dict[str, Any]) -> np.ndarray:
        """One ``POST`` of this kind's route within TEI's limits, retried while TEI is
        transiently unable; one row per text (a float32 vector, a SparseVector, or a score)."""
        key = "texts" if self._kind == "rerank" else "inputs"
        body = orjson.dumps({key: texts, **fields})
        connection = self._connected()

        async def attempt() -> httpx.Response:
            async with connection.slots:
                started = time.perf_counter()
                route = _SERVES[self._kind][1]
                with tracing.span(f"TEI POST /{route}", client=True, texts=len(texts)) as current:
                    try:
                        return await self._checked(connection.post_embed(body), current)
                    finally:
                        self._stats.observe_tei_request(time.perf_counter() - started)

        started = time.perf_counter()
        response = await self._with_retries(attempt)
        if self._pacer is not None:
            self._pacer.observe(response.headers, time.perf_counter() - started)
        vectors = _PARSERS[self._kind](orjson.loads(response.content), len(texts))
        if vectors.ndim == 0 or vectors.shape[0] != len(texts):
            raise TEIError(
                f"expected {len(texts)} vectors, got an array of shape {vectors.shape}",
                status=response.status_code,
                error_type="BadResponse",
                url=self._url,
                hint=f"{environment_name(URL_SETTINGS[self._kind])} must point at a TEI "
                f"serving {_KIND_NAMES[next(iter(_SERVES[self._kind][0]))]}.",
            )
        self._stats.tei_texts += len(texts)
        self._stats.upstream_hits += _upstream_hits(response)
        return vectors

    async def _send(
        self, method: str, path: str, content: bytes | None = None, timeout: float | None = None
    ) -> httpx.Response:
        with tracing.span(f"TEI {method} {path}", client=True) as current:
            return await self._checked(
                self._connected().http.request(
                    method,
                    path,
                    content=content,
                    headers=tracing.inject({}),
                    timeout=httpx.USE_CLIENT_DEFAULT if timeout is None else timeout,
                ),
                current,
            )

    async def _checked(
        self, sending: Awaitable[httpx.Response], span: tracing.Span = tracing.NULL_SPAN
    ) -> httpx.Response:
        """The response to a request being sent (its status noted on ``span``); TEI's error
        if it failed."""
        try:
            response = await sending
        except httpx.TransportError as exc:
            detail = str(exc) or type(exc).__name__
            raise _with_hint(
                TEIError(detail, status=None, error_type="Unavailable", url=self._url)
            ) from exc
        span.set_attribute("http.response.status_code", response.status_code)
        if response.is_error:
            raise error_from_response(response, self._url)
        return response

    async def _with_retries(
        self, attempt: Callable[[], Awaitable[httpx.Response]]
    ) -> httpx.Response:
        settings = self._settings
        retrying = AsyncRetrying(
            stop=stop_after_attempt(settings.max_retries + 1)
            | stop_before_delay(settings.retry_deadline),
            wait=wait_random_exponential(multiplier=0.05, max=4.0),
            retry=retry_if_exception(_is_transient),
            before_sleep=self._count_retry,
            reraise=True,
        )
        started = time.monotonic()
        try:
            async for trial in retrying:
                with trial:
                    return await attempt()
        except TEIError as exc:
            tries = retrying.statistics.get("attempt_number", 1)
            if exc.transient and tries > 1:
                raise TEIError(
                    exc.message,
                    status=exc.status,
                    error_type=exc.error_type,
                    url=exc.url,
                    hint=f"Gave up after {tries} attempts in {time.monotonic() - started:.1f} s. "
                    + exc.hint,
                ) from exc
            raise
        raise AssertionError("unreachable: tenacity either returns or raises")

    def _count_retry(self, state: RetryCallState) -> None:
        self._stats.retries += 1
        error = state.outcome.exception() if state.outcome else None
        # Debug only: the final error says how many attempts were made.
        log.debug(
            "TEI at %s: attempt %d failed (%s); retrying", self._url, state.attempt_number, error
        )


def environment_name(setting: str) -> str:
    """The variable that sets a setting (``rerank_url``: ``CACHED_TEI_RERANK_URL``)."""
    return environment_variable(CachedTEISettings, setting)


def url_of(settings: CachedTEISettings, kind: ModelKind) -> str:
    """The TEI URL for a kind of model; an unset one is an error naming its variable."""
    url: str | None = getattr(settings, URL_SETTINGS[kind])
    if url is None:
        variable = environment_name(URL_SETTINGS[kind])
        raise InputError(
            f"{variable} is not set: set it (or pass {URL_SETTINGS[kind]}=...) to the URL of "
            f"the TEI serving {_KIND_NAMES['splade' if kind == 'sparse' else 'reranker']}"
        )
    return url


def _dense(body: Any, count: int) -> np.ndarray:
    vectors = np.asarray(body, dtype=np.float32)
    return vectors if vectors.ndim == 2 else np.zeros(())


def _sparse(body: Any, count: int) -> np.ndarray:
    """TEI's ``[[{"index", "value"}...]...]`` as an object array of SparseVectors whose values
    are float32 (exactly what TEI computed)."""
    rows = np.empty(len(body), dtype=object)
    for position, entries in enumerate(body):
        values = np.array([entry["value"] for entry in entries], dtype=np.float32)
        rows[position] = SparseVector([int(e["index"]) for e in entries], values.tolist())
    return rows


def _scores(body: Any, count: int) -> np.ndarray:
    """TEI's ranks (sorted by score) as one float32 score per text, in input order."""
    scores = np.full((count, 1), np.nan, dtype=np.float32)
    for rank in body:
        scores[int(rank["index"]), 0] = rank["score"]
    return np.zeros(()) if len(body) != count or np.isnan(scores).any() else scores


_PARSERS: dict[ModelKind, Callable[[Any, int], np.ndarray]] = {
    "embedding": _dense,
    "sparse": _sparse,
    "rerank": _scores,
}
