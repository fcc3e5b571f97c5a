"""``CachedTEIEmbeddings``: LangChain ``Embeddings`` from TEI with a persistent Qdrant cache."""

from __future__ import annotations

from langchain_core.embeddings import Embeddings
from pydantic import ConfigDict

from cached_tei.adapter import CachedTEIAdapter


class CachedTEIEmbeddings(CachedTEIAdapter, Embeddings):
    """Text embeddings from Hugging Face TEI, cached in Qdrant so no text is embedded twice.

    Every option of :class:`cached_tei.CachedTEISettings` can be passed by name; an option
    left unset comes from its ``CACHED_TEI_*`` environment variable (or ``.env``) and then
    from the default, and the attributes show the values in effect. Nothing touches the
    network until the first call. ``read_cache=False`` recomputes every text (and refreshes
    the cache); ``write_cache=False`` keeps nothing.

    Example:
        .. code-block:: python

            from langchain_cached_tei import CachedTEIEmbeddings

            embeddings = CachedTEIEmbeddings(
                tei_url="http://localhost:8080",
                query_instruction="query: ",
                document_instruction="passage: ",
            )
            vectors = embeddings.embed_documents(["hello", "world"])
            query = embeddings.embed_query("hi")
    """

    model_config = ConfigDict(extra="forbid")

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        """Embed documents (document prompt/instruction applied); one vector per text."""
        return self._client.embed_documents(texts)

    def embed_query(self, text: str) -> list[float]:
        """Embed one query (query prompt/instruction applied)."""
        return self._client.embed_query(text)

    async def aembed_documents(self, texts: list[str]) -> list[list[float]]:
        """Async :meth:`embed_documents`, native (no thread pool), from any event loop."""
        return await self._client.aembed_documents(texts)

    async def aembed_query(self, text: str) -> list[float]:
        """Async :meth:`embed_query`, native (no thread pool), from any event loop."""
        return await self._client.aembed_query(text)


__all__ = ["CachedTEIEmbeddings"]
