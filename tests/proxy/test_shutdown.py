"""``cached-tei serve`` in a subprocess: SIGTERM stops accepting, finishes in-flight requests,
drains the write-behind queue; a fresh process then finds the vectors in the cache."""

from __future__ import annotations

import json
import signal
import subprocess
import threading
import time

import httpx
import numpy as np

from tests.support.env import scrubbed_environ
from tests.support.proxy import ProxyProcess
from tests.tei_emulator import Fault, expected_vector
from tests.tei_emulator.process import free_port

from .support import CLI, FAST, REPO, ProxyServer, engine_settings, run_cli, texts_sent


def start_serve(tei_url: str, store, port: int) -> subprocess.Popen[str]:
    env = scrubbed_environ(CACHED_TEI_URL=tei_url, CACHED_TEI_QDRANT_PATH=str(store))
    process = subprocess.Popen(
        [CLI, "serve", "--port", str(port), "--graceful-timeout", "20"],
        env=env,
        cwd=str(REPO),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    deadline = time.monotonic() + 30
    while True:
        assert process.poll() is None, process.stdout.read()
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                return process
        except httpx.HTTPError:
            pass
        assert time.monotonic() < deadline, "cached-tei serve did not become healthy"
        time.sleep(0.1)


def test_sigterm_finishes_in_flight_requests_and_drains_writes(emu, tmp_path):
    store = tmp_path / "qdrant"
    port = free_port()
    process = start_serve(emu.url, store, port)
    texts = [f"drain {i}" for i in range(2 * FAST.max_client_batch_size + 6)]
    emu.inject(Fault("delay", seconds=1.5, count=3))  # every TEI batch of this request is slow
    answers: list[httpx.Response] = []
    client = threading.Thread(
        target=lambda: answers.append(
            httpx.post(f"http://127.0.0.1:{port}/embed", json={"inputs": texts}, timeout=30)
        )
    )
    try:
        client.start()
        deadline = time.monotonic() + 10
        while emu.stats()["pending_faults"] and time.monotonic() < deadline:
            time.sleep(0.02)  # until the batches reach TEI
        process.send_signal(signal.SIGTERM)
        time.sleep(0.3)
        try:
            refused = httpx.get(f"http://127.0.0.1:{port}/health", timeout=2)
        except httpx.ConnectError:
            refused = None
        assert refused is None, "a stopping proxy must not accept new connections"

        client.join(30)
        assert process.wait(30) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    log, _ = process.communicate()  # the whole log; closes the pipe
    assert len(answers) == 1 and answers[0].status_code == 200, log
    assert np.array_equal(
        np.asarray(answers[0].json(), np.float32),
        np.stack([expected_vector(FAST, t) for t in texts]),
    )
    assert "drained" in log and "Traceback" not in log, log

    stats = run_cli("cache", "stats", "--json", "--qdrant-path", str(store))
    assert stats.returncode == 0, stats.stderr
    assert json.loads(stats.stdout)["entries"] == len(texts)

    emu.reset_log()
    with ProxyServer(engine_settings(emu.url, store)) as fresh:
        again = httpx.post(fresh.url + "/embed", json={"inputs": texts}, timeout=30)
        assert again.status_code == 200 and again.content == answers[0].content
        assert again.headers["x-cache-hits"] == str(len(texts))
    assert texts_sent(emu) == []


def test_a_hung_tei_does_not_hold_the_stop_and_waiting_calls_get_a_503(emu, tmp_path):
    """SIGTERM while TEI hangs: the proxy exits long before TEI would answer (within
    --graceful-timeout, the cache's drain included), and the calls still waiting get TEI's 503
    JSON, never a plain-text 500."""
    emu.inject(Fault("delay", seconds=15, count=2))
    answers: dict[str, httpx.Response] = {}
    calls = {"/embed": {"inputs": ["hung 1"]}, "/v1/embeddings": {"input": ["hung 2"]}}
    with ProxyProcess(tmp_path, emu.url, args=("--graceful-timeout", "1")) as proxy:
        threads = []
        for faults_left, (route, body) in enumerate(calls.items()):

            def call(route: str = route, body: dict = body) -> None:
                answers[route] = httpx.post(proxy.url + route, json=body, timeout=300)

            threads.append(threading.Thread(target=call))
            threads[-1].start()
            deadline = time.monotonic() + 10
            while emu.stats()["pending_faults"] > 1 - faults_left:
                assert time.monotonic() < deadline, "the call did not reach TEI"
                time.sleep(
                    0.02
                )  # one TEI request each: the first is in flight when the second comes
        assert proxy.terminate(timeout=60) == 0
        assert emu.requests == [], "the stop waited for TEI"  # recorded once answered
        for thread in threads:
            thread.join(10)
        log = proxy.log()
    deadline = time.monotonic() + 60
    while len(emu.requests) < 2:  # let the emulator finish its answers before it stops
        assert time.monotonic() < deadline
        time.sleep(0.1)
    native, openai = answers["/embed"], answers["/v1/embeddings"]
    message = (
        "the proxy is shutting down and this request did not finish within its graceful "
        "timeout (CACHED_TEI_PROXY_GRACEFUL_TIMEOUT); send it again"
    )
    assert (native.status_code, native.json()) == (
        503,
        {"error": message, "error_type": "Unhealthy"},
    ), log
    assert (openai.status_code, openai.json()) == (
        503,
        {"message": message, "code": 503, "type": "Unhealthy"},
    ), log
    assert "Traceback" not in log and "stopped by SIGTERM" in log, log
