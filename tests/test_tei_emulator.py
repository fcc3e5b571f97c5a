"""Tests of the TEI emulator itself: real HTTP on loopback."""

from __future__ import annotations

import asyncio
import base64
import threading
import time

import httpx
import numpy as np
import pytest

from tests.tei_emulator import (
    EmulatorConfig,
    EmulatorProcess,
    EmulatorServer,
    Fault,
    RecordedRequest,
    expected_score,
    expected_sparse,
    expected_vector,
)
from tests.tei_emulator._core import MODEL_TYPES

CFG = EmulatorConfig(
    dim=32,
    step_ms=2.0,
    per_text_ms=0.1,
    max_input_length=8,
    prompts={"query": "query: ", "passage": "passage: "},
)


@pytest.fixture(scope="module")
def server():
    with EmulatorServer(CFG) as s:
        yield s


@pytest.fixture
def emu(server):
    server.clear_faults()
    server.reset_log()
    yield server
    server.clear_faults()


def post(url: str, body, **kw) -> httpx.Response:
    return httpx.post(url, json=body, timeout=10.0, **kw)


def f32(resp: httpx.Response) -> np.ndarray:
    return np.asarray(resp.json(), dtype=np.float32)


# ---------------------------------------------------------------- vectors


@pytest.mark.parametrize("route", ["/embed", "/"])
def test_single_string_is_2d_and_exact(emu, route):
    r = post(emu.url + route, {"inputs": "hello world"})
    assert r.status_code == 200
    m = f32(r)
    assert m.shape == (1, CFG.dim)
    assert np.array_equal(m[0], expected_vector(CFG, "hello world"))
    assert abs(float(np.linalg.norm(m[0])) - 1.0) < 1e-5
    for h in (
        "x-compute-time",
        "x-total-time",
        "x-tokenization-time",
        "x-queue-time",
        "x-inference-time",
    ):
        assert int(r.headers[h]) >= 0
    assert r.headers["x-compute-characters"] == "11"
    assert r.headers["x-compute-tokens"] == "2"


def test_batch_exact_in_order_with_options(emu):
    texts = ["b", "a", "some longer text here", "b"]
    for opts in [
        {},
        {"normalize": False},
        {"dimensions": 5},
        {"dimensions": 5, "normalize": False},
        {"prompt_name": "query"},
    ]:
        r = post(emu.url + "/embed", {"inputs": texts, **opts})
        assert r.status_code == 200, r.text
        m = f32(r)
        want = np.stack([expected_vector(CFG, t, **opts) for t in texts])
        assert m.shape == want.shape
        assert np.array_equal(m, want), opts
    # Matryoshka: cut first, then normalise
    raw5 = expected_vector(CFG, "x", normalize=False)[:5]
    got = f32(post(emu.url + "/embed", {"inputs": "x", "dimensions": 5}))[0]
    assert np.array_equal(got, raw5 / np.linalg.norm(raw5))


def test_vector_depends_on_model_and_prompt():
    base = expected_vector(CFG, "t")
    assert not np.array_equal(base, expected_vector(EmulatorConfig(dim=32, model_sha="r2"), "t"))
    assert not np.array_equal(base, expected_vector(EmulatorConfig(dim=32, model_id="other"), "t"))
    assert np.array_equal(
        expected_vector(CFG, "t", prompt_name="query"), expected_vector(CFG, "query: t")
    )
    dflt = EmulatorConfig(dim=32, prompts={"query": "query: "}, default_prompt_name="query")
    assert np.array_equal(expected_vector(dflt, "t"), expected_vector(CFG, "query: t"))
    assert expected_vector(CFG, "t").dtype == np.float32


def test_default_prompt_applies_over_http():
    cfg = EmulatorConfig(
        dim=16, step_ms=0, per_text_ms=0, prompts={"q": "q: "}, default_prompt_name="q"
    )
    with EmulatorServer(cfg) as s:
        m = f32(post(s.url + "/embed", {"inputs": "t"}))
        assert np.array_equal(m[0], expected_vector(CFG.__class__(dim=16), "q: t"))


