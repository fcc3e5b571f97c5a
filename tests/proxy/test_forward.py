"""Other TEI routes are forwarded untouched: same status, body and TEI headers as the upstream."""

from __future__ import annotations

import httpx
import pytest

from .support import post

CASES = [
    ("/tokenize", {"inputs": "hello forwarded world"}),
    ("/tokenize", {"inputs": ["a b", "c"], "prompt_name": "query"}),
    ("/tokenize", {"inputs": []}),
    ("/rerank", {"query": "q", "texts": ["a", "b c"], "return_text": True}),
    ("/rerank", {"query": "q", "texts": [str(i) for i in range(40)]}),
    ("/embed_sparse", {"inputs": ["sparse one"]}),
    ("/predict", {"inputs": "classify me"}),
    ("/predict", {"inputs": 5}),
    ("/similarity", {"inputs": {"source_sentence": "s", "sentences": ["t", "u"]}}),
    ("/embed_all", {"inputs": "not served by this upstream"}),
    ("/decode", {"ids": [1, 2]}),
]


@pytest.mark.parametrize(("route", "body"), CASES, ids=lambda v: repr(v)[:30])
def test_forwarded_like_the_upstream(proxy, emu, route, body):
    direct = post(emu.url + route, body)
    forwarded = post(proxy.url + route, body)
    assert forwarded.status_code == direct.status_code
    assert forwarded.content == direct.content
    assert forwarded.headers.get("content-type") == direct.headers.get("content-type")


def test_forwarding_keeps_trace_headers_and_drops_the_proxy_key(make_proxy, emu, monkeypatch):
    seen: list[httpx.Request] = []
    proxy = make_proxy(emu.url, proxy={"api_keys": "proxy-key"})
    original = proxy.engine.tei.request

    async def spy(method, path, *, content=None, headers=None):
        seen.append((method, path, dict(headers or {})))
        return await original(method, path, content=content, headers=headers)

    monkeypatch.setattr(proxy.engine.tei, "request", spy)
    response = post(
        proxy.url + "/tokenize?x=1",
        {"inputs": "t"},
        headers={
            "authorization": "Bearer proxy-key",
            "traceparent": "00-abc-def-01",
            "x-other": "no",
        },
    )
    assert response.status_code == 200
    method, path, headers = seen[0]
    assert (method, path) == ("POST", "/tokenize?x=1")
    assert headers["traceparent"] == "00-abc-def-01"
    assert "authorization" not in headers and "x-other" not in headers


def test_forwarded_route_without_json_content_type(proxy, emu):
    direct = httpx.post(emu.url + "/tokenize", content=b'{"inputs":"x"}')
    forwarded = httpx.post(proxy.url + "/tokenize", content=b'{"inputs":"x"}')
    assert (
        (forwarded.status_code, forwarded.text)
        == (direct.status_code, direct.text)
        == (
            415,
            "Expected request with `Content-Type: application/json`",
        )
    )
