"""Secrets stay secret and texts stay out of the cache.

- The cache stores no text by default: every payload in the embedded store and in a Qdrant
  server is inspected.
- API keys (TEI's, Qdrant's, the proxy's) never appear in reprs, serialisations, error
  messages, logs or metrics.
- The proxy refuses missing, wrong and differently-cased keys, comparing in constant time.
"""

from __future__ import annotations

import hmac
import logging
from pathlib import Path
from typing import Any

import httpx
import pytest

from cached_tei import CachedEmbedder, CachedTEISettings
from cached_tei.errors import TEIError
from cached_tei.proxy import ProxySettings
from langchain_cached_tei import CachedTEIEmbeddings as LangChainEmbeddings
from llama_index_cached_tei import CachedTEIEmbeddings as LlamaEmbeddings
from tests.tei_emulator import EmulatorConfig, EmulatorServer

from .conftest import InThreadProxy, Tally, embedded_points, free_port
from .fake_qdrant import FakeQdrant

TEI_KEY = "tei-key-SECRET-0f9e8d"
QDRANT_KEY = "qdrant-key-SECRET-7a6b5c"
PROXY_KEYS = ("proxy-key-one-SECRET-1234", "proxy-key-two-SECRET-5678")
SECRETS = (TEI_KEY, QDRANT_KEY, *PROXY_KEYS, "SECRET")

pytestmark = pytest.mark.timeout(60)


def _assert_no_secret(where: str, text: str) -> None:
    for secret in SECRETS:
        assert secret not in text, (
            f"{secret!r} leaked into {where}: ...{text[max(0, text.find(secret) - 80) :][:200]}"
        )


def _log_text(caplog: pytest.LogCaptureFixture) -> str:
    parts = []
    for record in caplog.records:
        parts.append(record.getMessage())
        if record.exc_info:
            parts.append(logging.Formatter().formatException(record.exc_info))
    return "\n".join(parts)


# ---------------------------------------------------------------------------- texts
def test_embedded_cache_stores_no_text_by_default(
    tei: EmulatorServer, tmp_path: Path, tally: Tally
) -> None:
    texts = [f"confidential document number {i}" for i in range(50)]
    with CachedEmbedder(tei_url=tei.url, qdrant_path=tmp_path / "default") as embedder:
        tally.check(tei.config, texts, embedder.embed(texts).vectors)
    points = embedded_points(tmp_path / "default")
    assert len(points) == 50
    for _, payload in points.values():
        assert set(payload) == {"created", "crc32"}, payload
    raw = b"".join(p.read_bytes() for p in (tmp_path / "default").rglob("*") if p.is_file())
    assert b"confidential document" not in raw, "the text is somewhere in the store's files"
    # the control: with store_text=True the same inspection finds the texts
    with CachedEmbedder(
        tei_url=tei.url, qdrant_path=tmp_path / "with_text", store_text=True
    ) as embedder:
        embedder.embed(texts)
    stored = {
        payload.get("text") for _, payload in embedded_points(tmp_path / "with_text").values()
    }
    assert stored == set(texts)


def test_server_cache_stores_no_text_by_default(tei: EmulatorServer, tally: Tally) -> None:
    texts = [f"confidential server document {i}" for i in range(50)]
    with FakeQdrant() as qdrant:
        with CachedEmbedder(tei_url=tei.url, qdrant_url=qdrant.url) as embedder:
            tally.check(tei.config, texts, embedder.embed(texts).vectors)
        payloads = qdrant.payloads()
    assert len(payloads) == 50
    assert all(set(p) == {"created", "crc32"} for p in payloads), payloads[:3]


# ---------------------------------------------------------------------------- engine secrets
def test_engine_keys_absent_from_reprs_errors_and_logs(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, tally: Tally
) -> None:
    """TEI refuses the key (401) and Qdrant is down: the errors and every log line are free of
    keys."""
    caplog.set_level(logging.DEBUG)
    config = EmulatorConfig(step_ms=1.0, per_text_ms=0.01, api_key="the-real-tei-key")
    with EmulatorServer(config) as tei, FakeQdrant() as qdrant:
        qdrant.mode = "down"
        embedder = CachedEmbedder(
            tei_url=tei.url,
            api_key=TEI_KEY,
            qdrant_url=qdrant.url,
            qdrant_api_key=QDRANT_KEY,
            retry_deadline=1,
        )
        try:
            for text in (
                repr(embedder),
                repr(embedder.settings),
                str(embedder.settings),
                embedder.settings.model_dump_json(),
                str(embedder.settings.model_dump()),
            ):
                _assert_no_secret("a repr or dump of the settings", text)
            with pytest.raises(TEIError) as caught:
                embedder.embed(["hello"])
            tally.fail()
        finally:
            embedder.close()
    assert caught.value.status == 401
    _assert_no_secret("the error message", str(caught.value) + repr(caught.value))
    _assert_no_secret("the error's cause", repr(caught.value.__cause__))
    _assert_no_secret("the logs", _log_text(caplog))


