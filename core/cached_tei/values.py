"""The values of the two model kinds besides dense vectors: sparse vectors and ranks."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

# The kinds of model TEI serves, as cached-tei names them; each has its own URL setting.
ModelKind = Literal["embedding", "sparse", "rerank"]
URL_SETTINGS: dict[ModelKind, str] = {
    "embedding": "tei_url",
    "sparse": "sparse_url",
    "rerank": "rerank_url",
}


@dataclass(frozen=True)
class SparseVector:
    """TEI's sparse embedding: token ids and their weights, in TEI's order."""

    indices: list[int]
    values: list[float]


@dataclass(frozen=True)
class Rank:
    """One text's place in a rerank: its input index, TEI's score, and the text if asked."""

    index: int
    score: float
    text: str | None = None


__all__ = ["ModelKind", "Rank", "SparseVector"]
