"""``CachedEmbedder``: the engine behind a sync and async API usable from anywhere."""

from __future__ import annotations

from collections.abc import Coroutine, Sequence
from typing import Any, Literal

from typing_extensions import TypedDict, Unpack

from .engine import EmbedLists, EmbedResult
from .errors import InputError
from .face import Face
from .keys import EmbedOptions
from .loop import LoopThread
from .settings import CachedTEISettings

Kind = Literal["query", "document"]
KINDS: tuple[Kind, ...] = ("query", "document")


class CacheControl(TypedDict, total=False):
    """Per-call cache control; a key left out takes the settings' default."""

    read_cache: bool  # False: recompute the texts and refresh their entries (no-cache)
    write_cache: bool  # False: keep no new vector anywhere, memory included (no-store)


class CachedEmbedder(Face):
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
        super().__init__(settings, **overrides)
        self._options = {kind: EmbedOptions.from_settings(self.settings, kind) for kind in KINDS}

    def __repr__(self) -> str:
        settings = self.settings
        store = (
            settings.cache_location if settings.qdrant_url else f"embedded:{settings.qdrant_path}"
        )
        return f"CachedEmbedder(tei_url={self.settings.tei_url!r}, store={store!r})"

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


def _single(text: str) -> str:
    if not isinstance(text, str):
        raise InputError(
            f"expected one string, got {type(text).__name__}; use embed_documents for lists"
        )
    return text


__all__ = ["CachedEmbedder", "Kind"]
