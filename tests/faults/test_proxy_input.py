"""Bad and hostile input at the proxy: fuzzing against TEI's own OpenAPI spec, explicit hostile
cases answered as TEI answers them, and a flood of concurrent connections.

The proxy runs in-process (uvicorn on loopback) in front of the TEI emulator; the emulator,
written to TEI's contract, is the reference for "what TEI would answer".
"""

from __future__ import annotations

import asyncio
import collections
import json
import socket
import time
from collections.abc import Iterator
from typing import Any

import httpx
import numpy as np
import pytest
import schemathesis
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode

from cached_tei import CachedTEISettings
from cached_tei.proxy import ProxySettings
from tests.tei_emulator import EmulatorConfig, EmulatorServer, expected_vector

from .conftest import _TALLIES, SPEC, InThreadProxy, Tally

pytestmark = pytest.mark.timeout(180)

CONFIG = EmulatorConfig(
    step_ms=1.0, per_text_ms=0.01, max_input_length=64, prompts={"query": "query: "}
)
FUZZ_EXAMPLES = 25  # per operation and generation mode (bounded: ~600 requests in all)
TEI_PLAIN_STATUSES = {400, 401, 404, 405, 413, 415, 422}  # TEI's own non-JSON error answers


@pytest.fixture(scope="module")
def stack(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[EmulatorServer, InThreadProxy]]:
    tmp = tmp_path_factory.mktemp("proxy-input")
    with EmulatorServer(CONFIG) as tei:
        settings = CachedTEISettings(
            tei_url=tei.url, qdrant_path=tmp / "q", retry_deadline=2, max_retries=2
        )
        with InThreadProxy(settings, ProxySettings(max_inputs=64, max_body_bytes=100_000)) as proxy:
            yield tei, proxy


def _shape_problem(path: str, status: int, headers: Any, body: bytes) -> str | None:
    """Why an answer is not one TEI could give, or None."""
    if status >= 500 and status != 503:
        return f"server error {status}"
    if status < 400:
        return None
    ctype = headers.get("content-type", "")
    if isinstance(ctype, list):  # schemathesis' responses give each header's values as a list
        ctype = ", ".join(ctype)
    if "json" not in ctype:
        return None if status in TEI_PLAIN_STATUSES else f"non-JSON {status} ({ctype})"
    try:
        data = json.loads(body)
    except ValueError:
        return f"invalid JSON error body {body[:80]!r}"
    if path == "/v1/embeddings":
        ok = isinstance(data, dict) and {"message", "code", "type"} <= set(data)
    else:
        ok = isinstance(data, dict) and {"error", "error_type"} <= set(data)
    return None if ok else f"error body not in TEI's shape: {data!r:.120}"


# ---------------------------------------------------------------------------- fuzz
FUZZ = Tally("fuzz (schemathesis, TEI 1.9.3 OpenAPI)")
_TALLIES.append(FUZZ)


def _operations() -> list[Any]:
    schema = schemathesis.openapi.from_path(str(SPEC))
    return [result.ok() for result in schema.get_all_operations()]


def _expected_for(body: dict[str, Any], text: str) -> np.ndarray:
    return expected_vector(
        CONFIG,
        text,
        normalize=body.get("normalize") if body.get("normalize") is not None else True,
        truncate=body.get("truncate"),
        truncation_direction=(body.get("truncation_direction") or "Right").capitalize(),
        prompt_name=body.get("prompt_name"),
        dimensions=body.get("dimensions"),
    )


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["positive", "negative"])
def test_fuzz_against_tei_openapi(stack: tuple[EmulatorServer, InThreadProxy], mode: str) -> None:
    """Every route of TEI's spec (the proxy serves all: cached, own, or forwarded), with
    schemathesis-generated bodies: no 500, no hang, every error in TEI's shape, and every
    /embed answer equal to the oracle."""
    tei, proxy = stack
    problems: list[str] = []
    outcomes = FUZZ.extra.setdefault("outcomes", collections.Counter())
    generation = GenerationMode.POSITIVE if mode == "positive" else GenerationMode.NEGATIVE
    for operation in _operations():

        @hypothesis_settings(
            max_examples=FUZZ_EXAMPLES,
            deadline=None,
            database=None,
            derandomize=True,
            suppress_health_check=list(HealthCheck),
        )
        @given(case=operation.as_strategy(generation_mode=generation))
        def run(case: Any) -> None:
            FUZZ.sent += 1
            try:
                response = case.call(base_url=proxy.url, timeout=15)
            except Exception as exc:  # a hang or a dropped connection
                FUZZ.failed += 1
                problems.append(f"{case.method} {case.path}: {exc!r:.200}")
                return
            outcomes[f"{mode} {case.path} {response.status_code}"] += 1
            problem = _shape_problem(
                case.path, response.status_code, response.headers, response.content
            )
            if problem:
                FUZZ.failed += 1
                problems.append(f"{case.method} {case.path} {case.body!r:.150}: {problem}")
            if (
                case.path == "/embed"
                and response.status_code == 200
                and isinstance(case.body, dict)
            ):
                inputs = case.body.get("inputs")
                texts = [inputs] if isinstance(inputs, str) else inputs
                if isinstance(texts, list) and all(isinstance(t, str) for t in texts):
                    got = response.json()
                    if len(got) != len(texts):
                        FUZZ.wrong += 1
                        problems.append(f"{len(got)} vectors for {case.body!r:.150}")
                        return
                    for text, row in zip(texts, got, strict=True):
                        try:
                            good = np.array_equal(
                                np.asarray(row, dtype=np.float32), _expected_for(case.body, text)
                            )
                        except ValueError:
                            good = False  # the proxy answered where TEI refuses
                        if not good:
                            FUZZ.wrong += 1
                            problems.append(f"wrong vector for {case.body!r:.150}")

        try:
            run()
        except Unsatisfiable:
            # No invalid input exists for a route without parameters (GET /health).
            outcomes[f"{mode} {operation.path} (no such input)"] += 1
    assert not problems, "\n".join(problems[:20])