def test_adapter_keys_absent_from_reprs_and_serialisations(tmp_path: Path) -> None:
    lc = LangChainEmbeddings(
        tei_url="http://127.0.0.1:9",
        api_key=TEI_KEY,
        qdrant_api_key=QDRANT_KEY,
        qdrant_path=str(tmp_path / "lc"),
    )
    for text in (repr(lc), str(lc), lc.model_dump_json(), str(lc.model_dump())):
        _assert_no_secret("the LangChain adapter", text)
    li = LlamaEmbeddings(
        tei_url="http://127.0.0.1:9",
        api_key=TEI_KEY,
        qdrant_api_key=QDRANT_KEY,
        qdrant_path=str(tmp_path / "li"),
    )
    for text in (repr(li), str(li), str(li.to_dict()), li.to_json(), li.model_dump_json()):
        _assert_no_secret("the LlamaIndex adapter", text)


# ---------------------------------------------------------------------------- the proxy's keys
@pytest.fixture
def keyed_proxy(tei: EmulatorServer, tmp_path: Path, caplog: pytest.LogCaptureFixture):
    caplog.set_level(logging.DEBUG)
    settings = CachedTEISettings(tei_url=tei.url, qdrant_path=tmp_path / "q", api_key=TEI_KEY)
    proxy = ProxySettings(api_keys=",".join(PROXY_KEYS), log_level="debug")
    with InThreadProxy(settings, proxy) as server:
        yield server


def test_proxy_refuses_missing_wrong_and_recased_keys(
    keyed_proxy: InThreadProxy, tei: EmulatorServer, caplog: pytest.LogCaptureFixture, tally: Tally
) -> None:
    url = keyed_proxy.url
    key = PROXY_KEYS[0]
    refused = {
        "missing": {},
        "empty": {"Authorization": ""},
        "wrong": {"Authorization": "Bearer not-the-key"},
        "prefix of the key": {"Authorization": f"Bearer {key[:-1]}"},
        "key plus a byte": {"Authorization": f"Bearer {key}x"},
        "upper-cased key": {"Authorization": f"Bearer {key.upper()}"},
        "lower-cased scheme": {"Authorization": f"bearer {key}"},
        "upper-cased scheme": {"Authorization": f"BEARER {key}"},
        "no scheme": {"Authorization": key},
        "basic scheme": {"Authorization": f"Basic {key}"},
        "both keys": {"Authorization": f"Bearer {PROXY_KEYS[0]},{PROXY_KEYS[1]}"},
        "other header": {"X-API-Key": key},
    }
    with httpx.Client(timeout=10) as client:
        for name, headers in refused.items():
            for route, body in (
                ("/embed", {"inputs": "x"}),
                ("/v1/embeddings", {"input": "x"}),
                ("/tokenize", {"inputs": "x"}),
            ):
                r = client.post(url + route, json=body, headers=headers)
                tally.fail()
                assert r.status_code == 401 and r.content == b"", (
                    name,
                    route,
                    r.status_code,
                    r.text,
                )
            assert client.get(url + "/info", headers=headers).status_code == 401, name
        for k in PROXY_KEYS:
            r = client.post(
                url + "/embed", json={"inputs": ["ok"]}, headers={"Authorization": f"Bearer {k}"}
            )
            assert r.status_code == 200
            tally.check(tei.config, ["ok"], r.json())
        # public routes, as TEI: /health and /metrics need no key
        assert client.get(url + "/health").status_code == 200
        metrics = client.get(url + "/metrics")
        assert metrics.status_code == 200
        _assert_no_secret("the metrics", metrics.text)
        _assert_no_secret(
            "/info", client.get(url + "/info", headers={"Authorization": f"Bearer {key}"}).text
        )
    assert not [r for r in tei.requests if not r.texts or r.texts == ["x"]], (
        "a refused request reached TEI"
    )
    _assert_no_secret("the proxy's logs", _log_text(caplog))


