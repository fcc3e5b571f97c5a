"""aiohttp application that speaks TEI 1.9.3's HTTP contract, and the in-process server."""

from __future__ import annotations

import asyncio
import base64
import collections
import threading
import time
import zlib
from dataclasses import asdict
from typing import Any

import numpy as np
import orjson
from aiohttp import web
from prometheus_client import CollectorRegistry, Histogram, generate_latest

from ._core import (
    MODEL_TYPES,
    TEI_VERSION,
    EmulatorConfig,
    Fault,
    RecordedRequest,
    TEIError,
    check_dimensions,
    finish_vector,
    normalize_direction,
    pair_text,
    prepare_text,
    raw_vector,
    resolve_prompt,
    score_of,
    sparse_of,
)

EMBED_ROUTES = ("/embed", "/", "/v1/embeddings")
AUTH_EXEMPT = ("/health", "/metrics", "/docs")
_JSON = "application/json"
_NP = orjson.OPT_SERIALIZE_NUMPY

_REASONS = {
    400: "Bad Request",
    404: "Not Found",
    413: "Request Entity Too Large",
    429: "Too Many Requests",
    500: "Internal Server Error",
    502: "Bad Gateway",
    503: "Service Temporarily Unavailable",
    504: "Gateway Time-out",
}
# TEI's buckets for every *_duration histogram (router/src/prometheus.rs): 1e-5 s x 1.5^k.
_DURATION_BUCKETS = tuple(1e-5 * 1.5**k for k in range(1, 36))
_FAULT_BODIES = {
    429: ("Overloaded", "Model is overloaded"),
    503: ("Unhealthy", "unhealthy"),
    424: ("Backend", "Backend error: Inference failed (injected fault)"),
    422: ("Validation", "Input validation error: injected fault"),
    400: ("Empty", "Input validation error: `inputs` cannot be empty"),
}


def nginx_html(status: int) -> str:
    reason = _REASONS.get(status, "Error")
    return (
        f"<html>\r\n<head><title>{status} {reason}</title></head>\r\n<body>\r\n"
        f"<center><h1>{status} {reason}</h1></center>\r\n<hr><center>nginx</center>\r\n"
        "</body>\r\n</html>\r\n"
    )


class _PlainError(Exception):
    """An error that is not TEI-shaped (axum extractor rejections): plain text body."""

    def __init__(self, status: int, text: str) -> None:
        super().__init__(text)
        self.status = status
        self.text = text


class _Entry:
    __slots__ = ("texts", "tokens", "normalize", "dimensions", "future", "enqueued", "embeds")

    def __init__(self, texts, tokens, normalize, dimensions, future, embeds=True):
        self.texts = texts
        self.tokens = tokens
        self.normalize = normalize
        self.dimensions = dimensions
        self.future = future
        self.enqueued = time.perf_counter()
        self.embeds = embeds  # False: a sparse or rerank request, counted on its own


def _deser_error(detail: str) -> _PlainError:
    return _PlainError(422, f"Failed to deserialize the JSON body into the target type: {detail}")


def _opt_bool(body: dict, key: str, default: Any) -> Any:
    v = body.get(key, default)
    if v is None:
        return default if default is not None else None
    if not isinstance(v, bool):
        raise _deser_error(f"{key}: invalid type: expected a boolean")
    return v


def _opt_str(body: dict, key: str) -> str | None:
    v = body.get(key)
    if v is not None and not isinstance(v, str):
        raise _deser_error(f"{key}: invalid type: expected a string")
    return v


def _opt_uint(body: dict, key: str) -> int | None:
    v = body.get(key)
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, int) or v < 0:
        raise _deser_error(f"{key}: invalid value: expected usize")
    return v


def _inputs(body: dict, key: str) -> tuple[list[str], bool]:
    """(texts, is_batch) from `inputs`/`input`: a string or a list of strings."""
    if key not in body:
        raise _deser_error(f"missing field `{key}`")
    v = body[key]
    if isinstance(v, str):
        return [v], False
    if isinstance(v, list) and all(isinstance(x, str) for x in v):
        return v, True
    raise _deser_error(f"{key}: data did not match any variant of untagged enum Input")


