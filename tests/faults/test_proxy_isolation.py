"""Through ``cached-tei serve``: one client's refused text never fails another client's request
that shared its TEI call, and a model changed behind TEI's URL moves every client to its
namespace without a mixed answer or a 500 (issue 18)."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from pathlib import Path

import httpx

from cached_tei import ModelChangedError
from cached_tei.proxy.errors import from_engine
from tests.support.proxy import ProxyProcess
from tests.tei_emulator import EmulatorConfig, EmulatorServer

from .conftest import Tally

KEYS = ("isolation-key-one", "isolation-key-two")
# Eight words at most, no truncation unless asked: the long text is refused as TEI would.
STRICT = EmulatorConfig(step_ms=20.0, per_text_ms=0.1, max_input_length=8, auto_truncate=False)
LONG = "one two three four five six seven eight nine ten"
TOO_LONG = "Input validation error: `inputs` must have less than 8 tokens. Given: 10"


def test_a_clients_refused_text_never_fails_another_clients_request(
    tmp_path: Path, tally: Tally
) -> None:
    with EmulatorServer(STRICT) as tei:
        proxy = ProxyProcess(tmp_path, tei.url, CACHED_TEI_PROXY_API_KEYS=",".join(KEYS))
        with proxy:

            async def send(client: httpx.AsyncClient, key: str, text: str) -> httpx.Response:
                return await client.post(
                    proxy.url + "/embed",
                    json={"inputs": [text], "truncate": False},
                    headers={"Authorization": f"Bearer {key}"},
                )

            async def rounds() -> list[tuple[str, httpx.Response]]:
                sent: list[tuple[str, httpx.Response]] = []
                async with httpx.AsyncClient(timeout=60) as client:
                    for round_ in range(15):
                        texts = [f"valid {round_} {i}" for i in range(6)]
                        answers = await asyncio.gather(
                            *(send(client, KEYS[0], LONG) for _ in range(3)),
                            *(send(client, KEYS[1], text) for text in texts),
                        )
                        sent += zip([LONG] * 3 + texts, answers, strict=True)
                return sent

            for text, answer in asyncio.run(rounds()):
                if text == LONG:
                    tally.fail()
                    assert answer.status_code == 422, answer.text
                    assert answer.json() == {"error": TOO_LONG, "error_type": "Validation"}
                else:
                    assert answer.status_code == 200, answer.text
                    tally.check(STRICT, [text], answer.json())
            assert tally.wrong == 0
            merged = [
                r for r in tei.requests if LONG in r.texts and any(t != LONG for t in r.texts)
            ]
            tally.extra["merged_refused"] = len(merged)
            assert merged, "no TEI request held both clients' texts: nothing was proven"
            assert all(r.status == 422 for r in merged)


A = EmulatorConfig(model_id="emulator/a", step_ms=2.0, per_text_ms=0.05)
B = replace(A, model_id="emulator/b", dim=768)
B_NARROW = replace(B, dim=384)  # the same id and revision as B, another dimension
C = replace(B_NARROW, model_id="emulator/c")  # another id, the same dimension


def test_a_model_changed_behind_the_url_moves_the_proxy_at_once(
    tmp_path: Path, tally: Tally
) -> None:
    cached = [f"cached {i}" for i in range(6)]
    tei = EmulatorServer(A).start()
    try:
        with ProxyProcess(tmp_path, tei.url) as proxy, httpx.Client(timeout=60) as client:

            def embed(texts: list[str]) -> httpx.Response:
                answer = client.post(proxy.url + "/embed", json={"inputs": texts})
                assert answer.status_code == 200, answer.text  # never a 500
                return answer

            tally.check(A, cached, embed(cached).json())
            for config in (B, B_NARROW):
                tei.stop()
                tei = EmulatorServer(config, port=tei.port).start()

                async def mixed(config: EmulatorConfig = config) -> None:
                    async with httpx.AsyncClient(timeout=60) as aclient:

                        async def one(i: int) -> None:
                            texts = [cached[i % 6], f"new {config.dim} {i}"]
                            answer = await aclient.post(
                                proxy.url + "/embed", json={"inputs": texts}
                            )
                            assert answer.status_code == 200, answer.text
                            tally.check(config, texts, answer.json())  # wholly the new model

                        await asyncio.gather(*(one(i) for i in range(12)))

                asyncio.run(mixed())
                tally.check(config, cached, embed(cached).json())  # no stale vector
                info = client.get(proxy.url + "/info").json()
                assert info["model_id"] == config.model_id
            # A model of the same dimension: /info reads TEI's at once, and the cache follows.
            tei.stop()
            tei = EmulatorServer(C, port=tei.port).start()
            assert client.get(proxy.url + "/info").json()["model_id"] == C.model_id
            tally.check(C, cached, embed(cached).json())
            assert tally.wrong == 0
    finally:
        tei.stop()


def test_a_call_that_saw_the_model_change_twice_is_a_tei_shaped_503() -> None:
    error = from_engine(
        ModelChangedError("http://tei", "emulator/a (384 dimensions)", "emulator/b", "try again")
    )
    assert (error.status, error.error_type) == (503, "Unhealthy")
    assert "emulator/a (384 dimensions) to emulator/b" in error.message
