"""Misses of concurrent calls share TEI requests (issue 11): counts on the emulator, exact rows
per caller, failures confined to the calls whose texts were in the failed request."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import pytest

from cached_tei import CachedEmbedder, TEIError
from cached_tei.errors import CachedTEIError
from cached_tei.keys import EmbedOptions
from cached_tei.settings import CachedTEISettings
from cached_tei.stats import Stats
from cached_tei.tei import TEIClient
from tests.tei_emulator import EmulatorConfig, EmulatorServer, Fault, expected_vector

FAST = EmulatorConfig(step_ms=1.0, per_text_ms=0.01)
PLAIN = EmbedOptions()


class Caller:
    """One ``TEIClient.embed`` call; keeps the rows its ``on_batch`` received."""

    def __init__(self, *texts: str, options: EmbedOptions = PLAIN) -> None:
        self.texts = list(texts)
        self.options = options
        self.rows: dict[int, np.ndarray] = {}

    async def on_batch(self, start: int, vectors: np.ndarray) -> None:
        for offset, row in enumerate(vectors):
            assert start + offset not in self.rows
            self.rows[start + offset] = row.copy()

    async def run(self, client: TEIClient) -> None:
        await client.embed(self.texts, self.options, self.on_batch)

    def check(self, config: EmulatorConfig, **fields: Any) -> None:
        """It received exactly its own rows, bit for bit."""
        assert sorted(self.rows) == list(range(len(self.texts)))
        for index, text in enumerate(self.texts):
            assert np.array_equal(self.rows[index], expected_vector(config, text, **fields))


def singles(count: int, prefix: str = "text") -> list[Caller]:
    return [Caller(f"{prefix} {i}") for i in range(count)]


async def run_all(client: TEIClient, callers: list[Caller]) -> list[BaseException | None]:
    """Start every call in the same loop turn; each outcome is None or the call's error."""
    return await asyncio.gather(*(c.run(client) for c in callers), return_exceptions=True)


@pytest.fixture
def server(request: pytest.FixtureRequest) -> Iterator[EmulatorServer]:
    config = getattr(request, "param", FAST)
    with EmulatorServer(config) as tei:
        yield tei


@pytest.fixture
async def make_client(server: EmulatorServer) -> AsyncIterator[Any]:
    made: list[TEIClient] = []

    async def make(*, read_info: bool = True, **overrides: Any) -> TEIClient:
        client = TEIClient(CachedTEISettings(tei_url=server.url, **overrides), Stats())
        made.append(client)
        if read_info:  # so that every call reaches the batcher in the same loop turn
            await client.info()
        return client

    yield make
    for client in made:
        await client.aclose()


def request_sizes(server: EmulatorServer) -> list[int]:
    """Texts per request, smallest first (concurrent requests are logged as they finish)."""
    return sorted(len(r.texts) for r in server.requests)


async def test_concurrent_single_text_calls_share_requests(server, make_client) -> None:
    client = await make_client()
    callers = singles(70)
    assert await run_all(client, callers) == [None] * 70
    assert sorted(r.texts for r in server.requests) == [
        [f"text {i}" for i in range(0, 32)],
        [f"text {i}" for i in range(32, 64)],
        [f"text {i}" for i in range(64, 70)],
    ]
    for caller in callers:
        caller.check(server.config)
    assert client._stats.tei_requests == 3 and client._stats.tei_texts == 70


async def test_the_first_calls_share_requests_while_info_is_read(server, make_client) -> None:
    # Ten calls wait for /info together; the tenth text fills the request before the window.
    client = await make_client(read_info=False, batch_size=10, batch_window=60.0)
    callers = singles(10)
    assert await asyncio.wait_for(run_all(client, callers), timeout=30) == [None] * 10
    assert request_sizes(server) == [10]
    for caller in callers:
        caller.check(server.config)


async def test_calls_with_other_request_fields_never_share(server, make_client) -> None:
    client = await make_client()
    raw = EmbedOptions(normalize=False)
    plain, unnormalised = singles(3, "plain"), [Caller(f"raw {i}", options=raw) for i in range(3)]
    assert await run_all(client, plain + unnormalised) == [None] * 6
    by_normalize = {r.normalize: r.texts for r in server.requests}
    assert len(server.requests) == 2
    assert by_normalize == {True: [c.texts[0] for c in plain], False: ["raw 0", "raw 1", "raw 2"]}
    for caller in plain:
        caller.check(server.config)
    for caller in unnormalised:
        caller.check(server.config, normalize=False)


async def test_the_batch_size_and_payload_limits_hold_for_shared_requests(
    server, make_client
) -> None:
    client = await make_client(batch_size=5)
    assert await run_all(client, singles(12)) == [None] * 12
    assert request_sizes(server) == [2, 5, 5]

    server.reset_log()
    # 1024 bytes a body: two texts of 300 characters fit, three do not.
    client = await make_client(max_payload_bytes=1024)
    callers = [Caller(f"{i}" + "x" * 299) for i in range(6)]
    assert await run_all(client, callers) == [None] * 6
    assert request_sizes(server) == [2, 2, 2]
    for caller in callers:
        caller.check(server.config)