class EmulatorState:
    """Everything one emulated TEI holds; lives on the server's event loop."""

    def __init__(self, config: EmulatorConfig) -> None:
        self.config = config
        self.lock = threading.Lock()
        self.log: list[RecordedRequest] = []
        self.faults: collections.deque[list] = collections.deque()  # [Fault, remaining]
        self.embed_texts_computed = 0
        self.sparse_texts_computed = 0
        self.rerank_pairs_computed = 0
        self.steps = 0
        self.step_sizes: list[int] = []
        self.permits_in_use = 0
        self.max_queue_seen = 0
        self.healthy = True
        self.metrics: collections.Counter[str] = collections.Counter()
        self._new_histograms()
        self._pending: collections.deque[_Entry] = collections.deque()
        self._wake: asyncio.Event | None = None
        self._worker: asyncio.Task | None = None

    # ---- faults and log (called from any thread) ----
    def inject(self, *faults: Fault) -> None:
        with self.lock:
            for f in faults:
                self.faults.append([f, f.count])

    def clear_faults(self) -> None:
        with self.lock:
            self.faults.clear()

    def reset_log(self) -> None:
        with self.lock:
            self.log.clear()
            self.embed_texts_computed = 0
            self.sparse_texts_computed = 0
            self.rerank_pairs_computed = 0
            self.steps = 0
            self.step_sizes = []
            self.metrics.clear()
            self._new_histograms()

    def _new_histograms(self) -> None:
        """TEI's request and queue time histograms, empty."""
        self.registry = CollectorRegistry()
        self.request_duration = Histogram(
            "te_request_duration",
            "Request duration",
            buckets=_DURATION_BUCKETS,
            registry=self.registry,
        )
        self.queue_duration = Histogram(
            "te_request_queue_duration",
            "Request queue duration",
            buckets=_DURATION_BUCKETS,
            registry=self.registry,
        )

    def take_fault(self) -> Fault | None:
        with self.lock:
            if not self.faults:
                return None
            slot = self.faults[0]
            slot[1] -= 1
            if slot[1] <= 0:
                self.faults.popleft()
            return slot[0]

    def record(self, rec: RecordedRequest) -> None:
        with self.lock:
            self.log.append(rec)

    def stats(self) -> dict[str, Any]:
        with self.lock:
            return {
                "steps": self.steps,
                "step_sizes": list(self.step_sizes),
                "embed_texts_computed": self.embed_texts_computed,
                "sparse_texts_computed": self.sparse_texts_computed,
                "rerank_pairs_computed": self.rerank_pairs_computed,
                "permits_in_use": self.permits_in_use,
                "pending_faults": sum(r for _, r in self.faults),
                "healthy": self.healthy,
            }

    # ---- the batching worker (TEI's queue + backend, one GPU) ----
    async def start_worker(self) -> None:
        self._wake = asyncio.Event()
        self._worker = asyncio.create_task(self._run())

    async def stop_worker(self) -> None:
        if self._worker is not None:
            self._worker.cancel()
            try:
                await self._worker
            except (asyncio.CancelledError, Exception):
                pass
            self._worker = None
        while self._pending:
            e = self._pending.popleft()
            if not e.future.done():
                e.future.cancel()

    def submit(self, entry: _Entry) -> None:
        self._pending.append(entry)
        if len(self._pending) > self.max_queue_seen:
            self.max_queue_seen = len(self._pending)
        self._wake.set()

    async def _run(self) -> None:
        cfg = self.config
        pending = self._pending
        while True:
            await self._wake.wait()
            self._wake.clear()
            await asyncio.sleep(0)  # let requests parsed in the same loop tick join this step
            while pending:
                batch: list[_Entry] = []
                budget = 0
                while pending:
                    e = pending[0]
                    if batch and budget + e.tokens > cfg.max_batch_tokens:
                        break
                    pending.popleft()
                    if e.future.done():  # client went away
                        continue
                    batch.append(e)
                    budget += e.tokens
                if not batch:
                    continue
                t0 = time.perf_counter()
                n_texts = sum(len(e.texts) for e in batch)
                results = []
                for e in batch:
                    vecs = [
                        finish_vector(
                            raw_vector(cfg.model_id, cfg.model_sha, cfg.dim, t),
                            e.normalize,
                            e.dimensions,
                        )
                        for t in e.texts
                    ]
                    results.append(np.stack(vecs))
                cost = (cfg.step_ms + cfg.per_text_ms * n_texts) / 1000.0
                remaining = cost - (time.perf_counter() - t0)
                if remaining > 0:
                    await asyncio.sleep(remaining)
                inference = time.perf_counter() - t0
                with self.lock:
                    self.steps += 1
                    self.step_sizes.append(n_texts)
                    self.embed_texts_computed += sum(len(e.texts) for e in batch if e.embeds)
                for e, r in zip(batch, results, strict=True):
                    if not e.future.done():
                        e.future.set_result((r, t0, inference))


