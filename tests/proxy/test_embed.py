"""POST /embed, POST / and POST /v1/embeddings: TEI's shapes, exact vectors, cache hits."""

from __future__ import annotations

import base64
import concurrent.futures

import httpx
import numpy as np
import pytest

from tests.tei_emulator import expected_vector

from .support import FAST, post, texts_sent


def matrix(response: httpx.Response) -> np.ndarray:
    return np.asarray(response.json(), dtype=np.float32)


@pytest.mark.parametrize("route", ["/embed", "/"])
def test_single_string_gives_2d_exact_vectors_then_a_hit(proxy, emu, route):
    first = post(proxy.url + route, {"inputs": f"single {route}"})
    assert first.status_code == 200, first.text
    assert first.headers["content-type"] == "application/json"
    assert matrix(first).shape == (1, FAST.dim)
    assert np.array_equal(matrix(first)[0], expected_vector(FAST, f"single {route}"))
    assert (first.headers["x-cache-hits"], first.headers["x-cache-misses"]) == ("0", "1")
    assert first.headers["x-compute-characters"] == str(len(f"single {route}"))
    assert int(first.headers["x-total-time"]) >= 0 and int(first.headers["x-compute-time"]) >= 0

    second = post(proxy.url + route, {"inputs": f"single {route}"})
    assert second.content == first.content
    assert (second.headers["x-cache-hits"], second.headers["x-cache-misses"]) == ("1", "0")
    assert texts_sent(emu) == [f"single {route}"]


def test_batch_keeps_order_and_duplicates_and_only_misses_reach_tei(proxy, emu):
    post(proxy.url + "/embed", {"inputs": ["b1", "b2"]})
    emu.reset_log()
    texts = ["b3", "b1", "b3", "b2", "b4"]
    response = post(proxy.url + "/embed", {"inputs": texts})
    assert response.status_code == 200
    expected = np.stack([expected_vector(FAST, t) for t in texts])
    assert np.array_equal(matrix(response), expected)
    assert sorted(texts_sent(emu)) == ["b3", "b4"]
    assert (response.headers["x-cache-hits"], response.headers["x-cache-misses"]) == ("2", "2")


def test_options_reach_tei_and_get_their_own_cache_entries(proxy, emu):
    text = " ".join(f"w{i}" for i in range(20))  # longer than max_input_length=16 words
    bodies = [
        {"inputs": [text], "normalize": False},
        {"inputs": [text], "truncate": True, "truncation_direction": "left"},
        {"inputs": [text], "truncate": True, "truncation_direction": "Right"},
        {"inputs": [text], "dimensions": 8},
        {"inputs": [text], "prompt_name": "query"},
    ]
    expected = [
        expected_vector(FAST, text, normalize=False),
        expected_vector(FAST, text, truncate=True, truncation_direction="Left"),
        expected_vector(FAST, text, truncate=True, truncation_direction="Right"),
        expected_vector(FAST, text, dimensions=8),
        expected_vector(FAST, text, prompt_name="query"),
    ]
    for body, vector in zip(bodies, expected, strict=True):
        response = post(proxy.url + "/embed", body)
        assert response.status_code == 200, (body, response.text)
        assert np.array_equal(matrix(response)[0], vector), body
    assert len(emu.requests) == len(bodies)
    recorded = emu.requests
    assert recorded[0].normalize is False
    assert recorded[1].truncation_direction == "Left"
    assert recorded[3].dimensions == 8 and recorded[4].prompt_name == "query"
    for body in bodies:
        assert post(proxy.url + "/embed", body).headers["x-cache-hits"] == "1"
    assert len(emu.requests) == len(bodies)


def test_batches_over_teis_limit_are_split(proxy, emu):
    texts = [f"split {i}" for i in range(3 * FAST.max_client_batch_size + 5)]
    response = post(proxy.url + "/embed", {"inputs": texts})
    assert response.status_code == 200, response.text
    assert np.array_equal(matrix(response), np.stack([expected_vector(FAST, t) for t in texts]))
    sizes = [len(r.texts) for r in emu.requests]
    assert max(sizes) <= FAST.max_client_batch_size and sum(sizes) == len(texts)
    assert len(sizes) == 4


def test_the_proxys_own_batch_limit(make_proxy, emu):
    proxy = make_proxy(emu.url, proxy={"max_inputs": 40})
    ok = post(proxy.url + "/embed", {"inputs": [f"lim {i}" for i in range(40)]})
    assert ok.status_code == 200
    refused = post(proxy.url + "/embed", {"inputs": [f"lim {i}" for i in range(41)]})
    assert refused.status_code == 422
    assert refused.json() == {
        "error": "batch size 41 > maximum allowed batch size 40",
        "error_type": "Validation",
    }
    assert httpx.get(proxy.url + "/info").json()["max_client_batch_size"] == 40