def test_truncation(emu):
    words = [f"w{i}" for i in range(12)]
    text = " ".join(words)
    right = expected_vector(CFG, " ".join(words[:8]))
    left = expected_vector(CFG, " ".join(words[-8:]))
    assert np.array_equal(expected_vector(CFG, text), right)
    assert np.array_equal(expected_vector(CFG, text, truncation_direction="Left"), left)
    for d, want in [("Right", right), ("right", right), ("Left", left), ("left", left)]:
        for trunc in (True, None):
            m = f32(
                post(
                    emu.url + "/embed",
                    {"inputs": [text], "truncate": trunc, "truncation_direction": d},
                )
            )
            assert np.array_equal(m[0], want), (d, trunc)
    r = post(emu.url + "/embed", {"inputs": text, "truncate": False})
    assert r.status_code == 422
    assert r.json() == {
        "error": "Input validation error: `inputs` must have less than 8 tokens. Given: 12",
        "error_type": "Validation",
    }
    with pytest.raises(ValueError, match="must have less than 8 tokens"):
        expected_vector(CFG, text, truncate=False)
    # the prompt counts towards the tokens
    r = post(
        emu.url + "/embed",
        {"inputs": " ".join(words[:8]), "truncate": False, "prompt_name": "query"},
    )
    assert r.json()["error"].endswith("Given: 9")


def test_auto_truncate_false_server():
    cfg = EmulatorConfig(dim=8, max_input_length=4, auto_truncate=False, step_ms=0, per_text_ms=0)
    with EmulatorServer(cfg) as s:
        r = post(s.url + "/embed", {"inputs": "a b c d e"})
        assert r.status_code == 422 and r.json()["error_type"] == "Validation"
        m = f32(post(s.url + "/embed", {"inputs": "a b c d e", "truncate": True}))
        assert np.array_equal(m[0], expected_vector(cfg, "a b c d", truncate=True))
        assert post(s.url + "/info", None).status_code == 405
        assert httpx.get(s.url + "/info").json()["auto_truncate"] is False


# ---------------------------------------------------------------- errors


def test_validation_errors(emu):
    def err(body, status):
        r = post(emu.url + "/embed", body)
        assert r.status_code == status, r.text
        assert r.headers["content-type"].startswith("application/json")
        return r.json()

    assert err({"inputs": []}, 400) == {"error": "`inputs` cannot be empty", "error_type": "Empty"}
    assert err({"inputs": ""}, 400) == {
        "error": "Input validation error: `inputs` cannot be empty",
        "error_type": "Empty",
    }
    assert err({"inputs": ["a", ""]}, 400)["error_type"] == "Empty"
    assert err({"inputs": ["a"] * 40}, 422) == {
        "error": "batch size 40 > maximum allowed batch size 32",
        "error_type": "Validation",
    }
    assert err({"inputs": "a", "dimensions": 0}, 422)["error_type"] == "Validation"
    assert err({"inputs": "a", "dimensions": 33}, 422)["error_type"] == "Validation"
    e = err({"inputs": "a", "prompt_name": "nope"}, 422)
    assert e["error_type"] == "Validation" and "`nope`" in e["error"] and '"query"' in e["error"]
    # character pre-check: 250 x max_input_length
    e = err({"inputs": "x" * 2001, "truncate": False}, 422)
    assert (
        e["error"]
        == "Input validation error: `inputs` must have less than 2000 characters. Given: 2001"
    )
    assert post(emu.url + "/embed", {"inputs": "x" * 2001}).status_code == 200
    assert all(r.status in (400, 422, 200) for r in emu.requests)
    assert emu.embed_texts_computed == 1