# ---------------------------------------------------------------------------- explicit cases
LONG = " ".join(f"w{i}" for i in range(500))  # 500 tokens > max_input_length 64
HOSTILE: dict[str, tuple[str, bytes, dict[str, str]]] = {
    "empty list": ("/embed", b'{"inputs": []}', {}),
    "empty string": ("/embed", b'{"inputs": ""}', {}),
    "empty string in a list": ("/embed", b'{"inputs": ["a", ""]}', {}),
    "whitespace only": ("/embed", b'{"inputs": "   \\t\\n "}', {}),
    "non-string item": ("/embed", b'{"inputs": ["a", 1]}', {}),
    "null item": ("/embed", b'{"inputs": ["a", null]}', {}),
    "nested lists": ("/embed", b'{"inputs": [["a", "b"]]}', {}),
    "object inputs": ("/embed", b'{"inputs": {"a": 1}}', {}),
    "token ids": ("/embed", b'{"inputs": [101, 2023, 102]}', {}),
    "batch of token ids": ("/embed", b'{"inputs": [[101, 2023], [101]]}', {}),
    "negative token id": ("/embed", b'{"inputs": [-1]}', {}),
    "long text, truncate": ("/embed", json.dumps({"inputs": LONG, "truncate": True}).encode(), {}),
    "long text, no truncate": (
        "/embed",
        json.dumps({"inputs": LONG, "truncate": False}).encode(),
        {},
    ),
    "body over the limit": ("/embed", json.dumps({"inputs": "x" * 150_000}).encode(), {}),
    "too many inputs": (
        "/embed",
        json.dumps({"inputs": [f"t{i}" for i in range(65)]}).encode(),
        {},
    ),
    "invalid UTF-8": ("/embed", b'{"inputs": "caf\xc3\x28 \xff"}', {}),
    "lone surrogate": ("/embed", b'{"inputs": "a \\ud800 b"}', {}),
    "lone low surrogate": ("/embed", b'{"inputs": ["\\udc00"]}', {}),
    "NUL bytes": ("/embed", b'{"inputs": ["a\\u0000b", "\\u0000"]}', {}),
    "unknown fields": ("/embed", b'{"inputs": "known", "frobnicate": [1, 2], "model": "x"}', {}),
    "wrong type normalize": ("/embed", b'{"inputs": "a", "normalize": "yes"}', {}),
    "wrong type truncate": ("/embed", b'{"inputs": "a", "truncate": 1}', {}),
    "wrong direction": ("/embed", b'{"inputs": "a", "truncation_direction": "Up"}', {}),
    "bad dimensions": ("/embed", b'{"inputs": "a", "dimensions": 100000}', {}),
    "negative dimensions": ("/embed", b'{"inputs": "a", "dimensions": -3}', {}),
    "unknown prompt": ("/embed", b'{"inputs": "a", "prompt_name": "nope"}', {}),
    "missing inputs": ("/embed", b'{"input": "a"}', {}),
    "not an object": ("/embed", b'["a", "b"]', {}),
    "malformed JSON": ("/embed", b'{"inputs": "a"', {}),
    "empty body": ("/embed", b"", {}),
    "missing content type": ("/embed", b'{"inputs": "a"}', {"content-type": ""}),
    "text/plain content type": ("/embed", b'{"inputs": "a"}', {"content-type": "text/plain"}),
    "deep nesting": ("/embed", b'{"inputs": ' + b"[" * 5000 + b"]" * 5000 + b"}", {}),
    "huge number": ("/embed", b'{"inputs": "a", "dimensions": 1e400}', {}),
    "root / empty list": ("/", b'{"inputs": []}', {}),
    "openai empty list": ("/v1/embeddings", b'{"input": []}', {}),
    "openai empty string": ("/v1/embeddings", b'{"input": ""}', {}),
    "openai bad encoding": ("/v1/embeddings", b'{"input": "a", "encoding_format": "hex"}', {}),
    "openai token ids": ("/v1/embeddings", b'{"input": [101, 2023]}', {}),
    "openai nested": ("/v1/embeddings", b'{"input": [["a"]]}', {}),
    "openai lone surrogate": ("/v1/embeddings", b'{"input": "\\ud83d"}', {}),
    "forwarded, malformed": ("/tokenize", b'{"inputs": ', {}),
    "forwarded, missing content type": (
        "/rerank",
        b'{"query": "a", "texts": ["b"]}',
        {"content-type": ""},
    ),
}


