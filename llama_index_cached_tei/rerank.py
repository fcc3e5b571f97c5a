"""``CachedTEIRerank``: a LlamaIndex node postprocessor that reranks with a TEI reranker, each
(query, text) score cached in Qdrant; a drop-in for ``TextEmbeddingInference``."""

from __future__ import annotations

from typing import Literal

from llama_index.core.callbacks import CBEventType, EventPayload

# Re-exported by llama-index-core without __all__, as its own integrations import it.
from llama_index.core.instrumentation import get_dispatcher  # type: ignore[attr-defined]
from llama_index.core.instrumentation.events.rerank import ReRankEndEvent, ReRankStartEvent
from llama_index.core.postprocessor.types import BaseNodePostprocessor
from llama_index.core.schema import MetadataMode, NodeWithScore, QueryBundle
from pydantic import ConfigDict, Field, SecretStr

from cached_tei import CachedReranker, CachedTEISettings, Rank
from cached_tei.adapter import FaceAdapter, setting

DEFAULT_TOP_N = 5
"""``TextEmbeddingInference``'s default ``top_n``."""

dispatcher = get_dispatcher(__name__)


class CachedTEIRerank(FaceAdapter[CachedReranker], BaseNodePostprocessor):
    """Reranks nodes with TEI's ``/rerank``, computing each (query, text) pair once; keeps the
    ``top_n`` best, best first, each scored by the reranker.

    Takes ``TextEmbeddingInference``'s arguments (``top_n``, ``base_url``, ``timeout``,
    ``truncate_text``, ``auth_token`` as a string, ``model_name``, ``keep_retrieval_score``,
    ``mode``, and ``text_instruction``/``query_instruction``, which a reranker ignores there
    too); ``base_url`` is the reranker's TEI (``rerank_url``, ``CACHED_TEI_RERANK_URL``).
    Every other option of :class:`cached_tei.CachedTEISettings` can be passed by name as for
    ``CachedTEIEmbeddings``. Nothing touches the network until the first call.

    Example:
        .. code-block:: python

            from llama_index_cached_tei import CachedTEIRerank

            reranker = CachedTEIRerank(base_url="http://localhost:8082", top_n=3)
            engine = index.as_query_engine(node_postprocessors=[reranker])
    """

    model_config = ConfigDict(extra="forbid")

    top_n: int = Field(DEFAULT_TOP_N, ge=1, description="Nodes kept, best first.")
    keep_retrieval_score: bool = Field(
        False, description="Keep the retriever's score in metadata['retrieval_score']."
    )
    mode: Literal["text", "full"] = Field(
        "text", description="What is scored: the node's text, or 'full' with its metadata."
    )
    raw_scores: bool = Field(False, description="TEI's raw scores, without its sigmoid.")
    model_name: str = Field("API", description="The model's name, shown in rerank events.")

    # TextEmbeddingInference's names for these settings.
    rerank_url: str | None = setting("rerank_url", "base_url")
    api_key: SecretStr | None = setting("api_key", "auth_token")
    truncate: bool | None = setting("truncate", "truncate_text")
    # Accepted as TextEmbeddingInference accepts it; a reranker applies no instruction.
    document_instruction: str | None = setting("document_instruction", "text_instruction")

    @classmethod
    def class_name(cls) -> str:
        return "CachedTEIRerank"

    def _connect(self, settings: CachedTEISettings) -> CachedReranker:
        return CachedReranker(settings)

    def _postprocess_nodes(
        self, nodes: list[NodeWithScore], query_bundle: QueryBundle | None = None
    ) -> list[NodeWithScore]:
        query = self._start(nodes, query_bundle)
        if not nodes:
            return []
        with self.callback_manager.event(
            CBEventType.RERANKING, payload=_payload(nodes, query, self.top_n)
        ) as event:
            ranks = self._client.rerank(
                query, self._texts(nodes), top_n=self.top_n, raw_scores=self.raw_scores
            )
            ranked = self._ranked(nodes, ranks)
            event.on_end(payload={EventPayload.NODES: ranked})
        dispatcher.event(ReRankEndEvent(nodes=ranked))
        return ranked

    async def _apostprocess_nodes(
        self, nodes: list[NodeWithScore], query_bundle: QueryBundle | None = None
    ) -> list[NodeWithScore]:
        query = self._start(nodes, query_bundle)
        if not nodes:
            return []
        with self.callback_manager.event(
            CBEventType.RERANKING, payload=_payload(nodes, query, self.top_n)
        ) as event:
            ranks = await self._client.arerank(
                query, self._texts(nodes), top_n=self.top_n, raw_scores=self.raw_scores
            )
            ranked = self._ranked(nodes, ranks)
            event.on_end(payload={EventPayload.NODES: ranked})
        dispatcher.event(ReRankEndEvent(nodes=ranked))
        return ranked

    def _start(self, nodes: list[NodeWithScore], query_bundle: QueryBundle | None) -> str:
        """Announce the rerank; the query, or the error ``TextEmbeddingInference`` raises."""
        dispatcher.event(
            ReRankStartEvent(
                query=query_bundle, nodes=nodes, top_n=self.top_n, model_name=self.model_name
            )
        )
        if query_bundle is None:
            raise ValueError("Missing query bundle: pass query_str or query_bundle.")
        return query_bundle.query_str

    def _texts(self, nodes: list[NodeWithScore]) -> list[str]:
        if self.mode == "full":
            return [node.node.get_content(metadata_mode=MetadataMode.EMBED) for node in nodes]
        return [node.text for node in nodes]

    def _ranked(self, nodes: list[NodeWithScore], ranks: list[Rank]) -> list[NodeWithScore]:
        """The ranked nodes, best first, scored by the reranker."""
        ranked = []
        for rank in ranks:
            node = nodes[rank.index]
            if self.keep_retrieval_score:
                node.node.metadata["retrieval_score"] = node.score
            ranked.append(NodeWithScore(node=node.node, score=rank.score))
        return ranked


def _payload(nodes: list[NodeWithScore], query: str, top_n: int) -> dict[str, object]:
    return {EventPayload.NODES: nodes, EventPayload.QUERY_STR: query, EventPayload.TOP_K: top_n}


__all__ = ["DEFAULT_TOP_N", "CachedTEIRerank"]
