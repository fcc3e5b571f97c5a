"""Shared TEI requests: the texts of concurrent calls with the same request fields that arrive
within a short window go out together, up to TEI's batch and payload limits.

Each call still succeeds or fails whole: it gets exactly its own rows, and the error of any
request that held one of its texts.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import orjson

from .errors import CachedTEIError

# Sends one request's texts with the given fields; returns one float32 row per text.
SendBatch = Callable[[list[str], dict[str, Any]], Awaitable[np.ndarray]]
BatchCallback = Callable[[int, np.ndarray], Awaitable[None]]
_Arrival = tuple[int, np.ndarray] | Exception


@dataclass(frozen=True)
class BatchLimits:
    """What one request may hold: texts, and bytes of JSON-encoded texts."""

    texts: int
    bytes: int


class _Call:
    """One caller's view: its rows (or errors) as the requests holding them finish."""

    def __init__(self) -> None:
        self.arrivals: asyncio.Queue[_Arrival] = asyncio.Queue()
        self.parts = 0
        self.requests: list[_Request] = []
        self.abandoned = False

    def abandon(self) -> None:
        """Its caller is gone: drop its unsent texts, cancel requests that serve no one else."""
        self.abandoned = True
        for request in self.requests:
            if all(part.call.abandoned for part in request.parts):
                request.task.cancel()


@dataclass
class _Part:
    """Rows ``start:start + len(texts)`` of one call, inside one request."""

    call: _Call
    start: int
    texts: list[str]


@dataclass
class _Request:
    parts: list[_Part]
    task: asyncio.Task[None] = field(init=False)


class _Collector:
    """The texts waiting to go out in one request with the same fields."""

    def __init__(self, batcher: RequestBatcher, fields: dict[str, Any]) -> None:
        self._batcher = batcher
        self._fields = fields
        self._parts: list[_Part] = []
        self._count = 0
        self._bytes = 0
        self._timer: asyncio.TimerHandle | None = None

    def add(self, call: _Call, texts: Sequence[str], sizes: Sequence[int]) -> None:
        """Queue a call's texts; send each request as it fills, the rest when the window ends.

        A call that fills a request sends its remainder at once: only small calls wait.
        """
        limits = self._batcher.limits
        start, filled = 0, False
        for end, size in enumerate(sizes):
            if self._count and self._bytes + size > limits.bytes:
                filled |= self._send_full(call, texts, start, end)
                start = end
            self._count += 1
            self._bytes += size
            if self._count == limits.texts:
                filled |= self._send_full(call, texts, start, end + 1)
                start = end + 1
        self._take(call, texts, start, len(texts))
        window = self._batcher.window
        if filled or window == 0:
            self.flush()
        elif self._parts and self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(window, self.flush)

    def _send_full(self, call: _Call, texts: Sequence[str], start: int, end: int) -> bool:
        """Send the full request, ending with ``texts[start:end]``; whether it held any."""
        self._take(call, texts, start, end)
        self.flush()
        return end > start

    def _take(self, call: _Call, texts: Sequence[str], start: int, end: int) -> None:
        if end > start:
            self._parts.append(_Part(call, start, list(texts[start:end])))
            call.parts += 1

    def flush(self) -> None:
        """Send what is waiting (less the texts of callers that are gone)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        parts = [part for part in self._parts if not part.call.abandoned]
        self._parts, self._count, self._bytes = [], 0, 0
        if parts:
            self._batcher.start(_Request(parts), self._fields)

    def discard(self, error: Exception) -> None:
        """Fail the calls waiting here without sending anything."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        for part in self._parts:
            part.call.arrivals.put_nowait(error)
        self._parts, self._count, self._bytes = [], 0, 0


class RequestBatcher:
    """Turns concurrent calls into shared requests, one collector per set of request fields.

    ``window`` is how long the first waiting text may wait for others (0: every call sends
    its own requests at once). Bound to the event loop it is used on.
    """

    def __init__(self, send: SendBatch, limits: BatchLimits, window: float) -> None:
        self.limits = limits
        self.window = window
        self._send = send
        self._collectors: dict[bytes, _Collector] = {}
        self._running: set[asyncio.Task[None]] = set()

    async def embed(
        self,
        texts: Sequence[str],
        sizes: Sequence[int],
        fields: dict[str, Any],
        on_batch: BatchCallback,
    ) -> None:
        """Send texts (``sizes[i]``: bytes of text i in a body) and await ``on_batch(start,
        vectors)`` for each part of them as its request returns; then raise the first error.
        """
        key = orjson.dumps(fields)
        collector = self._collectors.get(key)
        if collector is None:
            collector = self._collectors[key] = _Collector(self, fields)
        call = _Call()
        collector.add(call, texts, sizes)
        error: Exception | None = None
        try:
            for _ in range(call.parts):
                arrival = await call.arrivals.get()
                if isinstance(arrival, Exception):
                    error = error or arrival
                    continue
                try:
                    await on_batch(*arrival)
                except Exception as exc:
                    error = error or exc
        except BaseException:
            call.abandon()
            raise
        if error is not None:
            raise error

    def start(self, request: _Request, fields: dict[str, Any]) -> None:
        request.task = asyncio.create_task(self._run(request, fields))
        self._running.add(request.task)
        request.task.add_done_callback(lambda task: self._finished(request, task))
        for part in request.parts:
            part.call.requests.append(request)

    async def _run(self, request: _Request, fields: dict[str, Any]) -> None:
        try:
            vectors = await self._send([t for part in request.parts for t in part.texts], fields)
        except Exception as exc:
            for part in request.parts:
                part.call.arrivals.put_nowait(exc)
            return
        offset = 0
        for part in request.parts:
            rows = len(part.texts)
            part.call.arrivals.put_nowait((part.start, vectors[offset : offset + rows]))
            offset += rows

    def _finished(self, request: _Request, task: asyncio.Task[None]) -> None:
        self._running.discard(task)
        if task.cancelled():  # by aclose (or its callers are gone), perhaps before it started
            for part in request.parts:
                part.call.arrivals.put_nowait(_closed())

    async def aclose(self) -> None:
        """Fail the calls still waiting, and stop the requests in flight."""
        for collector in self._collectors.values():
            collector.discard(_closed())
        for task in self._running:
            task.cancel()
        await asyncio.gather(*self._running, return_exceptions=True)


def _closed() -> CachedTEIError:
    return CachedTEIError("the TEI client was closed while this call waited for TEI")
