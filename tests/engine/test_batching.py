"""Misses of concurrent calls share TEI requests while every slot is busy (issues 11, 21): counts
on the emulator, exact rows per caller, failures confined to the calls that caused them (issue
18)."""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import AsyncIterator, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import pytest

from cached_tei import CachedEmbedder, TEIError
from cached_tei.batcher import BatchLimits, RequestBatcher
from cached_tei.errors import CachedTEIError
from cached_tei.keys import EmbedOptions
from cached_tei.pacing import Pacer
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
    return sorted(len(r.texts) for r in shared(server))


HOLDER = "holds a slot"


async def hold_the_slots(server: EmulatorServer, client: TEIClient) -> asyncio.Future[Any]:
    """Start calls that hold each of the client's slots (TEI delays them) until TEI has them:
    the calls made next wait for a slot, and then share requests."""
    holders = []
    while client._pacer is None or len(holders) < client._pacer.target:
        server.inject(Fault(kind="delay", seconds=0.5))
        holders.append(asyncio.create_task(Caller(f"{HOLDER} {len(holders)}").run(client)))
        while server.stats()["pending_faults"]:
            await asyncio.sleep(0.005)
    return asyncio.gather(*holders)


def shared(server: EmulatorServer) -> list[Any]:
    """The requests besides the slot holders'."""
    return [r for r in server.requests if not r.texts[0].startswith(HOLDER)]


async def test_concurrent_single_text_calls_share_requests(server, make_client) -> None:
    client = await make_client()
    holder = await hold_the_slots(server, client)
    callers = singles(70)
    assert await run_all(client, callers) == [None] * 70
    await holder
    assert sorted(r.texts for r in shared(server)) == [
        [f"text {i}" for i in range(0, 32)],
        [f"text {i}" for i in range(32, 64)],
        [f"text {i}" for i in range(64, 70)],
    ]
    for caller in callers:
        caller.check(server.config)
    assert client._stats.tei_requests == 3 + 2 and client._stats.tei_texts == 70 + 2


async def test_the_first_calls_share_requests_while_info_is_read(server, make_client) -> None:
    # Ten calls wait for /info together and go on one loop turn after another: while the
    # slots are busy, the later ones share a request.
    client = await make_client(read_info=False, batch_size=10)
    callers = singles(10)
    assert await asyncio.wait_for(run_all(client, callers), timeout=30) == [None] * 10
    assert sorted(t for r in server.requests for t in r.texts) == [c.texts[0] for c in callers]
    assert len(server.requests) <= 3
    for caller in callers:
        caller.check(server.config)


async def test_calls_with_other_request_fields_never_share(server, make_client) -> None:
    client = await make_client()
    holder = await hold_the_slots(server, client)
    raw = EmbedOptions(normalize=False)
    plain, unnormalised = singles(3, "plain"), [Caller(f"raw {i}", options=raw) for i in range(3)]
    assert await run_all(client, plain + unnormalised) == [None] * 6
    await holder
    by_normalize = {r.normalize: r.texts for r in shared(server)}
    assert len(shared(server)) == 2
    assert by_normalize == {True: [c.texts[0] for c in plain], False: ["raw 0", "raw 1", "raw 2"]}
    for caller in plain:
        caller.check(server.config)
    for caller in unnormalised:
        caller.check(server.config, normalize=False)


async def test_the_batch_size_and_payload_limits_hold_for_shared_requests(
    server, make_client
) -> None:
    client = await make_client(batch_size=5)
    holder = await hold_the_slots(server, client)
    assert await run_all(client, singles(12)) == [None] * 12
    await holder
    assert request_sizes(server) == [2, 5, 5]

    server.reset_log()
    # 1024 bytes a body: two texts of 300 characters fit, three do not.
    client = await make_client(max_payload_bytes=1024)
    holder = await hold_the_slots(server, client)
    callers = [Caller(f"{i}" + "x" * 299) for i in range(6)]
    assert await run_all(client, callers) == [None] * 6
    await holder
    assert request_sizes(server) == [2, 2, 2]
    for caller in callers:
        caller.check(server.config)


async def test_a_call_that_fills_requests_goes_out_at_once_with_the_waiting_texts(
    server, make_client
) -> None:
    client = await make_client()
    holder = await hold_the_slots(server, client)
    small = singles(3, "small")
    large = Caller(*(f"large {i}" for i in range(70)))
    # While the slot is held, only full requests go out; the tail waits for the slot.
    outcomes = await asyncio.wait_for(run_all(client, [*small, large]), timeout=30)
    assert outcomes == [None] * 4
    await holder
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
async def test_a_refused_shared_request_fails_only_the_call_that_caused_it(
    server, make_client
) -> None:
    client = await make_client()
    holder = await hold_the_slots(server, client)
    a, too_long, spanning = Caller("a"), Caller(LONG), Caller("d1", "d2", "d3")
    later = singles(3, "later")
    outcomes = await run_all(client, [a, too_long, spanning, *later])
    await holder
    # [a, LONG, d1, d2] fills a request, which TEI refuses: each call's texts go again alone.
    requests = [(r.status, r.texts) for r in shared(server)]
    assert (422, ["a", LONG, "d1", "d2"]) in requests
    assert sorted(requests) == sorted(
        [
            (422, ["a", LONG, "d1", "d2"]),
            (200, ["a"]),
            (422, [LONG]),
            (200, ["d1", "d2"]),
            (200, ["d3", "later 0", "later 1", "later 2"]),
        ]
    )
    error = outcomes[1]
    assert isinstance(error, TEIError) and error.status == 422
    assert (
        error.message == "Input validation error: `inputs` must have less than 8 tokens. Given: 10"
    )
    assert outcomes[:1] + outcomes[2:] == [None] * 5
    for caller in [a, spanning, *later]:
        caller.check(server.config)
    assert too_long.rows == {}


