"""Single flight on its own: claiming keys, settling, failing, cancellation, the loop check.
One behaviour per test."""

from __future__ import annotations

import asyncio

import pytest

from cached_tei import CachedTEIError, EventLoopError
from cached_tei.singleflight import Flight, SingleFlight


async def test_a_claimed_key_is_pending_until_settled() -> None:
    flights: SingleFlight[str, int] = SingleFlight()
    flight = flights.claim(["a", "b"])
    assert flights.pending("a") is flight and flights.pending("b") is flight
    assert flights.pending("c") is None
    flights.settle(flight)
    assert flights.pending("a") is None and flights.pending("b") is None


async def test_a_private_claim_is_never_pending() -> None:
    flights: SingleFlight[str, int] = SingleFlight()
    flights.claim(["a"], shared=False)
    assert flights.pending("a") is None


async def test_waiters_get_the_settled_values_in_their_order() -> None:
    flights: SingleFlight[str, int] = SingleFlight()
    first, second = flights.claim(["a"]), flights.claim(["b", "c"])
    waiting = asyncio.ensure_future(flights.wait([("c", second), ("a", first), ("b", second)]))
    await asyncio.sleep(0)
    assert not waiting.done()
    second.values.update(b=2, c=3)
    flights.settle(second)
    await asyncio.sleep(0)
    assert not waiting.done()  # still waiting for "a"
    first.values["a"] = 1
    flights.settle(first)
    assert await waiting == [3, 1, 2]


async def test_waiters_of_a_failed_flight_get_its_error() -> None:
    flights: SingleFlight[str, int] = SingleFlight()
    flight = flights.claim(["a"])
    waiting = asyncio.ensure_future(flights.wait([("a", flight)]))
    error = ValueError("TEI refused")
    flights.fail(flight, error)
    with pytest.raises(ValueError) as raised:
        await waiting
    assert raised.value is error
    assert flights.pending("a") is None


async def test_the_first_failed_flight_in_order_is_raised_once_all_have_landed() -> None:
    flights: SingleFlight[str, int] = SingleFlight()
    slow, failed = flights.claim(["a"]), flights.claim(["b"])
    waiting = asyncio.ensure_future(flights.wait([("a", slow), ("b", failed)]))
    flights.fail(failed, ValueError("b failed"))
    await asyncio.sleep(0)
    assert not waiting.done()
    flights.fail(slow, KeyError("a failed"))
    with pytest.raises(KeyError):
        await waiting


async def test_settling_an_old_flight_keeps_a_newer_claim_of_the_same_key() -> None:
    flights: SingleFlight[str, int] = SingleFlight()
    old = flights.claim(["a"])
    new = flights.claim(["a"])  # e.g. a no-cache call that recomputes "a"
    flights.settle(old)
    assert flights.pending("a") is new


async def test_run_settles_the_flight_with_what_the_work_filled_in() -> None:
    flights: SingleFlight[str, int] = SingleFlight()
    flight = flights.claim(["a"])

    async def work() -> str:
        flight.values["a"] = 7
        return "done"

    assert await flights.run(flight, work()) == "done"
    assert flights.pending("a") is None
    assert await flights.wait([("a", flight)]) == [7]


async def test_run_fails_the_flight_with_the_works_error() -> None:
    flights: SingleFlight[str, int] = SingleFlight()
    flight = flights.claim(["a"])

    async def work() -> None:
        raise ValueError("TEI refused")

    with pytest.raises(ValueError):
        await flights.run(flight, work())
    with pytest.raises(ValueError):
        await flights.wait([("a", flight)])


async def test_a_cancelled_caller_does_not_cancel_the_work_its_waiters_need() -> None:
    flights: SingleFlight[str, int] = SingleFlight()
    flight = flights.claim(["a"])
    release = asyncio.Event()

    async def work() -> None:
        await release.wait()
        flight.values["a"] = 1

    caller = asyncio.ensure_future(flights.run(flight, work()))
    waiter = asyncio.ensure_future(flights.wait([("a", flight)]))
    await asyncio.sleep(0)
    caller.cancel()
    await asyncio.sleep(0)
    release.set()
    assert await waiter == [1]
    assert caller.cancelled()


async def test_cancelled_work_fails_its_waiters_with_a_cached_tei_error() -> None:
    flights: SingleFlight[str, int] = SingleFlight()
    flight = flights.claim(["a"])

    async def work() -> None:
        await asyncio.sleep(3600)

    caller = asyncio.ensure_future(flights.run(flight, work()))
    for _ in range(3):  # the caller starts the work, the work starts sleeping
        await asyncio.sleep(0)
    [task] = flights._running
    task.cancel()  # as when the engine's loop shuts down
    with pytest.raises(CachedTEIError, match="cancelled; try again"):
        await flights.wait([("a", flight)])
    with pytest.raises(asyncio.CancelledError):
        await caller
    assert flights.pending("a") is None


async def test_drain_waits_for_flights_whose_caller_is_gone() -> None:
    flights: SingleFlight[str, int] = SingleFlight()
    flight = flights.claim(["a"])
    release = asyncio.Event()

    async def work() -> None:
        await release.wait()
        flight.values["a"] = 1

    caller = asyncio.ensure_future(flights.run(flight, work()))
    await asyncio.sleep(0)
    caller.cancel()
    draining = asyncio.ensure_future(flights.drain())
    await asyncio.sleep(0)
    assert not draining.done()
    release.set()
    await draining
    assert flights.pending("a") is None and flight.values == {"a": 1}


def test_a_second_event_loop_is_refused_with_the_fix() -> None:
    flights: SingleFlight[str, int] = SingleFlight()

    async def claim() -> Flight[str, int]:
        return flights.claim(["a"])

    asyncio.run(claim())
    with pytest.raises(EventLoopError, match="one Engine per event loop.*CachedEmbedder"):
        asyncio.run(claim())