async def test_a_call_that_fills_requests_goes_out_at_once_with_the_waiting_texts(
    server, make_client
) -> None:
    client = await make_client(batch_window=60.0)
    small = singles(3, "small")
    large = Caller(*(f"large {i}" for i in range(70)))
    # With a one-minute window, only a call that fills requests can send its tail early.
    outcomes = await asyncio.wait_for(run_all(client, [*small, large]), timeout=30)
    assert outcomes == [None] * 4
    assert request_sizes(server) == [9, 32, 32]
    assert ["small 0", "small 1", "small 2", "large 0"] in [r.texts[:4] for r in server.requests]
    for caller in [*small, large]:
        caller.check(server.config)


async def test_window_zero_sends_each_call_its_own_requests(server, make_client) -> None:
    client = await make_client(batch_window=0)
    callers = [*singles(5), Caller(*(f"large {i}" for i in range(40)))]
    assert await run_all(client, callers) == [None] * 6
    assert sorted(request_sizes(server)) == [1, 1, 1, 1, 1, 8, 32]
    for caller in callers:
        caller.check(server.config)


STRICT = EmulatorConfig(
    step_ms=1.0, per_text_ms=0.01, max_client_batch_size=4, auto_truncate=False, max_input_length=8
)
LONG = "one two three four five six seven eight nine ten"


@pytest.mark.parametrize("server", [STRICT], indirect=True)
async def test_a_failed_request_fails_every_call_in_it_and_only_those(server, make_client) -> None:
    client = await make_client()
    a, b, too_long, spanning = Caller("a"), Caller("b"), Caller(LONG), Caller("d1", "d2")
    later = singles(3, "later")
    outcomes = await run_all(client, [a, b, too_long, spanning, *later])
    # [a, b, LONG, d1] fills a request; the call that filled it sends d2 at once.
    assert [r.texts for r in server.requests if r.status != 200] == [["a", "b", LONG, "d1"]]
    assert sorted(r.texts for r in server.requests if r.status == 200) == [
        ["d2"],
        ["later 0", "later 1", "later 2"],
    ]
    for outcome in outcomes[:4]:
        assert isinstance(outcome, TEIError) and outcome.status == 422
        assert outcome.message == (
            "Input validation error: `inputs` must have less than 8 tokens. Given: 10"
        )
    assert outcomes[4:] == [None] * 3
    for caller in later:
        caller.check(server.config)
    # The spanning call's other request still arrived (and reached on_batch): nothing is lost.
    assert list(spanning.rows) == [1]


@pytest.mark.parametrize(
    "server", [EmulatorConfig(step_ms=1.0, max_client_batch_size=4)], indirect=True
)
async def test_an_injected_fault_fails_only_the_calls_in_that_request(server, make_client) -> None:
    client = await make_client()
    callers = singles(8)
    server.inject(Fault(kind="status", status=424))
    outcomes = await run_all(client, callers)
    failed = [r for r in server.requests if r.status == 424]
    assert len(server.requests) == 2 and len(failed) == 1 and len(failed[0].texts) == 4
    for caller, outcome in zip(callers, outcomes, strict=True):
        if caller.texts[0] in failed[0].texts:
            assert isinstance(outcome, TEIError) and outcome.error_type == "Backend"
            assert caller.rows == {}
        else:
            assert outcome is None
            caller.check(server.config)


async def test_retries_resend_the_shared_request(server, make_client) -> None:
    client = await make_client()
    server.inject(Fault(kind="status", status=503))
    callers = singles(6)
    assert await run_all(client, callers) == [None] * 6
    texts = [c.texts[0] for c in callers]
    assert [(r.status, r.texts) for r in server.requests] == [(503, texts), (200, texts)]
    assert client._stats.retries == 1 and client._stats.tei_texts == 6
    for caller in callers:
        caller.check(server.config)


async def test_a_caller_cancelled_in_the_window_is_left_out(server, make_client) -> None:
    client = await make_client(batch_window=0.2)
    callers = singles(4)
    tasks = [asyncio.create_task(c.run(client)) for c in callers]
    await asyncio.sleep(0)  # every call is now waiting in the window
    tasks[1].cancel()
    outcomes = await asyncio.gather(*tasks, return_exceptions=True)
    assert isinstance(outcomes[1], asyncio.CancelledError)
    assert outcomes[:1] + outcomes[2:] == [None] * 3
    assert [r.texts for r in server.requests] == [["text 0", "text 2", "text 3"]]
    for caller in callers[:1] + callers[2:]:
        caller.check(server.config)


