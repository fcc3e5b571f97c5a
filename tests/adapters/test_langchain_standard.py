"""langchain-tests' standard suites, unchanged, against the TEI emulator."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import pytest
from langchain_tests.integration_tests import EmbeddingsIntegrationTests
from langchain_tests.unit_tests import EmbeddingsUnitTests

from langchain_cached_tei import CachedTEIEmbeddings
from tests.tei_emulator import EmulatorServer


class TestCachedTEIEmbeddingsUnit(EmbeddingsUnitTests):
    @property
    def embeddings_class(self) -> type[CachedTEIEmbeddings]:
        return CachedTEIEmbeddings

    @property
    def embedding_model_params(self) -> dict[str, Any]:
        # A closed port: construction must not touch the network.
        return {"tei_url": "http://127.0.0.1:9", "query_instruction": "query: "}

    @property
    def init_from_env_params(self) -> tuple[dict[str, str], dict[str, Any], dict[str, Any]]:
        return (
            {
                "CACHED_TEI_URL": "http://tei.example:8080",
                "CACHED_TEI_API_KEY": "tei-secret",
                "CACHED_TEI_QDRANT_URL": "http://qdrant.example:6333",
                "CACHED_TEI_QDRANT_API_KEY": "qdrant-secret",
            },
            {"query_prompt_name": "query"},
            {
                "tei_url": "http://tei.example:8080",
                "api_key": "tei-secret",
                "qdrant_url": "http://qdrant.example:6333",
                "qdrant_api_key": "qdrant-secret",
                "query_prompt_name": "query",
            },
        )


class TestCachedTEIEmbeddingsIntegration(EmbeddingsIntegrationTests):
    """Each ``model`` the suite builds gets its own embedded store folder."""

    _tei_url: str
    _cache_root: Path

    @pytest.fixture(autouse=True, scope="class")
    @classmethod
    def _tei_for_class(
        cls, emulator: EmulatorServer, tmp_path_factory: pytest.TempPathFactory
    ) -> None:
        cls._tei_url = emulator.url
        cls._cache_root = tmp_path_factory.mktemp("standard-suite")

    @property
    def embeddings_class(self) -> type[CachedTEIEmbeddings]:
        return CachedTEIEmbeddings

    @property
    def embedding_model_params(self) -> dict[str, Any]:
        return {
            "tei_url": self._tei_url,
            "qdrant_path": str(self._cache_root / uuid.uuid4().hex),
            "query_prompt_name": "query",
            "document_prompt_name": "passage",
        }