def _send(
    client: httpx.Client, base: str, path: str, body: bytes, headers: dict[str, str]
) -> httpx.Response:
    sent = {"content-type": "application/json", **headers}
    sent = {k: v for k, v in sent.items() if v}
    return client.post(base + path, content=body, headers=sent, timeout=30)


@pytest.mark.parametrize("name", list(HOSTILE))
def test_hostile_input_gets_teis_answer(
    stack: tuple[EmulatorServer, InThreadProxy], name: str, tally: Tally
) -> None:
    """Each case: no 500, the same status and error type as TEI itself (the emulator), and, when
    it succeeds, TEI's own vectors."""
    tei, proxy = stack
    path, body, headers = HOSTILE[name]
    with httpx.Client() as client:
        ours = _send(client, proxy.url, path, body, headers)
        theirs = _send(client, tei.url, path, body, headers)
    tally.sent += 1
    tally.extra.update(status=ours.status_code, tei_status=theirs.status_code)
    problem = _shape_problem(path, ours.status_code, ours.headers, ours.content)
    assert problem is None, (problem, ours.text[:300])
    if name in ("too many inputs",):  # the proxy splits batches; its own limit is max_inputs=64
        assert ours.status_code == 422 and ours.json()["error_type"] == "Validation"
        assert "batch size 65 > maximum allowed batch size 64" in ours.json()["error"]
        return
    if name == "body over the limit":  # the proxy's max_body_bytes (100 kB here) answers first
        assert ours.status_code == 413 and theirs.status_code == 200
        assert ours.text == "Failed to buffer the request body: length limit exceeded"
        return
    assert ours.status_code == theirs.status_code, (ours.text[:300], theirs.text[:300])
    if "json" in ours.headers.get("content-type", "") and ours.status_code >= 400:
        key = "type" if path == "/v1/embeddings" else "error_type"
        assert ours.json()[key] == theirs.json()[key]
    if ours.status_code == 200:
        assert ours.json() == theirs.json() if path != "/v1/embeddings" else True
        if path == "/embed":
            data = json.loads(body)
            inputs = data["inputs"]
            texts = [inputs] if isinstance(inputs, str) else inputs
            if all(isinstance(t, str) for t in texts):
                tally.sent -= 1
                tally.check(CONFIG, texts, ours.json(), truncate=data.get("truncate"))
                assert tally.wrong == 0


def test_too_long_without_truncation_says_to_truncate(
    stack: tuple[EmulatorServer, InThreadProxy],
) -> None:
    tei, proxy = stack
    r = httpx.post(proxy.url + "/embed", json={"inputs": LONG, "truncate": False}, timeout=30)
    assert r.status_code == 422 and r.json()["error_type"] == "Validation"
    assert "must have less than 64 tokens" in r.json()["error"]


# ---------------------------------------------------------------------------- flood
@pytest.mark.slow
async def test_flood_of_concurrent_connections(
    stack: tuple[EmulatorServer, InThreadProxy], tally: Tally
) -> None:
    """300 connections at once, each with its own request, while 200 more sit idle: every
    request gets TEI's vectors or a TEI-shaped error, nothing hangs, the proxy stays healthy."""
    tei, proxy = stack
    idle = []
    for _ in range(200):
        s = socket.create_connection(("127.0.0.1", proxy.port))
        s.sendall(  # a body that never arrives
            b"POST /embed HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: 100\r\n\r\n{"
        )
        idle.append(s)
    statuses: collections.Counter[int] = collections.Counter()
    started = time.monotonic()
    try:

        async def one(i: int) -> None:
            texts = [f"flood {i}", f"flood {i % 10}"]
            async with httpx.AsyncClient(timeout=60) as client:  # one connection each
                try:
                    r = await client.post(proxy.url + "/embed", json={"inputs": texts})
                except httpx.HTTPError as exc:
                    tally.fail()
                    tally.extra.setdefault("errors", []).append(repr(exc)[:120])
                    return
            statuses[r.status_code] += 1
            if r.status_code == 200:
                tally.check(CONFIG, texts, r.json())
            else:
                tally.fail()
                assert _shape_problem("/embed", r.status_code, r.headers, r.content) is None

        await asyncio.wait_for(asyncio.gather(*(one(i) for i in range(300))), 120)
        elapsed = time.monotonic() - started
        async with httpx.AsyncClient(timeout=10) as client:
            health = await client.get(proxy.url + "/health")
            after = await client.post(proxy.url + "/embed", json={"inputs": ["after the flood"]})
    finally:
        for s in idle:
            s.close()
    tally.extra.update(statuses=dict(statuses), seconds=round(elapsed, 1))
    assert statuses.get(500, 0) == 0
    assert tally.wrong == 0
    assert sum(statuses.values()) == 300, tally.extra.get("errors")
    assert health.status_code == 200 and after.status_code == 200
