"""API keys (Bearer, byte for byte, /health and /metrics public) and the request body limit."""

from __future__ import annotations

import httpx
import pytest
from pydantic import ValidationError

from cached_tei.proxy import ProxySettings
from tests.tei_emulator import EmulatorConfig, EmulatorServer

from .support import post, run_cli

KEYS = "first-key, second-key"


@pytest.fixture
def keyed(emu, make_proxy):
    return make_proxy(emu.url, proxy={"api_keys": KEYS})


REFUSED = [
    None,
    "",
    "Bearer",
    "Bearer wrong",
    "Bearer FIRST-KEY",
    "bearer first-key",
    "Bearer first-ke",
    "Bearer first-keyy",
    "Bearer first-key, second-key",
    "Basic Zmlyc3Qta2V5",
    "first-key",
]


@pytest.mark.parametrize("route", ["/embed", "/", "/v1/embeddings", "/info", "/tokenize", "/nope"])
def test_missing_wrong_or_case_different_keys_are_refused(keyed, emu, route):
    body = {"input": "x"} if route == "/v1/embeddings" else {"inputs": "x"}
    for authorization in REFUSED:
        headers = {} if authorization is None else {"authorization": authorization}
        if route == "/info":
            response = httpx.get(keyed.url + route, headers=headers)
        else:
            response = post(keyed.url + route, body, headers=headers)
        assert (response.status_code, response.content) == (401, b""), authorization
    assert emu.requests == []


@pytest.mark.parametrize("key", ["first-key", "second-key"])
def test_each_key_is_accepted(keyed, key):
    headers = {"authorization": f"Bearer {key}"}
    assert post(keyed.url + "/embed", {"inputs": "keyed"}, headers=headers).status_code == 200
    assert (
        post(keyed.url + "/v1/embeddings", {"input": "keyed"}, headers=headers).status_code == 200
    )
    assert httpx.get(keyed.url + "/info", headers=headers).status_code == 200
    assert post(keyed.url + "/tokenize", {"inputs": "keyed"}, headers=headers).status_code == 200


def test_health_and_metrics_are_public(keyed):
    assert httpx.get(keyed.url + "/health").status_code == 200
    metrics = httpx.get(keyed.url + "/metrics")
    assert metrics.status_code == 200
    assert 'cached_tei_proxy_requests_total{route="/health",status="200"} 1.0' in metrics.text


def test_no_keys_means_no_authentication(proxy):
    assert post(proxy.url + "/embed", {"inputs": "open"}).status_code == 200


def test_the_upstream_key_is_sent_to_tei(tmp_path, make_proxy):
    config = EmulatorConfig(dim=8, step_ms=0.5, per_text_ms=0.0, api_key="tei-secret")
    with EmulatorServer(config) as tei:
        good = make_proxy(tei.url, api_key="tei-secret")
        assert post(good.url + "/embed", {"inputs": "upstream key"}).status_code == 200
        assert post(good.url + "/tokenize", {"inputs": "upstream key"}).status_code == 200
        bad = make_proxy(tei.url, api_key="other", retry_deadline=0.5, max_retries=0)
        refused = post(bad.url + "/embed", {"inputs": "upstream key 2"})
        assert refused.status_code == 502
        assert refused.json()["error_type"] == "Backend"


def test_body_limit(make_proxy, emu):
    proxy = make_proxy(emu.url, proxy={"max_body_bytes": 4096})
    small = post(proxy.url + "/embed", {"inputs": "x" * 3000})
    assert small.status_code == 200
    too_big = post(proxy.url + "/embed", {"inputs": "x" * 5000})
    assert too_big.status_code == 413
    assert too_big.text == "Failed to buffer the request body: length limit exceeded"
    assert too_big.headers["content-type"].startswith("text/plain")

    def chunks():
        for _ in range(10):
            yield b" " * 1000
        yield b'{"inputs": "x"}'

    chunked = httpx.post(
        proxy.url + "/embed", content=chunks(), headers={"content-type": "application/json"}
    )
    assert chunked.status_code == 413
    forwarded = post(proxy.url + "/tokenize", {"inputs": "x" * 5000})
    assert forwarded.status_code == 413
    assert len(emu.requests) == 1  # only the small one


def test_default_body_limit_matches_teis(proxy, emu):
    body = {"inputs": ["y" * 1000] * 2100}  # a little over 2,000,000 bytes
    direct = post(emu.url + "/embed", body)
    through = post(proxy.url + "/embed", body)
    assert (
        (through.status_code, through.text)
        == (direct.status_code, direct.text)
        == (
            413,
            "Failed to buffer the request body: length limit exceeded",
        )
    )


@pytest.mark.parametrize("blank", [" ", ",", "\t", " , ,\t", ",,"])
def test_a_key_list_without_a_key_is_refused_at_start(blank, tmp_path):
    with pytest.raises(ValidationError, match="CACHED_TEI_PROXY_API_KEYS is set but holds no key"):
        ProxySettings(api_keys=blank)
    with pytest.raises(ValidationError, match="CACHED_TEI_PROXY_METRICS_KEY is set but holds no"):
        ProxySettings(metrics_key=blank)
    result = run_cli(
        "serve",
        "--qdrant-path",
        str(tmp_path / "q"),
        env={"CACHED_TEI_PROXY_API_KEYS": blank},
        timeout=30,
    )
    assert result.returncode == 1
    assert result.stderr.strip() == (
        "cached-tei: error: invalid setting: api_keys: Value error, CACHED_TEI_PROXY_API_KEYS "
        "is set but holds no key (only blanks or commas): set it to comma-separated keys, or "
        "unset it (or set it empty) to serve without one"
    )


def test_an_empty_key_list_means_no_authentication():
    assert ProxySettings(api_keys="").keys() == []


def test_metrics_key_guards_metrics_only(emu, make_proxy):
    keyed = make_proxy(emu.url, proxy={"api_keys": KEYS, "metrics_key": "scrape-key"})
    for authorization in [None, "Bearer first-key", "Bearer scrape-ke", "scrape-key"]:
        headers = {} if authorization is None else {"authorization": authorization}
        refused = httpx.get(keyed.url + "/metrics", headers=headers)
        assert (refused.status_code, refused.content) == (401, b""), authorization
    scraped = httpx.get(keyed.url + "/metrics", headers={"authorization": "Bearer scrape-key"})
    assert scraped.status_code == 200
    assert 'cached_tei_proxy_requests_total{route="/metrics",status="401"} 4.0' in scraped.text
    # the metrics key is no API key, and /health stays public
    embed = post(
        keyed.url + "/embed", {"inputs": "x"}, headers={"authorization": "Bearer scrape-key"}
    )
    assert embed.status_code == 401
    assert httpx.get(keyed.url + "/health").status_code == 200


def test_metrics_key_without_api_keys(emu, make_proxy):
    guarded = make_proxy(emu.url, proxy={"metrics_key": "scrape-key"})
    assert httpx.get(guarded.url + "/metrics").status_code == 401
    assert post(guarded.url + "/embed", {"inputs": "open"}).status_code == 200