@pytest.mark.parametrize("server", [EmulatorConfig(step_ms=300.0)], indirect=True)
async def test_a_caller_cancelled_in_flight_never_cancels_the_others(server, make_client) -> None:
    client = await make_client()
    callers = singles(4)
    tasks = [asyncio.create_task(c.run(client)) for c in callers]
    while server.stats()["permits_in_use"] == 0:  # until TEI holds the shared request
        await asyncio.sleep(0.005)
    tasks[0].cancel()
    outcomes = await asyncio.gather(*tasks, return_exceptions=True)
    assert isinstance(outcomes[0], asyncio.CancelledError)
    assert outcomes[1:] == [None] * 3
    assert [(r.status, len(r.texts)) for r in server.requests] == [(200, 4)]
    for caller in callers[1:]:
        caller.check(server.config)


def test_threads_share_requests_through_the_embedder(qdrant_path) -> None:
    config = EmulatorConfig(step_ms=1.0, max_client_batch_size=8)
    texts = [f"thread {i}" for i in range(8)]
    barrier = threading.Barrier(8)

    def embed(text: str) -> list[float]:
        barrier.wait()
        return embedder.embed_query(text)

    # A long window: the eighth text fills the request, which then goes out at once.
    with (
        EmulatorServer(config) as tei,
        CachedEmbedder(tei_url=tei.url, qdrant_path=qdrant_path, batch_window=30.0) as embedder,
        ThreadPoolExecutor(max_workers=8) as pool,
    ):
        vectors = list(pool.map(embed, texts))
        assert [sorted(r.texts) for r in tei.requests] == [texts]
    for text, vector in zip(texts, vectors, strict=True):
        assert np.array_equal(np.asarray(vector, dtype=np.float32), expected_vector(config, text))


# ---- the batcher alone: when its callers are gone, and when the client closes ----------------


class HeldSend:
    """A send function that holds each request until released, and records cancellations."""

    def __init__(self) -> None:
        self.sent: list[list[str]] = []
        self.cancelled: list[list[str]] = []
        self.release = asyncio.Event()

    async def __call__(self, texts: list[str], fields: dict[str, Any]) -> np.ndarray:
        self.sent.append(texts)
        try:
            await self.release.wait()
        except asyncio.CancelledError:
            self.cancelled.append(texts)
            raise
        return np.arange(len(texts), dtype=np.float32).reshape(-1, 1)


async def test_a_request_whose_callers_are_all_gone_is_cancelled() -> None:
    from cached_tei.batcher import BatchLimits, RequestBatcher

    send = HeldSend()
    batcher = RequestBatcher(send, BatchLimits(texts=4, bytes=1000), window=0.001)
    callers = [Caller("a"), Caller("b"), Caller("c", "d", "e")]
    tasks = [
        asyncio.create_task(batcher.embed(c.texts, [2] * len(c.texts), {}, c.on_batch))
        for c in callers
    ]
    while len(send.sent) < 2:  # [a, b, c, d] and, at once, [e]
        await asyncio.sleep(0.001)
    assert send.sent == [["a", "b", "c", "d"], ["e"]]
    tasks[2].cancel()  # [e] serves no one else now; [a, b, c, d] still serves a and b
    for _ in range(10):
        await asyncio.sleep(0)
    assert send.cancelled == [["e"]]
    send.release.set()
    assert await asyncio.gather(*tasks[:2]) == [None, None]
    assert [c.rows[0].tolist() for c in callers[:2]] == [[0.0], [1.0]]
    await batcher.aclose()


async def test_closing_fails_the_calls_still_waiting() -> None:
    from cached_tei.batcher import BatchLimits, RequestBatcher

    send = HeldSend()
    batcher = RequestBatcher(send, BatchLimits(texts=2, bytes=1000), window=60.0)
    in_flight, waiting = Caller("a", "b"), Caller("c")
    tasks = [
        asyncio.create_task(batcher.embed(c.texts, [2] * len(c.texts), {}, c.on_batch))
        for c in (in_flight, waiting)
    ]
    while not send.sent:
        await asyncio.sleep(0.001)
    await batcher.aclose()
    outcomes = await asyncio.gather(*tasks, return_exceptions=True)
    assert send.cancelled == [["a", "b"]]
    for outcome in outcomes:
        assert type(outcome) is CachedTEIError and "closed" in str(outcome)


async def test_closing_before_a_request_starts_still_answers_its_calls() -> None:
    from cached_tei.batcher import BatchLimits, RequestBatcher

    send = HeldSend()
    batcher = RequestBatcher(send, BatchLimits(texts=2, bytes=1000), window=0)
    caller = Caller("a")
    task = asyncio.create_task(batcher.embed(caller.texts, [2], {}, caller.on_batch))
    await asyncio.sleep(0)  # the call has made its request, which has not run yet
    await batcher.aclose()
    outcome = (await asyncio.gather(task, return_exceptions=True))[0]
    assert type(outcome) is CachedTEIError and send.sent == []