class _App:
    def __init__(self, state: EmulatorState) -> None:
        self.state = state
        self.cfg = state.config

    # ---- helpers ----
    def _tei_error(self, exc: TEIError, openai: bool) -> web.Response:
        self.state.metrics[f'te_request_failure{{err="{exc.error_type.lower()}"}}'] += 1
        if openai:
            body = {"message": exc.message, "code": exc.status, "type": exc.error_type}
        else:
            body = {"error": exc.message, "error_type": exc.error_type}
        return web.Response(status=exc.status, body=orjson.dumps(body), content_type=_JSON)

    async def _read_json(self, request: web.Request) -> Any:
        ctype = request.headers.get("Content-Type", "")
        mime = ctype.split(";", 1)[0].strip().lower()
        if not (mime == _JSON or (mime.startswith("application/") and mime.endswith("+json"))):
            raise _PlainError(415, "Expected request with `Content-Type: application/json`")
        length = request.content_length
        if length is not None and length > self.cfg.payload_limit:
            raise _PlainError(413, "Failed to buffer the request body: length limit exceeded")
        try:
            raw = await request.read()
        except web.HTTPRequestEntityTooLarge:
            raise _PlainError(
                413, "Failed to buffer the request body: length limit exceeded"
            ) from None
        try:
            return orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            raise _PlainError(400, f"Failed to parse the request body as JSON: {exc}") from None

    def _acquire(self, n: int) -> None:
        st = self.state
        if st.permits_in_use + n > self.cfg.max_concurrent_requests:
            raise TEIError("Overloaded", "Model is overloaded")
        st.permits_in_use += n

    # ---- embed routes ----
    async def embed(self, request: web.Request) -> web.StreamResponse:
        openai = request.path == "/v1/embeddings"
        st = self.state
        started = time.perf_counter()
        rec = RecordedRequest(
            route=request.path,
            texts=[],
            status=0,
            time=time.time(),
            traceparent=request.headers.get("traceparent"),
        )
        body: Any = None
        parse_error: Exception | None = None
        try:
            body = await self._read_json(request)
        except _PlainError as exc:
            parse_error = exc
        if isinstance(body, dict):
            raw_in = body.get("input" if openai else "inputs")
            if isinstance(raw_in, str):
                rec.texts = [raw_in]
            elif isinstance(raw_in, list):
                rec.texts = [x for x in raw_in if isinstance(x, str)]
        elif parse_error is None:
            parse_error = _deser_error("invalid type: expected struct")

        fault = st.take_fault()
        try:
            if fault is not None:
                rec.fault = fault.kind
                if fault.kind == "drop":
                    rec.status = 0
                    transport = request.transport
                    if transport is not None:
                        transport.abort()
                    raise asyncio.CancelledError()
                if fault.kind == "status":
                    return self._fault_response(fault.status, openai, rec)
                await asyncio.sleep(fault.seconds)
            if parse_error is not None:
                raise parse_error
            self._require("embedding", "splade")
            if openai:
                resp = await self._openai(body, rec, started)
            else:
                resp = await self._native(body, rec, started)
            rec.status = resp.status
            return resp
        except _PlainError as exc:
            rec.status = exc.status
            return web.Response(status=exc.status, text=exc.text)
        except TEIError as exc:
            rec.status = exc.status
            rec.error_type = exc.error_type
            return self._tei_error(exc, openai)
        finally:
            rec.duration = time.perf_counter() - started
            st.record(rec)

    def _fault_response(self, status: int, openai: bool, rec: RecordedRequest) -> web.Response:
        rec.status = status
        if status in _FAULT_BODIES:
            etype, msg = _FAULT_BODIES[status]
            rec.error_type = etype
            return self._tei_error(TEIError(etype, msg, status), openai)
        return web.Response(status=status, text=nginx_html(status), content_type="text/html")

    async def _compute(
        self, texts: list[str], normalize: bool, truncate, direction, prompt_name, dimensions
    ):
        """Validate, take permits, queue; returns (matrix, tokens, chars, timings)."""
        cfg = self.cfg
        n = len(texts)
        self._acquire(n)
        try:
            t_tok = time.perf_counter()
            finals = []
            total_tokens = 0
            for t in texts:
                final, ntok = prepare_text(cfg, t, truncate, direction, prompt_name)
                finals.append(final)
                total_tokens += ntok
            check_dimensions(cfg, dimensions)
            tokenization = time.perf_counter() - t_tok
            fut = asyncio.get_running_loop().create_future()
            self.state.submit(_Entry(finals, max(total_tokens, n), normalize, dimensions, fut))
            matrix, step_start, inference = await fut
            queue = step_start - (t_tok + tokenization)
        finally:
            self.state.permits_in_use -= n
        return (
            matrix,
            total_tokens,
            sum(len(t) for t in texts),
            tokenization,
            max(queue, 0.0),
            inference,
        )

    def _headers(self, started, chars, tokens, tokenization, queue, inference) -> dict[str, str]:
        total = time.perf_counter() - started
        self.state.request_duration.observe(total)
        self.state.queue_duration.observe(queue)
        return {
            "x-compute-type": "emulator",
            "x-compute-time": str(int(total * 1000)),
            "x-compute-characters": str(chars),
            "x-compute-tokens": str(tokens),
            "x-total-time": str(int(total * 1000)),
            "x-tokenization-time": str(int(tokenization * 1000)),
            "x-queue-time": str(int(queue * 1000)),
            "x-inference-time": str(int(inference * 1000)),
        }

    async def _native(self, body: dict, rec: RecordedRequest, started: float) -> web.Response:
        texts, is_batch = _inputs(body, "inputs")
        normalize = _opt_bool(body, "normalize", True)
        truncate = _opt_bool(body, "truncate", None)
        try:
            direction = normalize_direction(body.get("truncation_direction") or "Right")
        except ValueError as exc:
            raise _deser_error(f"truncation_direction: {exc}") from None
        prompt_name = _opt_str(body, "prompt_name")
        dimensions = _opt_uint(body, "dimensions")
        rec.normalize, rec.truncate, rec.truncation_direction = normalize, truncate, direction
        rec.prompt_name, rec.dimensions = prompt_name, dimensions
        method = "batch" if is_batch else "single"
        self.state.metrics[f'te_request_count{{method="{method}"}}'] += 1
        if is_batch:
            self._batch_checks(texts)
        matrix, tokens, chars, tok_t, q_t, inf_t = await self._compute(
            texts, normalize, truncate, direction, prompt_name, dimensions
        )
        self.state.metrics[f'te_request_success{{method="{method}"}}'] += 1
        return web.Response(
            body=orjson.dumps(matrix, option=_NP),
            content_type=_JSON,
            headers=self._headers(started, chars, tokens, tok_t, q_t, inf_t),
        )

    async def _openai(self, body: dict, rec: RecordedRequest, started: float) -> web.Response:
        cfg = self.cfg
        texts, is_batch = _inputs(body, "input")
        fmt = body.get("encoding_format") or "float"
        if fmt not in ("float", "base64"):
            raise _deser_error(
                f"encoding_format: unknown variant `{fmt}`, expected `float` or `base64`"
            )
        dimensions = _opt_uint(body, "dimensions")
        _opt_str(body, "model")
        _opt_str(body, "user")
        rec.normalize, rec.truncate, rec.dimensions, rec.encoding_format = (
            True,
            None,
            dimensions,
            fmt,
        )
        method = "batch" if is_batch else "single"
        self.state.metrics[f'te_request_count{{method="{method}"}}'] += 1
        if is_batch:
            self._batch_checks(texts)
        matrix, tokens, chars, tok_t, q_t, inf_t = await self._compute(
            texts, True, None, "Right", None, dimensions
        )
        if fmt == "base64":
            data = [
                {
                    "object": "embedding",
                    "embedding": base64.b64encode(row.astype("<f4").tobytes()).decode(),
                    "index": i,
                }
                for i, row in enumerate(matrix)
            ]
        else:
            data = [
                {"object": "embedding", "embedding": row, "index": i}
                for i, row in enumerate(matrix)
            ]
        out = {
            "object": "list",
            "data": data,
            "model": cfg.model_id,
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
        }
        self.state.metrics[f'te_request_success{{method="{method}"}}'] += 1
        return web.Response(
            body=orjson.dumps(out, option=_NP),
            content_type=_JSON,
            headers=self._headers(started, chars, tokens, tok_t, q_t, inf_t),
        )

    # ---- other TEI routes ----
    async def info(self, request: web.Request) -> web.Response:
        c = self.cfg
        return web.Response(
            body=orjson.dumps(
                {
                    "model_id": c.model_id,
                    "model_sha": c.model_sha,
                    "model_dtype": "float16",
                    "served_model_name": c.model_id,
                    "model_type": MODEL_TYPES[c.model_type],
                    "max_concurrent_requests": c.max_concurrent_requests,
                    "max_input_length": c.max_input_length,
                    "max_batch_tokens": c.max_batch_tokens,
                    "max_batch_requests": None,
                    "max_client_batch_size": c.max_client_batch_size,
                    "auto_truncate": c.auto_truncate,
                    "tokenization_workers": 2,
                    "version": TEI_VERSION,
                    "sha": None,
                    "docker_label": None,
                }
            ),
            content_type=_JSON,
        )

    async def health(self, request: web.Request) -> web.Response:
        if self.state.healthy:
            return web.Response(status=200)
        return web.Response(
            status=503,
            body=orjson.dumps({"error": "unhealthy", "error_type": "Unhealthy"}),
            content_type=_JSON,
        )

    async def metrics(self, request: web.Request) -> web.Response:
        st = self.state
        lines = []
        with st.lock:
            counters = dict(st.metrics)
            steps, computed = st.steps, st.embed_texts_computed
        for name in ("te_request_count", "te_request_success", "te_request_failure"):
            lines.append(f"# TYPE {name} counter")
            for key, value in sorted(counters.items()):
                if key.startswith(name + "{"):
                    lines.append(f"{key} {value}")
        lines += [
            "# TYPE te_embed_count counter",
            f"te_embed_count {computed}",
            "# TYPE te_batch_next_size counter",
            f"te_batch_count {steps}",
            "# TYPE te_queue_size gauge",
            f"te_queue_size {len(st._pending)}",
            "# TYPE te_embed_duration summary",
            "te_embed_duration_count " + str(steps),
        ]
        text = "\n".join(lines) + "\n" + generate_latest(st.registry).decode()
        return web.Response(text=text, content_type="text/plain")

    async def _other(self, request: web.Request, fn) -> web.Response:
        try:
            body = await self._read_json(request)
            if not isinstance(body, dict):
                raise _deser_error("invalid type: expected struct")
            out = fn(body)
        except _PlainError as exc:
            return web.Response(status=exc.status, text=exc.text)
        except TEIError as exc:
            return self._tei_error(exc, False)
        return web.Response(body=orjson.dumps(out, option=_NP), content_type=_JSON)

    def _vec(self, text: str, truncate=None, direction="Right", prompt_name=None) -> np.ndarray:
        final, _ = prepare_text(self.cfg, text, truncate, direction, prompt_name)
        return finish_vector(
            raw_vector(self.cfg.model_id, self.cfg.model_sha, self.cfg.dim, final), True, None
        )

    def _batch_checks(self, texts: list[str]) -> None:
        if not texts:
            raise TEIError("Empty", "`inputs` cannot be empty")
        if len(texts) > self.cfg.max_client_batch_size:
            raise TEIError(
                "Validation",
                f"batch size {len(texts)} > maximum allowed batch size "
                f"{self.cfg.max_client_batch_size}",
            )

    def _tokenize(self, body: dict) -> Any:
        texts, _ = _inputs(body, "inputs")
        self._batch_checks(texts)
        prompt = _opt_str(body, "prompt_name")
        out = []
        for t in texts:
            if t == "":
                raise TEIError("Empty", "Input validation error: `inputs` cannot be empty")
            prefix = resolve_prompt(self.cfg, prompt)
            final = (prefix or "") + t
            toks, pos = [], 0
            for word in final.split():
                start = final.index(word, pos)
                pos = start + len(word)
                toks.append(
                    {
                        "id": zlib.crc32(word.encode()) % 30522,
                        "text": word,
                        "special": False,
                        "start": start,
                        "stop": pos,
                    }
                )
            out.append(toks)
        return out

    def _require(self, *model_types: str) -> None:
        """TEI's 424 when the served model lacks the route."""
        if self.cfg.model_type in model_types:
            return
        if "reranker" in model_types:
            message = "model is not a re-ranker model"
        elif "splade" in model_types and "embedding" not in model_types:
            message = "model is not an embedding model with SPLADE pooling"
        else:
            message = "Model is not an embedding model"
        raise TEIError("Backend", f"Backend error: {message}")

    def _rerank(self, body: dict, rec: RecordedRequest) -> tuple[Any, int]:
        query = body.get("query")
        texts = body.get("texts")
        if not isinstance(query, str):
            raise _deser_error("missing field `query`" if query is None else "query: invalid type")
        if not isinstance(texts, list) or not all(isinstance(t, str) for t in texts):
            raise _deser_error("missing field `texts`" if texts is None else "texts: invalid type")
        rec.texts = list(texts)
        if not texts:
            raise TEIError("Empty", "`texts` cannot be empty")
        self._require("reranker")
        raw = _opt_bool(body, "raw_scores", False)
        ret = _opt_bool(body, "return_text", False)
        truncate = _opt_bool(body, "truncate", None)
        direction = self._direction(body)
        rec.truncate, rec.truncation_direction = truncate, direction
        self._batch_checks(texts)
        ranks, finals = [], []
        for i, t in enumerate(texts):
            final, _ = prepare_text(self.cfg, pair_text(query, t), truncate, direction)
            finals.append(final)
            raw_vec = raw_vector(self.cfg.model_id, self.cfg.model_sha, self.cfg.dim, final)
            r: dict[str, Any] = {"index": i, "score": score_of(raw_vec, raw)}
            if ret:
                r["text"] = t
            ranks.append(r)
        # TEI: a stable ascending sort by score, then reversed.
        ranks.sort(key=lambda r: r["score"])
        ranks.reverse()
        with self.state.lock:
            self.state.rerank_pairs_computed += len(texts)
        return ranks, finals

    def _direction(self, body: dict) -> str:
        try:
            return normalize_direction(body.get("truncation_direction") or "Right")
        except ValueError as exc:
            raise _deser_error(f"truncation_direction: {exc}") from None

    def _embed_sparse(self, body: dict, rec: RecordedRequest) -> tuple[Any, int]:
        texts, is_batch = _inputs(body, "inputs")
        rec.texts = list(texts)
        if is_batch:
            self._batch_checks(texts)
        self._require("splade")
        prompt = _opt_str(body, "prompt_name")
        truncate = _opt_bool(body, "truncate", None)
        direction = self._direction(body)
        rec.truncate, rec.truncation_direction, rec.prompt_name = truncate, direction, prompt
        out, finals = [], []
        for t in texts:
            final, _ = prepare_text(self.cfg, t, truncate, direction, prompt)
            finals.append(final)
            indices, values = sparse_of(
                raw_vector(self.cfg.model_id, self.cfg.model_sha, self.cfg.dim, final)
            )
            out.append([{"index": i, "value": v} for i, v in zip(indices, values, strict=True)])
        with self.state.lock:
            self.state.sparse_texts_computed += len(texts)
        return out, finals

    async def _queued(self, texts: list[str], started: float) -> dict[str, str]:
        """Pay TEI's cost for texts: a place in the queue shared with /embed, so that
        concurrent requests of every route merge into one step, as on TEI; returns TEI's
        timing headers."""
        n = len(texts)
        self._acquire(n)
        try:
            fut = asyncio.get_running_loop().create_future()
            submitted = time.perf_counter()
            self.state.submit(_Entry(texts, max(n, 1), False, None, fut, embeds=False))
            _, step_start, inference = await fut
        finally:
            self.state.permits_in_use -= n
        chars = sum(len(t) for t in texts)
        queue = max(step_start - submitted, 0.0)
        return self._headers(started, chars, n, 0.0, queue, inference)

    async def _recorded(self, request: web.Request, fn) -> web.Response:
        """A sparse or rerank route: recorded, faults applied, TEI's cost per text paid."""
        st = self.state
        started = time.perf_counter()
        rec = RecordedRequest(route=request.path, texts=[], status=0, time=time.time())
        try:
            fault = st.take_fault()
            if fault is not None:
                rec.fault = fault.kind
                if fault.kind == "drop":
                    if request.transport is not None:
                        request.transport.abort()
                    raise asyncio.CancelledError()
                if fault.kind == "status":
                    return self._fault_response(fault.status, False, rec)
                await asyncio.sleep(fault.seconds)
            body = await self._read_json(request)
            if not isinstance(body, dict):
                raise _deser_error("invalid type: expected struct")
            out, texts = fn(body, rec)
            headers = await self._queued(texts, started)
            rec.status = 200
            return web.Response(
                body=orjson.dumps(out, option=_NP), content_type=_JSON, headers=headers
            )
        except _PlainError as exc:
            rec.status = exc.status
            return web.Response(status=exc.status, text=exc.text)
        except TEIError as exc:
            rec.status, rec.error_type = exc.status, exc.error_type
            return self._tei_error(exc, False)
        finally:
            rec.duration = time.perf_counter() - started
            st.record(rec)

    def _predict(self, body: dict) -> Any:
        inputs = body.get("inputs")

        def one(item) -> list[dict]:
            text = item if isinstance(item, str) else " ".join(item)
            v = self._vec(text)
            p = float(1.0 / (1.0 + np.exp(-float(v[0]) * 10)))
            return [{"score": p, "label": "LABEL_1"}, {"score": 1.0 - p, "label": "LABEL_0"}]

        if isinstance(inputs, str):
            return one(inputs)
        if (
            isinstance(inputs, list)
            and len(inputs) == 2
            and all(isinstance(x, str) for x in inputs)
        ):
            return one(inputs)
        if isinstance(inputs, list) and all(
            isinstance(x, list) and all(isinstance(s, str) for s in x) for x in inputs
        ):
            self._batch_checks(inputs)
            return [one(x) for x in inputs]
        raise _deser_error("inputs: data did not match any variant of untagged enum PredictInput")

    def _similarity(self, body: dict) -> Any:
        inp = body.get("inputs")
        if not isinstance(inp, dict) or not isinstance(inp.get("source_sentence"), str):
            raise _deser_error("inputs: invalid type")
        sents = inp.get("sentences")
        if not isinstance(sents, list) or not all(isinstance(s, str) for s in sents):
            raise _deser_error("inputs.sentences: invalid type")
        if not sents:
            raise TEIError("Empty", "`inputs.sentences` cannot be empty")
        self._batch_checks(sents + [""])
        src = self._vec(inp["source_sentence"])
        return [float(np.dot(src, self._vec(s))) for s in sents]

    async def tokenize(self, r):
        return await self._other(r, self._tokenize)

    async def rerank(self, r):
        return await self._recorded(r, self._rerank)

    async def embed_sparse(self, r):
        return await self._recorded(r, self._embed_sparse)

    async def predict(self, r):
        return await self._other(r, self._predict)

    async def similarity(self, r):
        return await self._other(r, self._similarity)

    # ---- private control routes ----
    async def ctl_log(self, request: web.Request) -> web.Response:
        with self.state.lock:
            log = [asdict(r) for r in self.state.log]
        return web.Response(body=orjson.dumps(log), content_type=_JSON)

    async def ctl_stats(self, request: web.Request) -> web.Response:
        return web.Response(body=orjson.dumps(self.state.stats()), content_type=_JSON)

    async def ctl_faults(self, request: web.Request) -> web.Response:
        if request.method == "DELETE":
            self.state.clear_faults()
        else:
            items = orjson.loads(await request.read())
            self.state.inject(*(Fault(**f) for f in items))
        return web.Response(body=orjson.dumps(self.state.stats()), content_type=_JSON)

    async def ctl_reset(self, request: web.Request) -> web.Response:
        self.state.reset_log()
        self.state.clear_faults()
        return web.Response(body=b"{}", content_type=_JSON)

    async def ctl_health(self, request: web.Request) -> web.Response:
        self.state.healthy = bool(orjson.loads(await request.read()).get("healthy", True))
        return web.Response(body=b"{}", content_type=_JSON)