def test_plain_text_errors(emu):
    url = emu.url + "/embed"
    r = httpx.post(url, content=b'{"inputs": "a"}', headers={"content-type": "text/plain"})
    assert r.status_code == 415 and not r.headers["content-type"].startswith("application/json")
    r = httpx.post(url, content=b'{"inputs": "a"', headers={"content-type": "application/json"})
    assert r.status_code == 400 and r.headers["content-type"].startswith("text/plain")
    for body in [
        {"inputs": 5},
        {"inputs": ["a", 1]},
        {"inputs": "a", "normalize": "yes"},
        {"input": "a"},
        {"inputs": "a", "dimensions": -1},
        {"inputs": "a", "truncation_direction": "Up"},
    ]:
        r = post(url, body)
        assert r.status_code == 422 and r.headers["content-type"].startswith("text/plain"), body


def test_payload_limit():
    cfg = EmulatorConfig(dim=8, payload_limit=10_000, step_ms=0, per_text_ms=0)
    with EmulatorServer(cfg) as s:
        r = post(s.url + "/embed", {"inputs": ["x" * 1000] * 11})
        assert r.status_code == 413 and r.headers["content-type"].startswith("text/plain")
        assert post(s.url + "/embed", {"inputs": ["x" * 1000] * 9}).status_code == 200


def test_permits_overloaded():
    cfg = EmulatorConfig(dim=8, max_concurrent_requests=3, step_ms=400, per_text_ms=0)
    with EmulatorServer(cfg) as s:
        out = {}
        t = threading.Thread(
            target=lambda: out.setdefault("a", post(s.url + "/embed", {"inputs": ["a", "b"]}))
        )
        t.start()
        deadline = time.monotonic() + 5
        while s.stats()["permits_in_use"] < 2 and time.monotonic() < deadline:
            time.sleep(0.005)
        r = post(s.url + "/embed", {"inputs": ["c", "d"]})
        assert r.status_code == 429
        assert r.json() == {"error": "Model is overloaded", "error_type": "Overloaded"}
        assert "retry-after" not in r.headers
        assert post(s.url + "/embed", {"inputs": "c"}).status_code == 200  # 1 permit still free
        t.join()
        assert out["a"].status_code == 200
        assert s.stats()["permits_in_use"] == 0


# ---------------------------------------------------------------- batching


async def test_concurrent_requests_merge_into_one_step():
    cfg = EmulatorConfig(dim=8, step_ms=150, per_text_ms=1)
    with EmulatorServer(cfg) as s:
        async with httpx.AsyncClient(timeout=10, limits=httpx.Limits(max_connections=20)) as c:
            await c.get(s.url + "/health")
            rs = await asyncio.gather(
                *(c.post(s.url + "/embed", json={"inputs": f"t{i}"}) for i in range(10))
            )
        assert all(r.status_code == 200 for r in rs)
        for i, r in enumerate(rs):
            assert np.array_equal(f32(r)[0], expected_vector(cfg, f"t{i}"))
        assert s.embed_texts_computed == 10
        assert sum(s.step_sizes) == 10
        assert s.steps <= 2, s.step_sizes


def test_max_batch_tokens_splits_steps():
    cfg = EmulatorConfig(dim=8, step_ms=50, per_text_ms=0, max_batch_tokens=4)

    async def go(url):
        async with httpx.AsyncClient(timeout=10) as c:
            return await asyncio.gather(
                *(c.post(url + "/embed", json={"inputs": ["a b", "c d"]}) for _ in range(4))
            )

    with EmulatorServer(cfg) as s:
        rs = asyncio.run(go(s.url))
        assert all(r.status_code == 200 for r in rs)
        assert s.steps == 4 and s.step_sizes == [2, 2, 2, 2]


# ---------------------------------------------------------------- faults