@pytest.mark.parametrize(
    "server", [EmulatorConfig(step_ms=1.0, max_client_batch_size=4)], indirect=True
)
async def test_an_injected_fault_fails_only_the_calls_in_that_request(server, make_client) -> None:
    client = await make_client()
    holder = await hold_the_slots(server, client)
    # A backend failure is the whole request's: it is not sent again per call.
    server.inject(Fault(kind="status", status=424))
    callers = singles(6)
    outcomes = await run_all(client, callers)
    await holder
    failed = [r for r in shared(server) if r.status == 424]
    assert len(shared(server)) == 2 and len(failed) == 1 and len(failed[0].texts) == 4
    for caller, outcome in zip(callers, outcomes, strict=True):
        if caller.texts[0] in failed[0].texts:
            assert isinstance(outcome, TEIError) and outcome.error_type == "Backend"
            assert caller.rows == {}
        else:
            assert outcome is None
            caller.check(server.config)


async def test_retries_resend_the_shared_request(server, make_client) -> None:
    client = await make_client()
    holder = await hold_the_slots(server, client)
    server.inject(Fault(kind="status", status=503))
    callers = singles(6)
    assert await run_all(client, callers) == [None] * 6
    await holder
    texts = [c.texts[0] for c in callers]
    assert [(r.status, r.texts) for r in shared(server)] == [(503, texts), (200, texts)]
    assert client._stats.retries == 1 and client._stats.tei_texts == 6 + 2
    for caller in callers:
        caller.check(server.config)


async def test_a_caller_cancelled_while_waiting_for_a_slot_is_left_out(server, make_client) -> None:
    client = await make_client()
    holder = await hold_the_slots(server, client)
    callers = singles(4)
    tasks = [asyncio.create_task(c.run(client)) for c in callers]
    await asyncio.sleep(0)  # every call is now waiting for the slot
    tasks[1].cancel()
    outcomes = await asyncio.gather(*tasks, return_exceptions=True)
    await holder
    assert isinstance(outcomes[1], asyncio.CancelledError)
    assert outcomes[:1] + outcomes[2:] == [None] * 3
    assert [r.texts for r in shared(server)] == [["text 0", "text 2", "text 3"]]
    for caller in callers[:1] + callers[2:]:
        caller.check(server.config)


@pytest.mark.parametrize("server", [EmulatorConfig(step_ms=300.0)], indirect=True)
async def test_a_caller_cancelled_in_flight_never_cancels_the_others(server, make_client) -> None:
    client = await make_client()
    holder = await hold_the_slots(server, client)
    callers = singles(4)
    tasks = [asyncio.create_task(c.run(client)) for c in callers]
    await holder
    while server.stats()["permits_in_use"] == 0:  # until TEI holds the shared request
        await asyncio.sleep(0.005)
    tasks[0].cancel()
    outcomes = await asyncio.gather(*tasks, return_exceptions=True)
    assert isinstance(outcomes[0], asyncio.CancelledError)
    assert outcomes[1:] == [None] * 3
    assert [(r.status, len(r.texts)) for r in shared(server)] == [(200, 4)]
    for caller in callers[1:]:
        caller.check(server.config)


def test_threads_share_requests_through_the_embedder(qdrant_path) -> None:
    # A step long enough that the other threads' texts arrive while the first one's is in TEI.
    config = EmulatorConfig(step_ms=300.0, max_client_batch_size=8)
    texts = [f"thread {i}" for i in range(8)]
    barrier = threading.Barrier(8)

    def embed(text: str) -> list[float]:
        barrier.wait()
        return embedder.embed_query(text)

    with (
        EmulatorServer(config) as tei,
        CachedEmbedder(tei_url=tei.url, qdrant_path=qdrant_path) as embedder,
        ThreadPoolExecutor(max_workers=8) as pool,
    ):
        vectors = list(pool.map(embed, texts))
        assert sorted(t for r in tei.requests for t in r.texts) == texts
        assert len(tei.requests) < len(texts)
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


def start(batcher: RequestBatcher, *callers: Caller) -> list[asyncio.Task[None]]:
    return [
        asyncio.create_task(batcher.embed(c.texts, [2] * len(c.texts), {}, c.on_batch))
        for c in callers
    ]


