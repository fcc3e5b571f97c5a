"""Shared TEI requests: concurrent calls' texts with the same request fields go out together
while every slot (see :mod:`cached_tei.pacing`) is busy, up to TEI's batch and payload limits.
A free slot means send now: there is no fixed wait.

Each call still succeeds or fails whole, and alone: it gets exactly its own rows, and only
errors that its own texts caused. A merged request refused as invalid (400, 413, 422) is sent
again as one request per call, so that each call gets what TEI would have answered it alone.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import orjson

from .errors import CachedTEIError, TEIError
from .pacing import Pacer

# Sends one request's texts with the given fields; returns one float32 row per text.
SendBatch = Callable[[list[str], dict[str, Any]], Awaitable[np.ndarray]]
BatchCallback = Callable[[int, np.ndarray], Awaitable[None]]
_Arrival = tuple[int, np.ndarray] | Exception
# Statuses that say the request itself was refused: one caller's texts can cause them.
_CLIENT_ERRORS = frozenset({400, 413, 422})


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

    @property
    def waiting(self) -> bool:
        return bool(self._parts)

    def add(self, call: _Call, texts: Sequence[str], sizes: Sequence[int]) -> None:
        """Queue a call's texts; full requests go out at once, the rest when a slot is free."""
        limits = self._batcher.limits
        start = 0
        for end, size in enumerate(sizes):
            if self._count and self._bytes + size > limits.bytes:
                self._take(call, texts, start, end)
                self.flush()
                start = end
            self._count += 1
            self._bytes += size
            if self._count == limits.texts:
                self._take(call, texts, start, end + 1)
                self.flush()
                start = end + 1
        self._take(call, texts, start, len(texts))
        if self._parts:
            self._batcher.wait_for_slot(self)

    def _take(self, call: _Call, texts: Sequence[str], start: int, end: int) -> None:
        if end > start:
            self._parts.append(_Part(call, start, list(texts[start:end])))
            call.parts += 1

    def flush(self) -> None:
        """Send what is waiting (less the texts of callers that are gone)."""
        parts = [part for part in self._parts if not part.call.abandoned]
        self._parts, self._count, self._bytes = [], 0, 0
        if parts:
            self._batcher.start(_Request(parts), self._fields)

    def discard(self, error: Exception) -> None:
        """Fail the calls waiting here without sending anything."""
        for part in self._parts:
            part.call.arrivals.put_nowait(error)
        self._parts, self._count, self._bytes = [], 0, 0


class RequestBatcher:
    """Turns concurrent calls into shared requests, one collector per set of request fields.

    With a ``pacer``, texts are sent at once while fewer than ``pacer.target`` requests are
    in flight, and wait to share a request otherwise; without one (sharing off), every call
    sends its own requests at once. Bound to the event loop it is used on.
    """

    def __init__(self, send: SendBatch, limits: BatchLimits, pacer: Pacer | None) -> None:
        self.limits = limits
        self.pacer = pacer
        self._send = send
        self._collectors: dict[bytes, _Collector] = {}
        self._running: set[asyncio.Task[None]] = set()
        self._waiting: deque[_Collector] = deque()  # oldest first, each at most once
        self._dispatching = False  # a dispatch is scheduled for the end of this loop turn

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

    def wait_for_slot(self, collector: _Collector) -> None:
        """Send the collector's texts once this loop turn ends if a slot is free (so that the
        calls made in the same turn share a request, at no cost in time), else when one is."""
        if self.pacer is None:
            collector.flush()
            return
        if collector not in self._waiting:
            self._waiting.append(collector)
        if len(self._running) < self.pacer.target:
            if not self._dispatching:
                self._dispatching = True
                asyncio.get_running_loop().call_soon(self._dispatch)
        else:
            self.pacer.held_back = True

    def _dispatch(self) -> None:
        """Send the waiting texts, oldest first, while slots are free."""
        self._dispatching = False
        while self._waiting and self.pacer is not None:
            if len(self._running) >= self.pacer.target:
                return
            self._waiting.popleft().flush()
            self.pacer.held_back = bool(self._waiting)

    def start(self, request: _Request, fields: dict[str, Any]) -> None:
        request.task = asyncio.create_task(self._run(request, fields))
        self._running.add(request.task)
        request.task.add_done_callback(lambda task: self._finished(request, task))
        for part in request.parts:
            part.call.requests.append(request)

    async def _run(self, request: _Request, fields: dict[str, Any]) -> None:
        parts = request.parts
        try:
            vectors = await self._send([t for part in parts for t in part.texts], fields)
        except Exception as exc:
            if len({id(part.call) for part in parts}) > 1 and _refused(exc):
                await asyncio.gather(*(self._run_alone(part, fields) for part in parts))
                return
            for part in parts:
                part.call.arrivals.put_nowait(exc)
            return
        offset = 0
        for part in parts:
            rows = len(part.texts)
            part.call.arrivals.put_nowait((part.start, vectors[offset : offset + rows]))
            offset += rows

    async def _run_alone(self, part: _Part, fields: dict[str, Any]) -> None:
        """Send one call's texts of a refused merged request on their own."""
        if part.call.abandoned:
            return
        try:
            vectors = await self._send(part.texts, fields)
        except Exception as exc:
            part.call.arrivals.put_nowait(exc)
        else:
            part.call.arrivals.put_nowait((part.start, vectors))

    def _finished(self, request: _Request, task: asyncio.Task[None]) -> None:
        self._running.discard(task)
        if task.cancelled():  # by aclose (or its callers are gone), perhaps before it started
            for part in request.parts:
                part.call.arrivals.put_nowait(_closed())
        self._dispatch()

    async def aclose(self) -> None:
        """Fail the calls still waiting, and stop the requests in flight."""
        self._waiting.clear()
        for collector in self._collectors.values():
            collector.discard(_closed())
        for task in self._running:
            task.cancel()
        await asyncio.gather(*self._running, return_exceptions=True)


def _refused(error: Exception) -> bool:
    return isinstance(error, TEIError) and error.status in _CLIENT_ERRORS


def _closed() -> CachedTEIError:
    return CachedTEIError("the TEI client was closed while this call waited for TEI")