def build_app(state: EmulatorState) -> web.Application:
    cfg = state.config
    h = _App(state)
    expected_auth = f"Bearer {cfg.api_key}" if cfg.api_key is not None else None

    @web.middleware
    async def auth(request: web.Request, handler):
        if expected_auth is not None:
            path = request.path
            if path not in AUTH_EXEMPT and not path.startswith("/_emulator/"):
                if request.headers.get("Authorization") != expected_auth:
                    return web.Response(status=401)
        return await handler(request)

    app = web.Application(middlewares=[auth], client_max_size=cfg.payload_limit)
    r = app.router
    r.add_post("/embed", h.embed)
    r.add_post("/", h.embed)
    r.add_post("/v1/embeddings", h.embed)
    r.add_get("/info", h.info)
    r.add_get("/health", h.health)
    r.add_get("/metrics", h.metrics)
    r.add_post("/tokenize", h.tokenize)
    r.add_post("/rerank", h.rerank)
    r.add_post("/embed_sparse", h.embed_sparse)
    r.add_post("/predict", h.predict)
    r.add_post("/similarity", h.similarity)
    r.add_get("/_emulator/log", h.ctl_log)
    r.add_get("/_emulator/stats", h.ctl_stats)
    r.add_post("/_emulator/faults", h.ctl_faults)
    r.add_delete("/_emulator/faults", h.ctl_faults)
    r.add_post("/_emulator/reset", h.ctl_reset)
    r.add_post("/_emulator/health", h.ctl_health)

    async def on_startup(app):
        await state.start_worker()

    async def on_cleanup(app):
        await state.stop_worker()

    app.on_startup.append(on_startup)
    app.on_cleanup.append(on_cleanup)
    return app


