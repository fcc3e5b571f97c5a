"""What the embedders of one process share: one event loop thread, and one engine per setup.

Every :class:`~cached_tei.CachedEmbedder` (and so every LangChain or LlamaIndex adapter) runs
its I/O on one private loop. Faces whose settings differ only in what changes a vector
(instructions, prompt names, normalisation, truncation, dimensions, cache flags) share one
engine: its TEI connection pool, in-process memory, single flight and write-behind queue.
Engines that point at one embedded folder share that folder (see ``stores.embedded``). An
engine is closed when its last face is, and every engine is drained at interpreter exit.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Hashable

from . import process
from .engine import Engine
from .loop import LoopThread
from .settings import FACE_SETTINGS, CachedTEISettings
from .values import ModelKind

log = logging.getLogger(__name__)

# Seconds the exit drain may take per engine before giving up on its pending writes.
_EXIT_DRAIN_TIMEOUT = 30.0


def engine_key(settings: CachedTEISettings, kind: ModelKind = "embedding") -> Hashable:
    """What two faces must agree on to share an engine."""
    return (
        kind,
        *(
            (name, getattr(settings, name))
            for name in sorted(type(settings).model_fields)
            if name not in FACE_SETTINGS
        ),
    )


class _Shared:
    __slots__ = ("engine", "users")

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.users = 0


class Runtime:
    """The process's loop thread and its engines, each counted by the faces that use it."""

    def __init__(self) -> None:
        self._mutex = threading.Lock()
        self._loop: LoopThread | None = None
        self._engines: dict[Hashable, _Shared] = {}
        # Loops and engines inherited through fork() are dead there: kept, never touched.
        self._abandoned: list[object] = []

    def acquire(
        self, settings: CachedTEISettings, kind: ModelKind = "embedding"
    ) -> tuple[LoopThread, Engine]:
        """The loop and the engine for ``settings`` and a kind of model, counting one more
        user of the engine."""
        with self._mutex:
            if self._loop is None or not self._loop.running:
                self._loop = LoopThread()
                process.at_exit(self.shutdown)
            key = engine_key(settings, kind)
            shared = self._engines.get(key)
            if shared is None:
                shared = self._engines[key] = _Shared(Engine(settings, kind))
            shared.users += 1
            return self._loop, shared.engine

    def _detach(self, engine: Engine) -> bool:
        """Count one user fewer; True when it was the last (the engine is then forgotten)."""
        with self._mutex:
            key = engine_key(engine.settings, engine.kind)
            shared = self._engines.get(key)
            if shared is None or shared.engine is not engine:
                return False  # already closed by shutdown()
            shared.users -= 1
            if shared.users > 0:
                return False
            del self._engines[key]
            return True

    def release(self, loop: LoopThread, engine: Engine) -> None:
        """A face is done: write what is pending; close the engine if it was the last."""
        if self._detach(engine):
            loop.run(engine.aclose())
        else:
            loop.run(engine.flush())

    async def arelease(self, loop: LoopThread, engine: Engine) -> None:
        """Async :meth:`release`: the caller's loop keeps running while the engine drains."""
        if self._detach(engine):
            await loop.run_async(engine.aclose())
        else:
            await loop.run_async(engine.flush())

    def release_soon(self, loop: LoopThread, engine: Engine) -> None:
        """Release for a face that was garbage-collected (on any thread): never blocks."""
        if self._detach(engine) and loop.running:
            loop.submit(engine.aclose())

    def shutdown(self) -> None:
        """Drain and close every engine, then stop the loop (at interpreter exit)."""
        with self._mutex:
            loop, self._loop = self._loop, None
            engines = [shared.engine for shared in self._engines.values()]
            self._engines.clear()
        if loop is None:
            return
        for engine in engines:
            try:
                loop.submit(engine.aclose()).result(timeout=_EXIT_DRAIN_TIMEOUT)
            except Exception:
                log.exception("closing cached-tei failed; some cache writes may be lost")
        loop.stop()

    def forget_after_fork(self) -> None:
        """In a forked child: keep the parent's loop and engines, never touch them."""
        self._abandoned.extend([self._loop, *self._engines.values()])
        self._loop = None
        self._engines = {}
        self._mutex = threading.Lock()


RUNTIME = Runtime()
process.on_fork(RUNTIME.forget_after_fork)
