"""``CachedEmbedder``: the engine behind a sync and async API usable from anywhere."""

from __future__ import annotations

import sys
import threading
import weakref
from collections.abc import Coroutine, Sequence
from types import TracebackType
from typing import Any, Literal

from typing_extensions import TypedDict, Unpack

from .engine import EmbedLists, EmbedResult, Engine
from .errors import InputError
from .keys import EmbedOptions
from .loop import LoopThread
from .runtime import RUNTIME
from .settings import CachedTEISettings
from .stats import Stats
from .tei import TEIInfo

Kind = Literal["query", "document"]
KINDS: tuple[Kind, ...] = ("query", "document")


class CacheControl(TypedDict, total=False):
    """Per-call cache control; a key left out takes the settings' default."""

    read_cache: bool  # False: recompute the texts and refresh their entries (no-cache)
    write_cache: bool  # False: keep no new vector anywhere, memory included (no-store)


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


class CachedEmbedder:
    """Text embeddings from TEI with a persistent Qdrant cache in front.

    Settings come from ``CACHED_TEI_*`` environment variables (see
    :class:`CachedTEISettings`), overridden by keyword arguments or a settings object.
    Nothing touches the network until the first call. Usable from plain code, threads,
    and any event loop; all I/O runs on one private loop. Every embedder of the process
    shares one store per cache location, and embedders whose settings differ only in what
    changes a vector (instructions, prompts, normalisation...) share one engine: its
    memory, its connections, and each text computed once. Pending cache writes are drained
    by :meth:`flush`, :meth:`close`, the context managers, and at interpreter exit; in a
    multiprocessing worker (``IngestionPipeline(num_workers=...)``) every call writes through.
    """

    def __init__(self, settings: CachedTEISettings | None = None, **overrides: Any) -> None:
        if settings is None:
            settings = CachedTEISettings(**overrides)
        elif overrides:
            settings = CachedTEISettings(**{**dict(settings), **overrides})
        if not settings.write_through and _in_multiprocessing_worker():
            # A multiprocessing worker may be ended without exit handlers (Pool.terminate,
            # os._exit): each call stores its vectors before it returns.
            settings = settings.model_copy(update={"write_through": True})
        self.settings = settings
        self._options = {kind: EmbedOptions.from_settings(settings, kind) for kind in KINDS}
        self._lease = _Lease()
        self._final_stats = Stats()
        self._finalizer = weakref.finalize(self, _release_collected, self._lease)

    def __repr__(self) -> str:
        settings = self.settings
        store = (
            settings.cache_location if settings.qdrant_url else f"embedded:{settings.qdrant_path}"
        )
        return f"CachedEmbedder(tei_url={self.settings.tei_url!r}, store={store!r})"

    def __getstate__(self) -> dict[str, Any]:
        return {"settings": self.settings}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["settings"])  # type: ignore[misc]

    def _engine(self) -> tuple[LoopThread, Engine]:
        lease = self._lease
        with lease.mutex:
            if lease.loop is None or lease.engine is None:
                lease.loop, lease.engine = RUNTIME.acquire(self.settings)
            return lease.loop, lease.engine

    def _call(
        self, texts: Sequence[str], kind: Kind, cache: CacheControl
    ) -> tuple[LoopThread, Coroutine[Any, Any, EmbedResult]]:
        options = self._options.get(kind)
        if options is None:
            raise InputError(f"kind must be 'query' or 'document', got {kind!r}")
        loop, engine = self._engine()
        work = engine.embed(
            texts,
            options,
            read_cache=cache.get("read_cache", self.settings.read_cache),
            write_cache=cache.get("write_cache", self.settings.write_cache),
        )
        return loop, work

    def _lists(
        self, texts: Sequence[str], kind: Kind
    ) -> tuple[LoopThread, Coroutine[Any, Any, EmbedLists]]:
        """The list faces' call: the store's lists pass through (no round trip via numpy)."""
        loop, engine = self._engine()
        work = engine.embed_lists(
            texts,
            self._options[kind],
            read_cache=self.settings.read_cache,
            write_cache=self.settings.write_cache,
        )
        return loop, work

    # ------------------------------------------------------------------ sync
    def embed_documents(self, texts: Sequence[str]) -> list[list[float]]:
        """Embed documents (with the document prompt/instruction); one vector per text."""
        loop, work = self._lists(texts, "document")
        return loop.run(work).vectors

    def embed_query(self, text: str) -> list[float]:
        """Embed one query (with the query prompt/instruction)."""
        loop, work = self._lists([_single(text)], "query")
        return loop.run(work).vectors[0]

    def embed(
        self, texts: Sequence[str], *, kind: Kind = "document", **cache: Unpack[CacheControl]
    ) -> EmbedResult:
        """Embed texts as queries or documents; the result keeps float32 vectors and counts.

        ``read_cache=False`` recomputes the texts and refreshes their entries;
        ``write_cache=False`` keeps no new vector anywhere (default: the settings').
        """
        loop, work = self._call(texts, kind, cache)
        return loop.run(work)

    def info(self) -> TEIInfo:
        """TEI's ``/info`` (fetched once)."""
        loop, engine = self._engine()
        return loop.run(engine.info())

    def flush(self) -> None:
        """Block until every computed vector is written to the cache."""
        loop, engine = self._engine()
        loop.run(engine.flush())

    def close(self) -> None:
        """Write pending vectors and let go of the engine (closed when no other embedder of
        this process uses it). ``stats`` keep their final values; a later call starts afresh."""
        taken = self._lease.take()
        if taken is not None:
            RUNTIME.release(*taken)
            self._final_stats = taken[1].stats.snapshot()

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
        loop, work = self._lists(texts, "document")
        return (await loop.run_async(work)).vectors

    async def aembed_query(self, text: str) -> list[float]:
        """Async :meth:`embed_query`, from any event loop."""
        loop, work = self._lists([_single(text)], "query")
        return (await loop.run_async(work)).vectors[0]

    async def aembed(
        self, texts: Sequence[str], *, kind: Kind = "document", **cache: Unpack[CacheControl]
    ) -> EmbedResult:
        """Async :meth:`embed`, from any event loop."""
        loop, work = self._call(texts, kind, cache)
        return await loop.run_async(work)

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
        """A snapshot of the counters (hits, misses, TEI requests, retries, cache errors...)
        of the engine this embedder uses, shared with the embedders that share it; after
        :meth:`close`, their final values."""
        engine = self._lease.engine
        return engine.stats.snapshot() if engine is not None else self._final_stats


def _in_multiprocessing_worker() -> bool:
    # A worker has imported multiprocessing already; anyone else need not pay for it.
    multiprocessing = sys.modules.get("multiprocessing")
    return multiprocessing is not None and multiprocessing.parent_process() is not None


def _single(text: str) -> str:
    if not isinstance(text, str):
        raise InputError(
            f"expected one string, got {type(text).__name__}; use embed_documents for lists"
        )
    return text


__all__ = ["CachedEmbedder", "Kind"]
