"""The proxy process stopped under load: SIGTERM drains, SIGKILL stays consistent.

``cached-tei serve`` runs as a real subprocess (uvicorn) in front of a TEI emulator whose
steps are slow enough that requests are in flight when the signal arrives.
"""

from __future__ import annotations

import concurrent.futures as cf
import threading
import time
from pathlib import Path

import httpx
import psutil
import pytest

from tests.tei_emulator import EmulatorConfig, EmulatorServer

from .conftest import Tally, check_points, embedded_points
from .fake_qdrant import FakeQdrant

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]

SLOW_TEI = EmulatorConfig(step_ms=300.0, per_text_ms=1.0)


def _post(client: httpx.Client, url: str, texts: list[str]) -> httpx.Response:
    return client.post(f"{url}/embed", json={"inputs": texts}, timeout=60)


def _accepted(pid: int, port: int) -> int:
    """Client connections the proxy has accepted (one still in the listen backlog has no fd in
    the process, and a graceful shutdown rightly resets it)."""
    return sum(
        1
        for c in psutil.Process(pid).net_connections("tcp")
        if c.laddr and c.laddr.port == port and c.status == psutil.CONN_ESTABLISHED
    )


@pytest.mark.parametrize("store_kind", ["embedded", "slow_qdrant_server"])
def test_sigterm_under_load_completes_in_flight_requests_and_drains(
    tmp_path: Path, start_proxy, tally: Tally, store_kind: str
) -> None:
    """In-flight requests complete; the write-behind queue drains before exit (with a Qdrant
    server whose writes take 0.4 s each, writes are still queued when the signal comes)."""
    with EmulatorServer(SLOW_TEI) as tei, FakeQdrant() as qdrant:
        store = tmp_path / "q"
        env = {}
        if store_kind != "embedded":
            qdrant.mode, qdrant.delay = "slow_writes", 0.4
            env = {"CACHED_TEI_QDRANT_URL": qdrant.url, "CACHED_TEI_WRITE_BATCH_SIZE": "8"}
        proxy = start_proxy(tei.url, qdrant_path=store, **env)
        batches = [[f"sigterm {i} {j}" for j in range(8)] for i in range(24)]
        results: dict[int, httpx.Response | Exception] = {}

        def one(i: int) -> None:
            try:
                with httpx.Client() as client:
                    results[i] = _post(client, proxy.url, batches[i])
            except Exception as exc:  # counted below
                results[i] = exc

        threads = [threading.Thread(target=one, args=(i,)) for i in range(len(batches))]
        for t in threads:
            t.start()
        # wait until the proxy has accepted every request and TEI holds some, then stop it
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and not (
            tei.requests and _accepted(proxy.pid, proxy.port) == len(batches)
        ):
            time.sleep(0.01)
        time.sleep(0.05)
        in_tei_at_signal = len(tei.requests)
        code = proxy.terminate(timeout=60)
        for t in threads:
            t.join(60)
        for i, outcome in results.items():
            if isinstance(outcome, Exception) or outcome.status_code != 200:
                tally.fail()
                tally.extra.setdefault("errors", []).append(repr(outcome)[:200])
            else:
                tally.check(tei.config, batches[i], outcome.json())
        log = proxy.log()
        tally.extra.update(exit_code=code, in_tei_at_signal=in_tei_at_signal)
        # uvicorn exits 0, or re-raises SIGTERM after a graceful shutdown (-15, i.e. 143)
        assert code in (0, -15), log[-3000:]
        assert "Application shutdown complete" in log, log[-3000:]
        assert len(results) == len(batches)
        assert tally.failed == 0 and tally.wrong == 0, (tally.extra.get("errors"), log[-3000:])
        assert "drained" in log, log[-3000:]
        # the write-behind queue was drained: a new proxy on the same store serves all from cache
        every = [t for b in batches for t in b]
        points = embedded_points(store) if store_kind == "embedded" else qdrant.points()
        known, wrong = check_points(points, tei.config, every)
        tally.extra["drained"] = log.split("drained ")[1].split(" ")[0]
        assert known == len(every) and wrong == 0
        computed = tei.embed_texts_computed
        qdrant.mode = "ok"
        again = start_proxy(tei.url, qdrant_path=store, **env)
        with httpx.Client() as client:
            r = client.post(f"{again.url}/embed", json={"inputs": every[:500]}, timeout=60)
        tally.check(tei.config, every[:500], r.json())
        assert (
            r.headers["x-cache-hits"] == str(len(every[:500]))
            and tei.embed_texts_computed == computed
        )


def test_sigkill_under_load_leaves_a_consistent_cache(
    tmp_path: Path, start_proxy, tally: Tally
) -> None:
    """SIGKILL mid-traffic: the next start opens the store, and every entry it serves is right;
    what is missing was at most still queued."""
    with EmulatorServer(EmulatorConfig(step_ms=5.0, per_text_ms=0.1)) as tei:
        store = tmp_path / "q"
        proxy = start_proxy(tei.url, qdrant_path=store)
        stop = threading.Event()
        answered: list[list[str]] = []
        sent: list[str] = []  # answered, or in flight when the proxy died
        lock = threading.Lock()

        def loop(worker: int) -> None:
            i = 0
            with httpx.Client() as client:
                while not stop.is_set():
                    texts = [f"sigkill {worker} {i} {j}" for j in range(16)]
                    i += 1
                    with lock:
                        sent.extend(texts)
                    try:
                        r = _post(client, proxy.url, texts)
                    except httpx.HTTPError:
                        return  # the proxy is gone
                    if r.status_code == 200:
                        tally.check(tei.config, texts, r.json())
                        with lock:
                            answered.append(texts)

        with cf.ThreadPoolExecutor(4) as pool:
            futures = [pool.submit(loop, w) for w in range(4)]
            time.sleep(2.0)
            proxy.kill()
            stop.set()
            for f in futures:
                f.result(30)
        every = [t for texts in answered for t in texts]
        points = embedded_points(store)
        # A request killed after its vectors were queued but before its answer was sent
        # leaves a right entry behind: entries are checked against every text sent.
        known, wrong = check_points(points, tei.config, sent)
        stored_and_answered, _ = check_points(points, tei.config, every)
        tally.wrong += wrong
        again = start_proxy(tei.url, qdrant_path=store)
        hits = 0
        with httpx.Client() as client:
            for start in range(0, len(every), 512):
                part = every[start : start + 512]
                r = client.post(f"{again.url}/embed", json={"inputs": part}, timeout=60)
                assert r.status_code == 200, r.text[:300]
                tally.check(tei.config, part, r.json())
                hits += int(r.headers["x-cache-hits"])
        tally.extra.update(
            answered_texts=len(every), stored_after_kill=len(points), served_from_cache=hits
        )
    assert known == len(points) and wrong == 0, "an entry that was never sent, or a wrong one"
    # every answered text that reached the store is served from it after the restart
    assert hits == stored_and_answered and stored_and_answered > 0
    assert tally.wrong == 0
