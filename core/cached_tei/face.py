"""What every plain face shares: its settings, the engine it leases from the runtime, and
closing, flushing, stats, pickling and the context managers (sync and async)."""

from __future__ import annotations

import sys
import threading
import weakref
from types import TracebackType
from typing import Any, ClassVar

from typing_extensions import Self

from .engine import Engine
from .loop import LoopThread
from .runtime import RUNTIME
from .settings import SECRET_SETTINGS, CachedTEISettings
from .stats import Stats
from .tei import TEIInfo
from .values import ModelKind


class _Lease:
    """The engine a face uses, from its first call until it is closed."""

    def __init__(self) -> None:
        self.mutex = threading.Lock()
        self.loop: LoopThread | None = None
        self.engine: Engine | None = None

    def take(self) -> tuple[LoopThread, Engine] | None:
        with self.mutex:
            loop, engine = self.loop, self.engine
            self.loop = self.engine = None
        return (loop, engine) if loop is not None and engine is not None else None


def _release_collected(lease: _Lease) -> None:
    taken = lease.take()
    if taken is not None:
        RUNTIME.release_soon(*taken)


class Face:
    """A plain face over the engine of one kind of model (``kind``).

    Settings come from ``CACHED_TEI_*`` environment variables (see
    :class:`CachedTEISettings`), overridden by keyword arguments or a settings object.
    Nothing touches the network until the first call.
    """

    kind: ClassVar[ModelKind] = "embedding"

    def __init__(self, settings: CachedTEISettings | None = None, **overrides: Any) -> None:
        if settings is None:
            settings = CachedTEISettings(**overrides)
            # A key read from the environment stays out of pickles (see __getstate__).
            self._secrets_read = frozenset(
                name
                for name in SECRET_SETTINGS
                if overrides.get(name) is None and getattr(settings, name) is not None
            )
        else:  # the caller's settings object, secrets and all
            if overrides:
                settings = CachedTEISettings(**{**dict(settings), **overrides})
            self._secrets_read = frozenset()
        if not settings.write_through and _in_multiprocessing_worker():
            # A multiprocessing worker may be ended without exit handlers (Pool.terminate,
            # os._exit): each call stores its vectors before it returns.
            settings = settings.model_copy(update={"write_through": True})
        self.settings = settings
        self._lease = _Lease()
        self._final_stats = Stats()
        self._finalizer = weakref.finalize(self, _release_collected, self._lease)

    def __getstate__(self) -> dict[str, Any]:
        """The settings, less the keys read from the environment: the copy reads them again
        where it is unpickled (a key given as an argument is kept)."""
        values = {name: value for name, value in self.settings if name not in self._secrets_read}
        return {"settings": values}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(**state["settings"])  # type: ignore[misc]

    def _engine(self) -> tuple[LoopThread, Engine]:
        lease = self._lease
        with lease.mutex:
            if lease.loop is None or lease.engine is None:
                lease.loop, lease.engine = RUNTIME.acquire(self.settings, self.kind)
            return lease.loop, lease.engine

    def info(self) -> TEIInfo:
        """TEI's ``/info`` (fetched once)."""
        loop, engine = self._engine()
        return loop.run(engine.info())

    def flush(self) -> None:
        """Block until every computed entry is written to the cache."""
        loop, engine = self._engine()
        loop.run(engine.flush())

    def close(self) -> None:
        """Write pending entries and let go of the engine (closed when no other face of
        this process uses it). ``stats`` keep their final values; a later call starts afresh."""
        taken = self._lease.take()
        if taken is not None:
            RUNTIME.release(*taken)
            self._final_stats = taken[1].stats.snapshot()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    async def ainfo(self) -> TEIInfo:
        """Async :meth:`info`."""
        loop, engine = self._engine()
        return await loop.run_async(engine.info())

    async def aflush(self) -> None:
        """Async :meth:`flush`."""
        loop, engine = self._engine()
        await loop.run_async(engine.flush())

    async def aclose(self) -> None:
        """Async :meth:`close`; the caller's loop keeps running while the writes drain."""
        taken = self._lease.take()
        if taken is not None:
            await RUNTIME.arelease(*taken)
            self._final_stats = taken[1].stats.snapshot()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    @property
    def stats(self) -> Stats:
        """A snapshot of the counters (hits, misses, TEI requests, retries, cache errors...)
        of the engine this face uses, shared with the faces that share it; after
        :meth:`close`, their final values."""
        engine = self._lease.engine
        return engine.stats.snapshot() if engine is not None else self._final_stats


def _in_multiprocessing_worker() -> bool:
    # A worker has imported multiprocessing already; anyone else need not pay for it.
    multiprocessing = sys.modules.get("multiprocessing")
    return multiprocessing is not None and multiprocessing.parent_process() is not None