def test_concurrent_requests_for_the_same_texts_reach_tei_once(proxy, emu):
    texts = [f"together {i}" for i in range(10)]
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        responses = list(
            pool.map(lambda _: post(proxy.url + "/embed", {"inputs": texts}), range(8))
        )
    assert all(r.status_code == 200 for r in responses)
    assert all(r.content == responses[0].content for r in responses)
    assert sorted(texts_sent(emu)) == sorted(texts)


def test_token_ids_are_forwarded_untouched(proxy, emu):
    body = {"inputs": [[101, 2023, 102]]}
    through_proxy = post(proxy.url + "/embed", body)
    direct = post(emu.url + "/embed", body)
    assert (through_proxy.status_code, through_proxy.text) == (direct.status_code, direct.text)


# ---------------------------------------------------------------- OpenAI route


def test_openai_float_and_base64(proxy, emu):
    texts = ["open ai one", "open ai two"]
    floats = post(proxy.url + "/v1/embeddings", {"input": texts, "model": "anything"})
    assert floats.status_code == 200, floats.text
    body = floats.json()
    assert body["object"] == "list" and body["model"] == FAST.model_id
    assert body["usage"] == {"prompt_tokens": 6, "total_tokens": 6}
    assert [d["index"] for d in body["data"]] == [0, 1]
    assert all(d["object"] == "embedding" for d in body["data"])
    for item, text in zip(body["data"], texts, strict=True):
        assert np.array_equal(
            np.asarray(item["embedding"], np.float32), expected_vector(FAST, text)
        )

    encoded = post(proxy.url + "/v1/embeddings", {"input": texts, "encoding_format": "base64"})
    for item, text in zip(encoded.json()["data"], texts, strict=True):
        vector = np.frombuffer(base64.b64decode(item["embedding"]), dtype="<f4")
        assert np.array_equal(vector, expected_vector(FAST, text))
    assert encoded.headers["x-cache-hits"] == "2"
    assert texts_sent(emu) == texts


def test_openai_single_string_and_dimensions(proxy, emu):
    response = post(proxy.url + "/v1/embeddings", {"input": "short one", "dimensions": 4})
    data = response.json()["data"]
    assert len(data) == 1
    assert np.array_equal(
        np.asarray(data[0]["embedding"], np.float32),
        expected_vector(FAST, "short one", dimensions=4),
    )
    assert emu.requests[0].dimensions == 4


def test_openai_and_native_routes_share_entries(proxy, emu):
    post(proxy.url + "/embed", {"inputs": ["shared entry"]})
    response = post(proxy.url + "/v1/embeddings", {"input": ["shared entry"]})
    assert response.headers["x-cache-hits"] == "1"
    assert texts_sent(emu) == ["shared entry"]


@pytest.mark.parametrize(
    ("given", "direction"),
    [("RIGHT", "Right"), ("LEFT", "Left"), ("rIgHt", "Right"), ("left", "Left")],
)
def test_truncation_direction_in_any_case(proxy, emu, given, direction):
    text = " ".join(f"case{i}" for i in range(20))  # longer than max_input_length=16 words
    body = {"inputs": [text], "truncate": True, "truncation_direction": given}
    response = post(proxy.url + "/embed", body)
    assert response.status_code == 200, response.text
    assert np.array_equal(
        matrix(response)[0],
        expected_vector(FAST, text, truncate=True, truncation_direction=direction),
    )
    assert [r.truncation_direction for r in emu.requests] == [direction]


def test_an_unknown_truncation_direction_is_refused_as_tei_does(proxy, emu):
    response = post(proxy.url + "/embed", {"inputs": "x", "truncation_direction": "middle"})
    assert (response.status_code, response.text) == (
        422,
        "Failed to deserialize the JSON body into the target type: truncation_direction: "
        "unknown variant `middle`, expected `Left` or `Right`",
    )
    assert emu.requests == []


@pytest.mark.parametrize(
    ("content_type", "status"),
    [
        ("application/json", 200),
        ("Application/JSON; charset=utf-8", 200),
        ("application/vnd.api+json", 200),
        ("text/plain", 415),
        ("", 415),
    ],
)
def test_the_body_is_read_as_json_by_its_media_type_only(proxy, content_type, status):
    """TEI's rule: application/json or any application/*+json, whatever the case and the
    parameters; anything else is 415 before the body is read."""
    headers = {"Content-Type": content_type} if content_type else {}
    response = httpx.post(
        proxy.url + "/embed", content=b'{"inputs": "media type"}', headers=headers, timeout=30
    )
    assert response.status_code == status, response.text
    if status == 200:
        assert np.array_equal(matrix(response)[0], expected_vector(FAST, "media type"))
