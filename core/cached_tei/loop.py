"""A private event loop in a daemon thread, so sync code and any other loop can use the engine."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine
from concurrent.futures import Future
from typing import Any, TypeVar

T = TypeVar("T")


class LoopThread:
    """Runs coroutines on one event loop in a background thread."""

    def __init__(self, name: str = "cached-tei") -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name=name, daemon=True)
        self._thread.start()

    @property
    def running(self) -> bool:
        return self._thread.is_alive() and not self._loop.is_closed()

    def submit(self, coroutine: Coroutine[Any, Any, T]) -> Future[T]:
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop)

    def run(self, coroutine: Coroutine[Any, Any, T]) -> T:
        """Run a coroutine to completion from any thread but the loop's own."""
        if threading.current_thread() is self._thread:
            coroutine.close()
            raise RuntimeError(
                "a blocking cached-tei call was made from inside its own event loop; "
                "use the async methods (aembed_documents, aembed_query) there"
            )
        return self.submit(coroutine).result()

    async def run_async(self, coroutine: Coroutine[Any, Any, T]) -> T:
        """Await a coroutine that runs on this loop, from any other event loop."""
        return await asyncio.wrap_future(self.submit(coroutine))

    def stop(self) -> None:
        if self.running:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=10)
            self._loop.close()