ONE_SLOT = 1  # a ceiling (max_concurrency) of one request in flight


async def test_a_free_slot_sends_at_once_without_any_window() -> None:
    send = HeldSend()
    batcher = RequestBatcher(send, BatchLimits(texts=4, bytes=1000), Pacer(None, ONE_SLOT))
    first, second, third = Caller("a"), Caller("b"), Caller("c")
    tasks = start(batcher, first)
    for _ in range(3):
        await asyncio.sleep(0)  # loop turns only: no time passes
    assert send.sent == [["a"]]
    tasks += start(batcher, second, third)  # the only slot is busy: they wait, together
    for _ in range(3):
        await asyncio.sleep(0)
    assert send.sent == [["a"]]
    send.release.set()
    assert await asyncio.gather(*tasks) == [None] * 3
    assert send.sent == [["a"], ["b", "c"]]
    assert [c.rows[0].tolist() for c in (first, second, third)] == [[0.0], [0.0], [1.0]]
    await batcher.aclose()


async def test_one_request_per_configured_replica_and_one_more_are_in_flight() -> None:
    send = HeldSend()
    batcher = RequestBatcher(send, BatchLimits(texts=4, bytes=1000), Pacer(3, ceiling=16))
    tasks = []
    for caller in singles(6):  # one call a loop turn: each finds the slots as the last left them
        tasks += start(batcher, caller)
        for _ in range(3):
            await asyncio.sleep(0)
    assert send.sent == [["text 0"], ["text 1"], ["text 2"], ["text 3"]]
    send.release.set()
    assert await asyncio.gather(*tasks) == [None] * 6
    assert send.sent[4:] == [["text 4", "text 5"]]
    await batcher.aclose()


def test_the_pacer_learns_the_replicas_from_teis_queue_time() -> None:
    pacer = Pacer(2, ceiling=5)
    idle = {"x-queue-time": "0", "x-inference-time": "20"}
    waited = {"x-queue-time": "15", "x-inference-time": "20"}
    assert pacer.target == 3  # a request per replica, and one more
    pacer.observe(idle, 0.025)
    assert pacer.target == 3  # a replica was free, but nothing waited for a slot
    pacer.held_back = True
    pacer.observe(idle, 0.045)
    assert pacer.target == 3  # this process, not TEI, took most of the time: no more slots
    for _ in range(5):
        pacer.observe(idle, 0.025)
    assert pacer.target == 5  # up to the ceiling (max_concurrency)
    pacer.observe({"x-queue-time": "5", "x-inference-time": "20"}, 0.03)
    assert pacer.target == 5  # a short wait says nothing
    for _ in range(5):
        pacer.observe(waited, 0.04)
    assert pacer.target == 3  # never below the configured replicas, plus one
    pacer.observe({}, 0.02)  # not TEI: no timing headers
    assert pacer.target == 3


async def test_a_request_whose_callers_are_all_gone_is_cancelled() -> None:
    send = HeldSend()
    batcher = RequestBatcher(send, BatchLimits(texts=4, bytes=1000), Pacer(None, ceiling=16))
    callers = [Caller("a"), Caller("b", "c", "d", "e", "f", "g")]
    tasks = start(batcher, *callers)
    while len(send.sent) < 2:  # [a, b, c, d] (full), then [e, f, g] (the second slot)
        await asyncio.sleep(0.001)
    assert send.sent == [["a", "b", "c", "d"], ["e", "f", "g"]]
    tasks[1].cancel()  # [e, f, g] serves no one else now; [a, b, c, d] still serves a
    for _ in range(10):
        await asyncio.sleep(0)
    assert send.cancelled == [["e", "f", "g"]]
    send.release.set()
    assert await tasks[0] is None
    assert callers[0].rows[0].tolist() == [0.0]
    await batcher.aclose()


async def test_closing_fails_the_calls_still_waiting() -> None:
    send = HeldSend()
    batcher = RequestBatcher(send, BatchLimits(texts=2, bytes=1000), Pacer(None, ONE_SLOT))
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
    send = HeldSend()
    batcher = RequestBatcher(send, BatchLimits(texts=2, bytes=1000), None)
    caller = Caller("a")
    task = asyncio.create_task(batcher.embed(caller.texts, [2], {}, caller.on_batch))
    await asyncio.sleep(0)  # the call has made its request, which has not run yet
    await batcher.aclose()
    outcome = (await asyncio.gather(task, return_exceptions=True))[0]
    assert type(outcome) is CachedTEIError and send.sent == []


async def test_a_batch_window_is_deprecated_and_waits_no_more(server, make_client, caplog) -> None:
    with caplog.at_level(logging.WARNING, logger="cached_tei"):
        client = await make_client(batch_window=60.0)
        callers = singles(3)
        assert await asyncio.wait_for(run_all(client, callers), timeout=30) == [None] * 3
    assert "batch_window is deprecated" in caplog.text and "set it to 0" in caplog.text
    for caller in callers:
        caller.check(server.config)