def test_proxy_key_comparison_is_constant_time(
    keyed_proxy: InThreadProxy, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every request compares the whole header against every key with hmac.compare_digest,
    whether it matches or not, so timing reveals neither which key nor how much matched."""
    import cached_tei.proxy.auth as auth

    calls: list[tuple[int, int]] = []
    real = hmac.compare_digest

    def counting(a: bytes, b: bytes) -> bool:
        calls.append((len(a), len(b)))
        return real(a, b)

    monkeypatch.setattr(auth.hmac, "compare_digest", counting)
    per_request = []
    with httpx.Client(timeout=10) as client:
        for header in (
            f"Bearer {PROXY_KEYS[0]}",
            f"Bearer {PROXY_KEYS[1]}",
            "Bearer x",
            "",
            f"Bearer {PROXY_KEYS[0][:5]}",
        ):
            calls.clear()
            client.post(
                keyed_proxy.url + "/embed",
                json={"inputs": "timing"},
                headers={"Authorization": header} if header else {},
            )
            per_request.append(len(calls))
    assert per_request == [len(PROXY_KEYS)] * 5, per_request


def test_upstream_key_absent_from_proxy_errors(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, tally: Tally
) -> None:
    """TEI refuses the proxy's upstream key: the client's error and the logs do not show it."""
    caplog.set_level(logging.DEBUG)
    config = EmulatorConfig(step_ms=1.0, per_text_ms=0.01, api_key="the-real-tei-key")
    with EmulatorServer(config) as tei:
        settings = CachedTEISettings(
            tei_url=tei.url, qdrant_path=tmp_path / "q", api_key=TEI_KEY, retry_deadline=1
        )
        with InThreadProxy(settings, ProxySettings(api_keys=PROXY_KEYS[0])) as server:
            with httpx.Client(
                timeout=10, headers={"Authorization": f"Bearer {PROXY_KEYS[0]}"}
            ) as client:
                responses = [
                    client.post(server.url + "/embed", json={"inputs": ["a"]}),
                    client.post(server.url + "/v1/embeddings", json={"input": ["a"]}),
                    client.post(server.url + "/tokenize", json={"inputs": "a"}),
                    client.get(server.url + "/info"),
                ]
                metrics = client.get(server.url + "/metrics").text
    tally.fail(len(responses))
    for r in responses:
        assert r.status_code >= 400
        _assert_no_secret(f"the answer to {r.request.url.path}", r.text + str(r.headers))
    _assert_no_secret("the metrics", metrics)
    _assert_no_secret("the logs", _log_text(caplog))


def test_query_string_secrets_never_reach_a_log(tei: EmulatorServer, start_proxy: Any) -> None:
    """Keys sent in a query string (``api_key=``, ``key=``, ``token=``, bare) are in no log
    line: not in the access log, not in a failed forward's warning."""
    dead_tei = f"http://127.0.0.1:{free_port()}"
    auth = {"Authorization": f"Bearer {PROXY_KEYS[0]}"}
    proxies = [
        start_proxy(
            url,
            args=("--access-log", "true", "--log-level", "debug"),
            CACHED_TEI_PROXY_API_KEYS=PROXY_KEYS[0],
            CACHED_TEI_RETRY_DEADLINE="0.5",
        )
        for url in (tei.url, dead_tei)
    ]
    with httpx.Client(timeout=10) as client:
        for proxy in proxies:
            for method, target in (
                ("POST", "/embed?api_key=SECRET-q1"),
                ("POST", "/v1/embeddings?key=SECRET-q2&x=1"),
                ("POST", "/tokenize?token=SECRET-q3"),
                ("GET", "/info?SECRET-q4"),
                ("GET", "/health?access_token=SECRET-q5"),
                ("POST", "/nowhere?api_key=SECRET-q6"),
            ):
                body = {"input" if "v1" in target else "inputs": "query string"}
                client.request(method, proxy.url + target, json=body, headers=auth)
                client.request(method, proxy.url + target, json=body)  # refused: 401
    for proxy in proxies:
        proxy.close()
        log = proxy.log()
        assert '"POST /embed?*** HTTP/1.1" 401' in log, log[-2000:]
        assert '"POST /tokenize?*** HTTP/1.1" ' in log, log[-2000:]
        _assert_no_secret("the proxy's log", log)
    assert "forwarding /tokenize?*** failed" in proxies[1].log()
