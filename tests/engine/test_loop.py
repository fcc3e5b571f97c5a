"""The loop thread on its own: sync and async callers, errors, the misuse it refuses."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator

import pytest

from cached_tei.loop import LoopThread


@pytest.fixture
def loop() -> Iterator[LoopThread]:
    thread = LoopThread(name="test-loop")
    yield thread
    thread.stop()


async def where() -> str:
    await asyncio.sleep(0)
    return threading.current_thread().name


async def fails() -> None:
    raise ValueError("inside the loop")


def test_run_returns_the_result_computed_on_the_loop_thread(loop: LoopThread) -> None:
    assert loop.run(where()) == "test-loop"


def test_run_raises_the_coroutines_error(loop: LoopThread) -> None:
    with pytest.raises(ValueError, match="inside the loop"):
        loop.run(fails())


def test_run_from_the_loops_own_thread_is_refused_naming_the_async_methods(
    loop: LoopThread,
) -> None:
    async def nested() -> None:
        loop.run(where())

    with pytest.raises(RuntimeError, match="use the async methods"):
        loop.run(nested())


async def test_run_async_awaits_it_from_another_event_loop(loop: LoopThread) -> None:
    assert await loop.run_async(where()) == "test-loop"


def test_stop_ends_the_thread_and_closes_the_loop() -> None:
    thread = LoopThread()
    assert thread.running
    thread.stop()
    assert not thread.running
    thread.stop()  # a second stop does nothing
