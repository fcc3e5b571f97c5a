"""Error bodies and statuses: the proxy answers exactly as TEI (here its emulator) does."""

from __future__ import annotations

import httpx
import pytest

from tests.tei_emulator import Fault

from .support import FAST, post

LONG = " ".join(f"w{i}" for i in range(FAST.max_input_length + 4))

# (route, raw body or JSON, content type): sent to the proxy and to the emulator alike.
PARITY = [
    ("/embed", b'{"inputs": "x"}', "text/plain"),
    ("/embed", b'{"inputs": "x"}', None),
    ("/embed", b'{"inputs": [', "application/json"),
    ("/embed", [1, 2], None),
    ("/embed", {"input": "x"}, None),
    ("/embed", {"inputs": 5}, None),
    ("/embed", {"inputs": [1, "a"]}, None),
    ("/embed", {"inputs": ["a", None]}, None),
    ("/embed", {"inputs": "x", "normalize": "yes"}, None),
    ("/embed", {"inputs": "x", "truncate": 1}, None),
    ("/embed", {"inputs": "x", "truncation_direction": "up"}, None),
    ("/embed", {"inputs": "x", "prompt_name": 5}, None),
    ("/embed", {"inputs": "x", "dimensions": -1}, None),
    ("/embed", {"inputs": "x", "dimensions": "3"}, None),
    ("/embed", {"inputs": []}, None),
    ("/embed", {"inputs": ""}, None),
    ("/embed", {"inputs": ["a", ""]}, None),
    ("/embed", {"inputs": LONG, "truncate": False}, None),
    ("/embed", {"inputs": "x", "prompt_name": "nope"}, None),
    ("/embed", {"inputs": "x", "dimensions": 0}, None),
    ("/embed", {"inputs": "x", "dimensions": 999}, None),
    ("/", {"inputs": []}, None),
    ("/", {"inputs": 5}, None),
    ("/v1/embeddings", {"input": []}, None),
    ("/v1/embeddings", {"input": ""}, None),
    ("/v1/embeddings", {"inputs": "x"}, None),
    ("/v1/embeddings", {"input": "x", "encoding_format": "hex"}, None),
    ("/v1/embeddings", {"input": "x", "dimensions": 999}, None),
    ("/v1/embeddings", {"input": "x", "model": 3}, None),
    ("/v1/embeddings", b"not json", "application/json"),
]


def send(url: str, body: object, content_type: str | None) -> httpx.Response:
    if isinstance(body, bytes):
        headers = {"content-type": content_type} if content_type else {}
        return httpx.post(url, content=body, headers=headers, timeout=30)
    return httpx.post(url, json=body, timeout=30)


@pytest.mark.parametrize(("route", "body", "content_type"), PARITY, ids=lambda v: repr(v)[:40])
def test_same_error_as_tei(proxy, emu, route, body, content_type):
    expected = send(emu.url + route, body, content_type)
    actual = send(proxy.url + route, body, content_type)
    assert expected.status_code >= 400
    assert actual.status_code == expected.status_code
    assert (
        actual.headers["content-type"].split(";")[0]
        == expected.headers["content-type"].split(";")[0]
    )
    if expected.headers["content-type"].startswith("application/json"):
        assert actual.json() == expected.json()
    else:
        assert actual.text == expected.text


def test_errors_are_never_partial(proxy, emu):
    texts = [f"partial {i}" for i in range(FAST.max_client_batch_size + 8)]
    emu.inject(Fault("status", status=424))
    response = post(proxy.url + "/embed", {"inputs": texts})
    assert response.status_code == 424
    assert response.json() == {
        "error": "Backend error: Inference failed (injected fault)",
        "error_type": "Backend",
    }
    again = post(proxy.url + "/embed", {"inputs": texts})
    assert again.status_code == 200 and len(again.json()) == len(texts)


@pytest.mark.parametrize(
    ("status", "native", "openai"),
    [
        (
            429,
            (429, {"error": "Model is overloaded", "error_type": "Overloaded"}),
            (429, {"message": "Model is overloaded", "code": 429, "type": "Overloaded"}),
        ),
        (
            503,
            (503, {"error": "unhealthy", "error_type": "Unhealthy"}),
            (503, {"message": "unhealthy", "code": 503, "type": "Unhealthy"}),
        ),
        (
            502,
            (
                503,
                {
                    "error": "upstream TEI is unavailable: 502 Bad Gateway",
                    "error_type": "Unhealthy",
                },
            ),
            (
                503,
                {
                    "message": "upstream TEI is unavailable: 502 Bad Gateway",
                    "code": 503,
                    "type": "Unhealthy",
                },
            ),
        ),
        (
            500,
            (
                502,
                {
                    "error": "upstream TEI failed: 500 Internal Server Error",
                    "error_type": "Backend",
                },
            ),
            (
                502,
                {
                    "message": "upstream TEI failed: 500 Internal Server Error",
                    "code": 502,
                    "type": "Backend",
                },
            ),
        ),
    ],
)
def test_upstream_failures_after_retries(proxy, emu, status, native, openai):
    emu.inject(Fault("status", status=status, count=3))  # the test settings retry twice
    response = post(proxy.url + "/embed", {"inputs": [f"fails {status}"]})
    assert (response.status_code, response.json()) == native
    emu.clear_faults()
    emu.inject(Fault("status", status=status, count=3))
    response = post(proxy.url + "/v1/embeddings", {"input": [f"fails {status}"]})
    assert (response.status_code, response.json()) == openai


def test_transient_failures_are_retried_invisibly(proxy, emu):
    emu.inject(Fault("status", status=503), Fault("drop"))
    response = post(proxy.url + "/embed", {"inputs": ["flaky upstream"]})
    assert response.status_code == 200


def test_upstream_down(make_proxy, emu):
    closed = httpx.URL(emu.url).copy_with(port=1)
    proxy = make_proxy(str(closed), retry_deadline=0.5, max_retries=1)
    response = post(proxy.url + "/embed", {"inputs": ["nobody home"]})
    assert response.status_code == 503
    body = response.json()
    assert body["error_type"] == "Unhealthy" and body["error"].startswith(
        "upstream TEI is unavailable"
    )
    health = httpx.get(proxy.url + "/health")
    assert (health.status_code, health.json()) == (
        503,
        {"error": "unhealthy", "error_type": "Unhealthy"},
    )
    forwarded = post(proxy.url + "/tokenize", {"inputs": "x"})
    assert forwarded.status_code == 503 and forwarded.json()["error_type"] == "Unhealthy"


def test_unknown_routes_and_methods_are_empty_like_axum(proxy):
    unknown = post(proxy.url + "/nope", {})
    assert (unknown.status_code, unknown.content) == (404, b"")
    wrong_method = httpx.get(proxy.url + "/embed")
    assert (wrong_method.status_code, wrong_method.content) == (405, b"")