def test_status_faults(emu):
    emu.inject(
        Fault("status", status=429),
        Fault("status", status=503),
        Fault("status", status=424),
        Fault("status", status=422),
        Fault("status", status=502),
        Fault("status", status=504, count=2),
    )
    expect = [(429, "Overloaded"), (503, "Unhealthy"), (424, "Backend"), (422, "Validation")]
    for status, etype in expect:
        r = post(emu.url + "/embed", {"inputs": "a"})
        assert r.status_code == status and r.json()["error_type"] == etype
    assert r.json()["error"]  # non-empty message
    for status in (502, 504, 504):
        r = post(emu.url + "/", {"inputs": "a"})
        assert r.status_code == status and r.headers["content-type"].startswith("text/html")
        assert "<center>nginx</center>" in r.text
    assert post(emu.url + "/embed", {"inputs": "a"}).status_code == 200
    log = emu.requests
    assert [x.status for x in log] == [429, 503, 424, 422, 502, 504, 504, 200]
    assert [x.fault for x in log][:7] == ["status"] * 7 and log[-1].fault is None
    assert emu.embed_texts_computed == 1


def test_faults_do_not_touch_other_routes_and_clear(emu):
    emu.inject(Fault("status", status=503, count=5))
    assert httpx.get(emu.url + "/health").status_code == 200
    assert httpx.get(emu.url + "/info").status_code == 200
    r = post(emu.url + "/v1/embeddings", {"input": "a"})
    assert r.status_code == 503 and r.json() == {
        "message": "unhealthy",
        "code": 503,
        "type": "Unhealthy",
    }
    emu.clear_faults()
    assert post(emu.url + "/embed", {"inputs": "a"}).status_code == 200


def test_drop_and_delay_faults(emu):
    emu.inject(Fault("drop"), Fault("delay", seconds=0.3))
    with pytest.raises(httpx.RemoteProtocolError):
        post(emu.url + "/embed", {"inputs": "a"})
    t0 = time.monotonic()
    r = post(emu.url + "/embed", {"inputs": "a"})
    assert r.status_code == 200 and time.monotonic() - t0 >= 0.3
    log = emu.requests
    assert (log[0].status, log[0].fault, log[0].texts) == (0, "drop", ["a"])
    assert (log[1].status, log[1].fault) == (200, "delay")


# ---------------------------------------------------------------- other routes


def test_openai_route(emu):
    texts = ["a b c", "d"]
    r = post(emu.url + "/v1/embeddings", {"input": texts, "model": "whatever"})
    assert r.status_code == 200
    body = r.json()
    assert body["object"] == "list" and body["model"] == CFG.model_id
    assert body["usage"] == {"prompt_tokens": 4, "total_tokens": 4}
    for i, d in enumerate(body["data"]):
        assert d["object"] == "embedding" and d["index"] == i
        assert np.array_equal(
            np.asarray(d["embedding"], dtype=np.float32), expected_vector(CFG, texts[i])
        )
    r = post(
        emu.url + "/v1/embeddings", {"input": "a b c", "encoding_format": "base64", "dimensions": 7}
    )
    v = np.frombuffer(base64.b64decode(r.json()["data"][0]["embedding"]), dtype="<f4")
    assert np.array_equal(v, expected_vector(CFG, "a b c", dimensions=7))
    r = post(emu.url + "/v1/embeddings", {"input": ["a"] * 33})
    assert r.status_code == 422
    assert r.json() == {
        "message": "batch size 33 > maximum allowed batch size 32",
        "code": 422,
        "type": "Validation",
    }
    assert post(emu.url + "/v1/embeddings", {"input": []}).json()["type"] == "Empty"
    rec = emu.requests[0]
    assert isinstance(rec, RecordedRequest) and rec.route == "/v1/embeddings" and rec.texts == texts


