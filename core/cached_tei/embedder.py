"""``CachedEmbedder``: the engine behind a sync and async API usable from anywhere."""

from __future__ import annotations

import logging
import threading
import weakref
from collections.abc import Sequence
from types import TracebackType
from typing import Any, Literal

from .engine import EmbedResult, Engine
from .errors import InputError
from .keys import EmbedOptions
from .loop import LoopThread
from .settings import CachedTEISettings
from .stats import Stats
from .tei import TEIInfo

log = logging.getLogger(__name__)

Kind = Literal["query", "document"]


class _Runtime:
    """The loop thread and the engine on it, started on first use and closed once."""

    def __init__(self, settings: CachedTEISettings) -> None:
        self._settings = settings
        self._lock = threading.Lock()
        self.loop: LoopThread | None = None
        self.engine: Engine | None = None

    def start(self) -> tuple[LoopThread, Engine]:
        with self._lock:
            if self.loop is None or self.engine is None:
                self.loop = LoopThread()
                self.engine = Engine(self._settings)
            return self.loop, self.engine

    def close(self) -> None:
        with self._lock:
            loop, engine = self.loop, self.engine
            self.loop = self.engine = None
        if loop is None or engine is None:
            return
        try:
            loop.run(engine.aclose())
        except Exception:
            log.exception("closing cached-tei failed; some cache writes may be lost")
        finally:
            loop.stop()


class CachedEmbedder:
    """Text embeddings from TEI with a persistent Qdrant cache in front.

    Settings come from ``CACHED_TEI_*`` environment variables (see
    :class:`CachedTEISettings`), overridden by keyword arguments or a settings object.
    Nothing touches the network until the first call. Usable from plain code, threads,
    and any event loop; all I/O runs on one private loop. Pending cache writes are drained
    by :meth:`flush`, :meth:`close`, the context managers, and at interpreter exit.
    """

    def __init__(self, settings: CachedTEISettings | None = None, **overrides: Any) -> None:
        if settings is None:
            settings = CachedTEISettings(**overrides)
        elif overrides:
            settings = CachedTEISettings(**{**dict(settings), **overrides})
        self.settings = settings
        self._runtime = _Runtime(settings)
        self._finalizer = weakref.finalize(self, self._runtime.close)

    def __repr__(self) -> str:
        store = self.settings.qdrant_url or f"embedded:{self.settings.qdrant_path}"
        return f"CachedEmbedder(tei_url={self.settings.tei_url!r}, store={store!r})"

    def __getstate__(self) -> dict[str, Any]:
        return {"settings": self.settings}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["settings"])  # type: ignore[misc]

    # ------------------------------------------------------------------ sync
    def embed_documents(self, texts: Sequence[str]) -> list[list[float]]:
        """Embed documents (with the document prompt/instruction); one vector per text."""
        return self.embed(texts, kind="document").vectors.tolist()

    def embed_query(self, text: str) -> list[float]:
        """Embed one query (with the query prompt/instruction)."""
        return self.embed([_single(text)], kind="query").vectors[0].tolist()

    def embed(self, texts: Sequence[str], *, kind: Kind = "document") -> EmbedResult:
        """Embed texts as queries or documents; the result keeps float32 vectors and counts."""
        loop, engine = self._runtime.start()
        return loop.run(engine.embed(texts, EmbedOptions.from_settings(self.settings, kind)))

    def info(self) -> TEIInfo:
        """TEI's ``/info`` (fetched once)."""
        loop, engine = self._runtime.start()
        return loop.run(engine.info())

    def flush(self) -> None:
        """Block until every computed vector is written to the cache."""
        loop, engine = self._runtime.start()
        loop.run(engine.flush())

    def close(self) -> None:
        """Drain pending writes and release connections. A later call starts afresh."""
        self._runtime.close()

    def __enter__(self) -> CachedEmbedder:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # ------------------------------------------------------------------ async
    async def aembed_documents(self, texts: Sequence[str]) -> list[list[float]]:
        """Async :meth:`embed_documents`, from any event loop."""
        return (await self.aembed(texts, kind="document")).vectors.tolist()

    async def aembed_query(self, text: str) -> list[float]:
        """Async :meth:`embed_query`, from any event loop."""
        return (await self.aembed([_single(text)], kind="query")).vectors[0].tolist()

    async def aembed(self, texts: Sequence[str], *, kind: Kind = "document") -> EmbedResult:
        """Async :meth:`embed`, from any event loop."""
        loop, engine = self._runtime.start()
        options = EmbedOptions.from_settings(self.settings, kind)
        return await loop.run_async(engine.embed(texts, options))

    async def aflush(self) -> None:
        """Async :meth:`flush`."""
        loop, engine = self._runtime.start()
        await loop.run_async(engine.flush())

    async def aclose(self) -> None:
        """Async :meth:`close`."""
        loop, engine = self._runtime.loop, self._runtime.engine
        if loop is not None and engine is not None:
            await loop.run_async(engine.flush())
        self._runtime.close()

    async def __aenter__(self) -> CachedEmbedder:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    # ------------------------------------------------------------------ state
    @property
    def stats(self) -> Stats:
        """A snapshot of the counters (hits, misses, TEI requests, retries, cache errors...)."""
        engine = self._runtime.engine
        return engine.stats.snapshot() if engine is not None else Stats()


def _single(text: str) -> str:
    if not isinstance(text, str):
        raise InputError(
            f"expected one string, got {type(text).__name__}; use embed_documents for lists"
        )
    return text


__all__ = ["CachedEmbedder", "Kind"]
