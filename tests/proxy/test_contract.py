"""The proxy against TEI's own OpenAPI spec (schemathesis): for generated valid and invalid
requests to every route it serves, no server errors, 2xx bodies that match the spec, and errors
that are TEI's (TEI-shaped JSON with the status of its type, or TEI's plain-text rejections)."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import response_schema_conformance

from cached_tei.proxy.errors import STATUS_BY_TYPE
from tests.tei_emulator import EmulatorServer

from .support import FAST, ProxyServer, engine_settings

SPEC = Path(__file__).resolve().parents[1] / "reference" / "tei-1.9.3-openapi.json"
OPERATIONS = [
    ("POST", "/embed"),
    ("POST", "/v1/embeddings"),
    ("GET", "/info"),
    ("GET", "/health"),
    ("GET", "/metrics"),
    ("POST", "/tokenize"),
    ("POST", "/rerank"),
    ("POST", "/embed_sparse"),
    ("POST", "/predict"),
    ("POST", "/similarity"),
]
PLAIN_ERRORS = {
    400: "Failed to parse the request body as JSON: ",
    413: "Failed to buffer the request body: length limit exceeded",
    415: "Expected request with `Content-Type: application/json`",
    422: "Failed to deserialize the JSON body into the target type: ",
}
MAX_EXAMPLES = {GenerationMode.POSITIVE: 30, GenerationMode.NEGATIVE: 15}

pytestmark = pytest.mark.skipif(not SPEC.is_file(), reason=f"{SPEC} is missing")


@pytest.fixture(scope="module")
def schema():
    return schemathesis.openapi.from_path(str(SPEC))


@pytest.fixture(scope="module")
def contract_proxy(tmp_path_factory):
    with EmulatorServer(FAST) as tei:
        path = tmp_path_factory.mktemp("contract") / "qdrant"
        with ProxyServer(engine_settings(tei.url, path)) as proxy:
            yield proxy


def check_answer(path: str, case, response) -> None:
    status = response.status_code
    assert status < 500, (status, response.text[:500])
    if status < 300:
        case.validate_response(response, checks=[response_schema_conformance])
        if path == "/embed":
            inputs = case.body["inputs"]
            assert len(response.json()) == (
                len(inputs)
                if isinstance(inputs, list) and inputs and not all(type(i) is int for i in inputs)
                else 1
            )
        return
    content_type = response.headers.get("content-type", [""])
    content_type = content_type[0] if isinstance(content_type, list) else content_type
    if content_type.startswith("application/json"):
        body = response.json()
        if path == "/v1/embeddings":
            assert set(body) == {"message", "code", "type"}, body
            assert body["code"] == status
            error_type = body["type"]
        else:
            assert set(body) == {"error", "error_type"}, body
            error_type = body["error_type"]
        assert STATUS_BY_TYPE[error_type] == status, body
    else:
        assert status in PLAIN_ERRORS, (status, response.text[:300])
        assert response.text.startswith(PLAIN_ERRORS[status]), response.text[:300]


# GET routes take no parameters, so there is nothing to get wrong for them.
CASES = [
    (method, path, mode)
    for method, path in OPERATIONS
    for mode in MAX_EXAMPLES
    if not (method == "GET" and mode is GenerationMode.NEGATIVE)
]


@pytest.mark.parametrize(("method", "path", "mode"), CASES, ids=lambda v: str(v))
def test_tei_openapi_contract(schema, contract_proxy, method, path, mode):
    operation = schema[path][method]

    @settings(
        max_examples=MAX_EXAMPLES[mode],
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(case=operation.as_strategy(generation_mode=mode))
    def run(case) -> None:
        response = case.call(base_url=contract_proxy.url, timeout=30)
        check_answer(path, case, response)

    run()


@pytest.fixture(scope="module")
def tei_and_proxy(tmp_path_factory):
    with EmulatorServer(FAST) as tei:
        path = tmp_path_factory.mktemp("differential") / "qdrant"
        with ProxyServer(engine_settings(tei.url, path)) as proxy:
            yield tei, proxy


# Lists hold no empty strings: the proxy refuses those before any work, while TEI may first
# report another text's error (the test of exact error bodies covers ["a", ""]).
_texts = st.lists(st.text(min_size=1, max_size=40), min_size=0, max_size=FAST.max_client_batch_size)
_native = st.fixed_dictionaries(
    {"inputs": st.one_of(st.text(max_size=40), _texts)},
    optional={
        "normalize": st.booleans(),
        "truncate": st.one_of(st.none(), st.booleans()),
        "truncation_direction": st.sampled_from(["Left", "Right", "left", "right"]),
        "prompt_name": st.sampled_from(["query", "missing"]),
        "dimensions": st.integers(0, FAST.dim + 1),
    },
)
_openai = st.fixed_dictionaries(
    {"input": st.one_of(st.text(max_size=40), _texts)},
    optional={
        "model": st.text(max_size=10),
        "encoding_format": st.sampled_from(["float", "base64"]),
        "dimensions": st.integers(0, FAST.dim + 1),
    },
)


@pytest.mark.parametrize("route", ["/embed", "/", "/v1/embeddings"])
def test_same_answer_as_tei_for_generated_requests(tei_and_proxy, route):
    """Differential: for any request TEI takes (or refuses), the proxy answers with the same
    status and the same bytes, whether it computed the vectors or served them from the cache."""
    tei, proxy = tei_and_proxy
    bodies = _openai if route == "/v1/embeddings" else _native

    @settings(
        max_examples=30, deadline=None, database=None, suppress_health_check=list(HealthCheck)
    )
    @given(body=bodies)
    def run(body) -> None:
        expected = httpx.post(tei.url + route, json=body, timeout=30)
        for _ in range(2):  # computed, then cached
            actual = httpx.post(proxy.url + route, json=body, timeout=30)
            assert actual.status_code == expected.status_code, (body, actual.text)
            if route == "/v1/embeddings" and expected.status_code == 200:
                got, want = actual.json(), expected.json()
                assert got["data"] == want["data"] and got["model"] == want["model"]
            else:
                assert actual.content == expected.content, body

    run()