def test_info_health_metrics(emu):
    info = httpx.get(emu.url + "/info").json()
    for key in (
        "model_id",
        "model_sha",
        "model_dtype",
        "served_model_name",
        "model_type",
        "max_concurrent_requests",
        "max_input_length",
        "max_batch_tokens",
        "max_batch_requests",
        "max_client_batch_size",
        "auto_truncate",
        "tokenization_workers",
        "version",
        "sha",
        "docker_label",
    ):
        assert key in info
    assert info["version"] == "1.9.3" and info["model_type"] == {"embedding": {"pooling": "mean"}}
    assert (
        info["max_client_batch_size"] == 32
        and info["max_input_length"] == 8
        and info["auto_truncate"] is True
    )
    r = httpx.get(emu.url + "/health")
    assert r.status_code == 200 and r.content == b""
    emu.set_healthy(False)
    try:
        r = httpx.get(emu.url + "/health")
        assert r.status_code == 503 and r.json() == {
            "error": "unhealthy",
            "error_type": "Unhealthy",
        }
    finally:
        emu.set_healthy(True)
    post(emu.url + "/embed", {"inputs": ["a", "b"]})
    text = httpx.get(emu.url + "/metrics").text
    assert 'te_request_count{method="batch"} 1' in text and "te_queue_size" in text


def test_forwardable_routes(emu):
    toks = httpx.post(emu.url + "/tokenize", json={"inputs": "hello big world"}).json()
    assert [t["text"] for t in toks[0]] == ["hello", "big", "world"] and toks[0][1]["start"] == 6
    pred = httpx.post(emu.url + "/predict", json={"inputs": "a"}).json()
    assert {p["label"] for p in pred} == {"LABEL_0", "LABEL_1"}
    assert len(httpx.post(emu.url + "/predict", json={"inputs": [["a"], ["b", "c"]]}).json()) == 2
    sim = httpx.post(
        emu.url + "/similarity", json={"inputs": {"source_sentence": "a", "sentences": ["a", "b"]}}
    ).json()
    assert abs(sim[0] - 1.0) < 1e-5 and len(sim) == 2
    assert emu.requests == []  # not embed routes


def test_rerank_follows_the_oracle_and_tei_order():
    cfg = EmulatorConfig(dim=16, model_type="reranker", step_ms=0, per_text_ms=0)
    texts = ["a", "b", "c", "a"]  # equal scores: TEI sorts ascending, then reverses
    with EmulatorServer(cfg) as s:
        ranks = post(s.url + "/rerank", {"query": "q", "texts": texts, "return_text": True})
        raw = post(s.url + "/rerank", {"query": "q", "texts": texts, "raw_scores": True})
        assert s.rerank_pairs_computed == 8
        assert [r.texts for r in s.requests] == [texts, texts]
    scores = [expected_score(cfg, "q", t) for t in texts]
    order = sorted(range(4), key=lambda i: scores[i])[::-1]
    assert [(r["index"], r["text"]) for r in ranks.json()] == [(i, texts[i]) for i in order]
    assert [np.float32(r["score"]) for r in ranks.json()] == [scores[i] for i in order]
    assert order.index(3) < order.index(0)  # the tie: last index first
    logits = {r["index"]: np.float32(r["score"]) for r in raw.json()}
    assert logits == {i: expected_score(cfg, "q", t, raw_scores=True) for i, t in enumerate(texts)}


def test_embed_sparse_follows_the_oracle():
    cfg = EmulatorConfig(dim=64, model_type="splade", step_ms=0, per_text_ms=0)
    with EmulatorServer(cfg) as s:
        body = post(s.url + "/embed_sparse", {"inputs": ["a", "b c"]}).json()
        assert s.sparse_texts_computed == 2
    for text, entries in zip(["a", "b c"], body, strict=True):
        indices, values = expected_sparse(cfg, text)
        assert [e["index"] for e in entries] == indices and indices == sorted(indices)
        assert np.array_equal(np.array([e["value"] for e in entries], dtype=np.float32), values)


