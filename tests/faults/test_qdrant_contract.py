"""What the server store sends is what Qdrant 1.19 (the stack's pinned server) understands.

A Qdrant server ignores request fields it does not know, so a field that the pinned server
lacks (``metadata`` before 1.16) fails silently there. The stand-in refuses such requests
instead; these tests check that it does, and that the store's whole lifecycle passes.
"""

from __future__ import annotations

import json
import time
import uuid

import httpx
import numpy as np
import pytest

from cached_tei import CachedEmbedder
from cached_tei.keys import Namespace
from cached_tei.settings import CachedTEISettings
from cached_tei.stores.server import QdrantServerStore
from tests.tei_emulator import EmulatorServer

from .fake_qdrant import SPEC, FakeQdrant, QdrantContract

pytestmark = pytest.mark.timeout(60)

ONE = "/collections/{collection_name}"
CREATE_BODY = {"vectors": {"size": 4, "distance": "Dot"}, "metadata": {"namespace": {"a": 1}}}


@pytest.fixture(scope="module")
def contract() -> QdrantContract:
    return QdrantContract()


def test_the_pinned_spec_is_qdrant_1_19() -> None:
    assert json.loads(SPEC.read_text())["info"]["version"] == "v1.19.x"


@pytest.mark.parametrize(
    ("method", "path", "query", "body", "problem"),
    [
        ("PUT", ONE, {}, {**CREATE_BODY, "metadta": {}}, "'metadta' was unexpected"),
        ("PUT", ONE, {}, {"vectors": {"size": 4, "distance": "Dot", "dtype": "x"}}, "vectors"),
        ("PUT", ONE, {}, {**CREATE_BODY, "metadata": 5}, "metadata"),  # nullable is no wildcard
        ("POST", ONE + "/points", {}, {"ids": [1], "with_vectors": True}, "'with_vectors'"),
        ("POST", ONE + "/points", {"wait": "true"}, {"ids": [1]}, "query parameter 'wait'"),
        ("GET", ONE + "/exists", {}, {"x": 1}, "takes no body"),
        ("POST", "/collections/{collection_name}/points/lookup", {}, {}, "not a Qdrant 1.19"),
    ],
)
def test_the_contract_refuses_what_qdrant_1_19_does_not_define(
    contract: QdrantContract,
    method: str,
    path: str,
    query: dict[str, str],
    body: object,
    problem: str,
) -> None:
    problems = contract.violations(method, path, query, body)
    assert len(problems) == 1 and problem in problems[0], problems


def test_the_contract_accepts_documented_requests(contract: QdrantContract) -> None:
    assert contract.violations("PUT", ONE, {"timeout": "5"}, CREATE_BODY) == []
    assert contract.violations("PUT", ONE, {}, {**CREATE_BODY, "metadata": None}) == []
    retrieve = {"ids": [str(uuid.uuid4()), 7], "with_vector": True, "with_payload": ["created"]}
    assert contract.violations("POST", ONE + "/points", {"consistency": "all"}, retrieve) == []
    expired = {"filter": {"must": [{"key": "created", "range": {"lt": 5}}]}}
    assert contract.violations("POST", ONE + "/points/delete", {"wait": "true"}, expired) == []
    assert contract.violations("GET", "/collections", {}, None) == []


def test_the_stand_in_answers_an_unknown_field_as_qdrant_answers_errors() -> None:
    with FakeQdrant() as qdrant:
        response = httpx.put(f"{qdrant.url}/collections/c", json={**CREATE_BODY, "metadta": {}})
        assert response.status_code == 400
        body = response.json()
        assert set(body) == {"status", "time"}
        assert "'metadta' was unexpected" in body["status"]["error"]
        assert qdrant.violations == [
            "PUT /collections/{collection_name}: body: Additional properties are not allowed "
            "('metadta' was unexpected)"
        ]
        assert not qdrant.backend.collection_exists("c")


async def test_the_store_lifecycle_sends_only_what_qdrant_1_19_knows() -> None:
    namespace = Namespace("org/model", "abc123", True, False, "Right", None, None)
    ids = [str(uuid.uuid4()) for _ in range(5)]
    vectors = np.arange(20, dtype=np.float32).reshape(5, 4)
    with FakeQdrant() as qdrant:
        settings = CachedTEISettings(
            qdrant_url=qdrant.url, qdrant_shards=2, qdrant_replication_factor=1, store_text=True
        )
        store = QdrantServerStore(settings)
        try:
            assert (await store.lookup(namespace, ids)).ids == []
            await store.upsert(namespace, ids, vectors, [f"text {i}" for i in range(5)])
            rows = await store.lookup(namespace, ids)
            assert rows.ids == ids
            assert np.array_equal(rows.vectors, vectors)
            (info,) = await store.collections()
            assert (info.namespace, info.dimension, info.count) == (
                namespace.descriptor(),
                4,
                5,
            )
            assert await store.prune(int(time.time()) - 60) == 0
            assert await store.prune(int(time.time()) + 60) == 5
            await store.remember_info("http://tei", {"model_id": "org/model"})
            assert await store.recall_info("http://tei") == {"model_id": "org/model"}
            assert await store.recall_info("http://other") is None
            assert await store.claim_prune("this process", 60)
            assert not await store.claim_prune("another process", 60)
            assert await store.clear() == 0
        finally:
            await store.aclose()
        assert qdrant.violations == []
        sent = set(qdrant.requests)
    assert sent >= {
        "GET /collections",
        "GET /collections/{collection_name}/exists",
        "GET /collections/{collection_name}",
        "PUT /collections/{collection_name}",
        "PUT /collections/{collection_name}/index",
        "PUT /collections/{collection_name}/points",
        "POST /collections/{collection_name}/points",
        "POST /collections/{collection_name}/points/count",
        "POST /collections/{collection_name}/points/delete",
        "DELETE /collections/{collection_name}",
    }


def test_the_engine_sends_only_what_qdrant_1_19_knows(tei: EmulatorServer) -> None:
    with FakeQdrant() as qdrant:
        settings = {"tei_url": tei.url, "qdrant_url": qdrant.url, "ttl": 3600, "lru_bytes": 0}
        with CachedEmbedder(**settings) as first:
            first.embed([f"contract {i}" for i in range(10)])
        with CachedEmbedder(**settings) as second:
            assert second.embed([f"contract {i}" for i in range(10)]).hits == 10
        assert qdrant.violations == []