async def serve(state: EmulatorState, host: str, port: int) -> tuple[web.AppRunner, int]:
    """Start the app on host:port; returns the runner and the bound port."""
    runner = web.AppRunner(
        build_app(state), access_log=None, handle_signals=False, shutdown_timeout=0.5
    )
    await runner.setup()
    site = web.TCPSite(runner, host, port, reuse_address=True, backlog=1024)
    await site.start()
    bound = runner.addresses[0][1]
    return runner, bound


class EmulatorServer:
    """The emulator in-process: an aiohttp app on its own event loop in a daemon thread."""

    def __init__(self, config: EmulatorConfig | None = None, port: int = 0) -> None:
        self.config = config if config is not None else EmulatorConfig()
        self.port = port
        self.host = "127.0.0.1"
        self._state = EmulatorState(self.config)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self) -> EmulatorServer:
        if self._thread is not None:
            return self
        loop = asyncio.new_event_loop()
        ready = threading.Event()
        error: list[BaseException] = []

        def run() -> None:
            asyncio.set_event_loop(loop)
            try:
                self._runner, self.port = loop.run_until_complete(
                    serve(self._state, self.host, self.port)
                )
            except BaseException as exc:
                error.append(exc)
                ready.set()
                loop.close()
                return
            ready.set()
            loop.run_forever()
            loop.close()

        self._loop = loop
        self._thread = threading.Thread(target=run, name=f"tei-emulator-{self.port}", daemon=True)
        self._thread.start()
        ready.wait(30)
        if error:
            self._thread = None
            self._loop = None
            raise error[0]
        return self

    def stop(self) -> None:
        if self._thread is None or self._loop is None:
            return
        loop = self._loop

        async def shutdown():
            if self._runner is not None:
                await self._runner.cleanup()

        try:
            asyncio.run_coroutine_threadsafe(shutdown(), loop).result(30)
        finally:
            loop.call_soon_threadsafe(loop.stop)
            self._thread.join(30)
            self._thread = None
            self._loop = None
            self._runner = None

    def __enter__(self) -> EmulatorServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # ---- observation and control ----
    @property
    def requests(self) -> list[RecordedRequest]:
        with self._state.lock:
            return list(self._state.log)

    @property
    def embed_texts_computed(self) -> int:
        return self._state.embed_texts_computed

    @property
    def sparse_texts_computed(self) -> int:
        return self._state.sparse_texts_computed

    @property
    def rerank_pairs_computed(self) -> int:
        return self._state.rerank_pairs_computed

    @property
    def steps(self) -> int:
        """Compute steps run so far (one per merged batch)."""
        return self._state.steps

    @property
    def step_sizes(self) -> list[int]:
        with self._state.lock:
            return list(self._state.step_sizes)

    def stats(self) -> dict[str, Any]:
        return self._state.stats()

    def inject(self, *faults: Fault) -> None:
        self._state.inject(*faults)

    def clear_faults(self) -> None:
        self._state.clear_faults()

    def reset_log(self) -> None:
        self._state.reset_log()

    def set_healthy(self, healthy: bool) -> None:
        """False: GET /health answers 503 Unhealthy (embed routes keep working)."""
        self._state.healthy = healthy