@pytest.mark.parametrize(
    ("model_type", "path", "body", "message"),
    [
        ("embedding", "/rerank", {"query": "q", "texts": ["a"]}, "not a re-ranker model"),
        ("embedding", "/embed_sparse", {"inputs": "a"}, "SPLADE"),
        ("reranker", "/embed", {"inputs": "a"}, "not an embedding model"),
        ("reranker", "/embed_sparse", {"inputs": "a"}, "SPLADE"),
        ("splade", "/rerank", {"query": "q", "texts": ["a"]}, "not a re-ranker model"),
    ],
)
def test_a_route_the_model_lacks_is_tei_424(model_type, path, body, message):
    cfg = EmulatorConfig(dim=8, model_type=model_type, step_ms=0, per_text_ms=0)
    with EmulatorServer(cfg) as s:
        r = post(s.url + path, body)
        info = httpx.get(s.url + "/info").json()
    assert r.status_code == 424 and r.json()["error_type"] == "Backend"
    assert message in r.json()["error"]
    assert info["model_type"] == MODEL_TYPES[model_type]


def test_api_key():
    cfg = EmulatorConfig(dim=8, api_key="s3cret", step_ms=0, per_text_ms=0)
    with EmulatorServer(cfg) as s:
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "s3cret"}):
            r = post(s.url + "/embed", {"inputs": "a"}, headers=headers)
            assert r.status_code == 401 and r.content == b""
            assert httpx.get(s.url + "/info", headers=headers).status_code == 401
        assert httpx.get(s.url + "/health").status_code == 200
        assert httpx.get(s.url + "/metrics").status_code == 200
        ok = {"Authorization": "Bearer s3cret"}
        assert post(s.url + "/embed", {"inputs": "a"}, headers=ok).status_code == 200
        assert post(s.url + "/v1/embeddings", {"input": "a"}, headers=ok).status_code == 200
        assert httpx.get(s.url + "/info", headers=ok).status_code == 200


# ---------------------------------------------------------------- lifecycle


def test_restart_on_same_port():
    s = EmulatorServer(EmulatorConfig(dim=8, step_ms=0, per_text_ms=0)).start()
    try:
        port = s.port
        assert port > 0 and s.url == f"http://127.0.0.1:{port}"
        client = httpx.Client(timeout=5)
        assert client.post(s.url + "/embed", json={"inputs": "a"}).status_code == 200
        s.stop()
        with pytest.raises(httpx.ConnectError):
            httpx.get(s.url + "/health", timeout=2)
        s.start()
        assert s.port == port
        assert client.post(s.url + "/embed", json={"inputs": "a"}).status_code == 200
        assert len(s.requests) == 2
        client.close()
    finally:
        s.stop()


def test_emulator_process():
    cfg = EmulatorConfig(dim=8, step_ms=1, per_text_ms=0, prompts={"q": "q: "})
    p = EmulatorProcess(cfg)
    with p:
        assert p.port > 0
        m = f32(post(p.url + "/embed", {"inputs": ["a", "b"], "prompt_name": "q"}))
        assert np.array_equal(
            m, np.stack([expected_vector(cfg, t, prompt_name="q") for t in ["a", "b"]])
        )
        p.inject(Fault("status", status=429), Fault("drop"))
        assert post(p.url + "/embed", {"inputs": "a"}).status_code == 429
        with pytest.raises(httpx.RemoteProtocolError):
            post(p.url + "/embed", {"inputs": "a"})
        reqs = p.requests()
        assert [r.status for r in reqs] == [200, 429, 0] and reqs[0].texts == ["a", "b"]
        assert p.embed_texts_computed == 2
        p.reset_log()
        assert p.requests() == []
        port = p.port
        p.kill()
        with pytest.raises(httpx.ConnectError):
            httpx.get(p.url + "/health", timeout=2)
        p.start()
        assert p.port == port and httpx.get(p.url + "/health").status_code == 200
