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
