"""``/embed_sparse`` and ``/rerank`` fuzzed against TEI's OpenAPI the way ``/embed`` is (see
test_proxy_input.py), with the proxy caching both: no 500, no hang, every error in TEI's
shape, and every success byte for byte what the upstream TEI (the emulator) answers itself."""

from __future__ import annotations

import collections
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from schemathesis import GenerationMode

from cached_tei import CachedTEISettings
from cached_tei.proxy import ProxySettings
from tests.tei_emulator import EmulatorServer

from .conftest import _TALLIES, InThreadProxy, Tally
from .test_proxy_input import CONFIG, FUZZ_EXAMPLES, _operations, _shape_problem

pytestmark = pytest.mark.timeout(180)

ROUTES = ("/embed_sparse", "/rerank")
SPLADE = replace(CONFIG, model_id="emulator/splade", model_type="splade")
RERANKER = replace(CONFIG, model_id="emulator/reranker", model_type="reranker")
FUZZ = Tally("fuzz of /embed_sparse and /rerank (schemathesis, TEI 1.9.3 OpenAPI)")
_TALLIES.append(FUZZ)


@pytest.fixture(scope="module")
def kinds(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[dict[str, EmulatorServer], InThreadProxy]]:
    tmp = tmp_path_factory.mktemp("proxy-kinds-input")
    with (
        EmulatorServer(CONFIG) as dense,
        EmulatorServer(SPLADE) as sparse,
        EmulatorServer(RERANKER) as rerank,
    ):
        settings = CachedTEISettings(
            tei_url=dense.url,
            sparse_url=sparse.url,
            rerank_url=rerank.url,
            qdrant_path=tmp / "q",
            retry_deadline=2,
            max_retries=2,
        )
        proxy_settings = ProxySettings(max_inputs=64, max_body_bytes=100_000)
        with InThreadProxy(settings, proxy_settings) as proxy:
            yield {"/embed_sparse": sparse, "/rerank": rerank}, proxy


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["positive", "negative"])
def test_fuzz_sparse_and_rerank_against_tei_openapi(
    kinds: tuple[dict[str, EmulatorServer], InThreadProxy], mode: str
) -> None:
    upstreams, proxy = kinds
    problems: list[str] = []
    outcomes = FUZZ.extra.setdefault("outcomes", collections.Counter())
    generation = GenerationMode.POSITIVE if mode == "positive" else GenerationMode.NEGATIVE
    for operation in (op for op in _operations() if op.path in ROUTES):

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
                problems.append(f"{case.path}: {exc!r:.200}")
                return
            outcomes[f"{mode} {case.path} {response.status_code}"] += 1
            problem = _shape_problem(
                case.path, response.status_code, response.headers, response.content
            )
            if problem:
                FUZZ.failed += 1
                problems.append(f"{case.path} {case.body!r:.150}: {problem}")
                return
            direct = case.call(base_url=upstreams[case.path].url, timeout=15)
            same = (
                direct.content == response.content
                if response.status_code == 200
                else direct.status_code == response.status_code
            )
            if not same:
                FUZZ.wrong += 1
                problems.append(
                    f"{case.path} {case.body!r:.150}: {response.status_code} "
                    f"{response.content[:80]!r} but TEI answers {direct.status_code} "
                    f"{direct.content[:80]!r}"
                )

        run()
    assert not problems, "\n".join(problems[:20])
