"""``/embed_sparse`` and ``/rerank`` cached by the proxy with TEI's exact contract: bodies
byte for byte as TEI's, each text or pair computed once, tenants, Cache-Control, errors."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace

import httpx
import pytest

from tests.tei_emulator import EmulatorServer

from .support import FAST, post

SPLADE = replace(FAST, model_id="emulator/splade", model_type="splade")
RERANKER = replace(FAST, model_id="emulator/reranker", model_type="reranker")
KEYS = ("alpha-key-0123456789", "beta-key-9876543210")
DOCS = [f"passage {i} on subject {i % 4}" for i in range(12)]


@pytest.fixture(scope="module")
def splade() -> Iterator[EmulatorServer]:
    with EmulatorServer(SPLADE) as server:
        yield server


@pytest.fixture(scope="module")
def reranker() -> Iterator[EmulatorServer]:
    with EmulatorServer(RERANKER) as server:
        yield server


@pytest.fixture
def kinds(emu, splade, reranker, make_proxy):
    """A proxy with all three kinds, and the sparse and rerank upstreams' logs emptied."""
    for server in (splade, reranker):
        server.reset_log()
        server.clear_faults()
    return make_proxy(emu.url, sparse_url=splade.url, rerank_url=reranker.url)


SPARSE_BODIES = [
    {"inputs": DOCS[:5]},
    {"inputs": "one single text"},
    {"inputs": DOCS[2:7], "truncate": True, "truncation_direction": "left"},
]
RERANK_BODIES = [
    {"query": "subject 2", "texts": DOCS},
    {"query": "subject 2", "texts": DOCS[:3], "return_text": True},
    {"query": "subject 1", "texts": DOCS[4:9], "raw_scores": True, "truncate": False},
    {"query": "same", "texts": ["twin", "twin", "other"]},  # ties: TEI's order
]


@pytest.mark.parametrize("body", SPARSE_BODIES, ids=range(len(SPARSE_BODIES)))
def test_sparse_answers_are_teis_bytes_cold_and_warm(kinds, splade, body):
    direct = post(splade.url + "/embed_sparse", body)
    splade.reset_log()
    cold = post(kinds.url + "/embed_sparse", body)
    warm = post(kinds.url + "/embed_sparse", body)
    assert cold.status_code == warm.status_code == 200
    assert cold.content == warm.content == direct.content
    texts = body["inputs"] if isinstance(body["inputs"], list) else [body["inputs"]]
    assert warm.headers["x-cache-hits"] == str(len(set(texts)))
    assert [t for r in splade.requests for t in r.texts] == texts  # once, on the cold call


@pytest.mark.parametrize("body", RERANK_BODIES, ids=range(len(RERANK_BODIES)))
def test_rerank_answers_are_teis_bytes_cold_and_warm(kinds, reranker, body):
    direct = post(reranker.url + "/rerank", body)
    reranker.reset_log()
    cold = post(kinds.url + "/rerank", body)
    warm = post(kinds.url + "/rerank", body)
    assert cold.status_code == warm.status_code == 200
    assert cold.content == warm.content == direct.content
    assert reranker.rerank_pairs_computed == len(set(body["texts"]))


def test_only_missing_pairs_reach_tei_in_batches_within_its_limit(emu, reranker, make_proxy):
    reranker.reset_log()
    small = replace(RERANKER, max_client_batch_size=4)
    with EmulatorServer(small) as upstream:
        proxy = make_proxy(emu.url, rerank_url=upstream.url)
        post(proxy.url + "/rerank", {"query": "q", "texts": DOCS[:6]})
        upstream.reset_log()
        answer = post(proxy.url + "/rerank", {"query": "q", "texts": DOCS})
        assert answer.status_code == 200
        assert sorted(r.texts for r in upstream.requests) == sorted([DOCS[6:10], DOCS[10:]])
        # The same model with TEI's default limit answers the whole list at once.
        assert (
            answer.content == post(reranker.url + "/rerank", {"query": "q", "texts": DOCS}).content
        )


def test_tenants_and_cache_control(splade, reranker, emu, make_proxy):
    reranker.reset_log()
    proxy = make_proxy(emu.url, rerank_url=reranker.url, proxy={"api_keys": ",".join(KEYS)})
    body = {"query": "q", "texts": DOCS[:2]}
    for key in KEYS:  # a namespace per key: each computes its own pairs
        headers = {"authorization": f"Bearer {key}"}
        assert post(proxy.url + "/rerank", body, headers=headers).headers["x-cache-misses"] == "2"
        assert post(proxy.url + "/rerank", body, headers=headers).headers["x-cache-hits"] == "2"
    assert reranker.rerank_pairs_computed == 4
    headers = {"authorization": f"Bearer {KEYS[0]}", "cache-control": "no-cache"}
    assert post(proxy.url + "/rerank", body, headers=headers).headers["x-cache-misses"] == "2"
    assert reranker.rerank_pairs_computed == 6
    assert post(proxy.url + "/rerank", body).status_code == 401


@pytest.mark.parametrize(
    ("route", "body", "status", "error"),
    [
        ("/rerank", {"query": "q", "texts": []}, 400, "`texts` cannot be empty"),
        ("/rerank", {"texts": ["a"]}, 422, "missing field `query`"),
        ("/rerank", {"query": "q", "texts": "a"}, 422, "texts: invalid type"),
        ("/rerank", {"query": "q", "texts": ["a"] * 1025}, 422, "batch size 1025 > maximum"),
        ("/embed_sparse", {"inputs": []}, 400, "`inputs` cannot be empty"),
        ("/embed_sparse", {"inputs": ["a", ""]}, 400, "`inputs` cannot be empty"),
        ("/embed_sparse", {"inputs": 5}, 422, "untagged enum Input"),
        ("/embed_sparse", {"inputs": "a", "truncate": "yes"}, 422, "truncate: invalid type"),
    ],
)
def test_errors_are_teis(kinds, splade, reranker, route, body, status, error):
    answer = post(kinds.url + route, body)
    assert answer.status_code == status
    assert error in answer.text
    assert splade.requests == [] and reranker.requests == []


def test_without_their_urls_both_routes_go_to_the_dense_upstream(proxy, emu):
    bodies = {"/rerank": {"query": "q", "texts": ["a"]}, "/embed_sparse": {"inputs": "a"}}
    for route, body in bodies.items():
        direct = post(emu.url + route, body)
        answer = post(proxy.url + route, body)
        assert answer.status_code == direct.status_code == 424
        assert answer.content == direct.content


def test_metrics_count_each_route(kinds):
    post(kinds.url + "/rerank", {"query": "q", "texts": DOCS[:2]})
    post(kinds.url + "/embed_sparse", {"inputs": DOCS[:2]})
    metrics = httpx.get(kinds.url + "/metrics").text
    assert 'route="/rerank",status="200"' in metrics
    assert 'route="/embed_sparse",status="200"' in metrics
    post(kinds.url + "/rerank", {"query": "q", "texts": DOCS[:3]})
    metrics = httpx.get(kinds.url + "/metrics").text
    for route, hits, misses in (("/rerank", 2, 3), ("/embed_sparse", 0, 2)):
        assert f'cached_tei_proxy_texts_total{{result="hit",route="{route}"}} {hits}.0' in metrics
        assert (
            f'cached_tei_proxy_texts_total{{result="miss",route="{route}"}} {misses}.0' in metrics
        )
