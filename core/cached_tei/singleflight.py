"""Single flight: keys one call is computing, awaited (not recomputed) by concurrent calls.

A :class:`SingleFlight` belongs to the event loop it is first used on; from another loop it
raises :class:`~cached_tei.errors.EventLoopError` rather than asyncio's "attached to a
different loop" or "Event loop is closed" deep inside a computation.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine, Hashable, Sequence
from typing import Any, Generic, TypeVar

from .errors import CachedTEIError, EventLoopError

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")
T = TypeVar("T")

WRONG_LOOP = (
    "this cached-tei Engine belongs to the event loop it first ran on, and is now used from "
    "another one (a second asyncio.run(), or another thread's loop); its connections cannot "
    "move between loops. Create one Engine per event loop, or use cached_tei.CachedEmbedder "
    "(or an adapter), which runs on its own loop and can be called from any loop or thread."
)


class Flight(Generic[K, V]):
    """The keys one call claimed, and their values once it has settled."""

    __slots__ = ("_done", "keys", "values")

    def __init__(self, keys: list[K], done: asyncio.Future[None]) -> None:
        self.keys = keys
        self.values: dict[K, V] = {}
        self._done = done
        done.add_done_callback(_consume_exception)


class SingleFlight(Generic[K, V]):
    """Claim keys, settle them with values or fail them with an error; other calls that need
    a claimed key wait for its flight instead of computing it again."""

    def __init__(self) -> None:
        self._loop: asyncio.AbstractEventLoop | None = None
        self._flights: dict[K, Flight[K, V]] = {}
        self._running: set[asyncio.Task[Any]] = set()

    def check_loop(self) -> None:
        """Bind to the running loop on first use; raise EventLoopError on any other loop."""
        loop = asyncio.get_running_loop()
        if self._loop is None:
            self._loop = loop
        elif loop is not self._loop:
            raise EventLoopError(WRONG_LOOP)

    def pending(self, key: K) -> Flight[K, V] | None:
        """The flight computing ``key``, if one is."""
        return self._flights.get(key)

    def claim(self, keys: list[K], *, shared: bool = True) -> Flight[K, V]:
        """A new flight for ``keys``; ``shared=False`` keeps it private (no call waits on it)."""
        self.check_loop()
        flight: Flight[K, V] = Flight(keys, asyncio.get_running_loop().create_future())
        if shared:
            for key in keys:
                self._flights[key] = flight
        return flight

    def settle(self, flight: Flight[K, V]) -> None:
        """The flight's values are in: wake its waiters and release its keys."""
        flight._done.set_result(None)
        self._release(flight)

    def fail(self, flight: Flight[K, V], error: BaseException) -> None:
        """The flight failed: its waiters raise ``error``; its keys are released."""
        flight._done.set_exception(error)
        self._release(flight)

    async def run(self, flight: Flight[K, V], work: Coroutine[Any, Any, T]) -> T:
        """Run ``work`` (which fills ``flight.values``) as a task of its own, then settle or
        fail the flight. A cancelled caller never strands the calls waiting on it: the task
        goes on, and a cancelled task fails its waiters with a CachedTEIError."""
        task = asyncio.ensure_future(self._settle_after(flight, work))
        self._running.add(task)
        task.add_done_callback(self._running.discard)
        task.add_done_callback(_consume_exception)
        return await asyncio.shield(task)

    async def wait(self, joined: Sequence[tuple[K, Flight[K, V]]]) -> list[V]:
        """The values of keys other calls are computing, in order, once all have landed; the
        first failed flight's error (in order) is raised."""
        flights = {id(flight): flight._done for _, flight in joined}
        if flights:
            await asyncio.wait(flights.values())
        values = []
        for key, flight in joined:
            flight._done.result()
            values.append(flight.values[key])
        return values

    async def drain(self) -> None:
        """Wait for every flight started so far to finish (failures included)."""
        if self._running:
            await asyncio.gather(*self._running, return_exceptions=True)

    async def _settle_after(self, flight: Flight[K, V], work: Coroutine[Any, Any, T]) -> T:
        try:
            result = await work
        except Exception as exc:
            self.fail(flight, exc)
            raise
        except BaseException:  # cancelled (the engine is closing): never strand the waiters
            self.fail(
                flight, CachedTEIError("the call computing these texts was cancelled; try again")
            )
            raise
        self.settle(flight)
        return result

    def _release(self, flight: Flight[K, V]) -> None:
        for key in flight.keys:
            if self._flights.get(key) is flight:
                del self._flights[key]


def _consume_exception(future: asyncio.Future[Any]) -> None:
    # Several calls may wait on one flight (or none, when its caller was cancelled); mark
    # its exception retrieved so asyncio does not log "exception was never retrieved".
    if not future.cancelled():
        future.exception()
