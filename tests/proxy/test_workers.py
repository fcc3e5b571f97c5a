"""``cached-tei serve --workers N``: several processes over a Qdrant server, refused over an
embedded folder."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator

import httpx
import numpy as np
import psutil
import pytest

from cached_tei.keys import point_id
from tests.faults.fake_qdrant import FakeQdrant
from tests.support.env import scrubbed_environ
from tests.tei_emulator import EmulatorServer, expected_vector
from tests.tei_emulator.process import free_port

from .support import CLI, FAST, REPO, run_cli, texts_sent


@pytest.fixture
def qdrant() -> Iterator[FakeQdrant]:
    with FakeQdrant() as server:
        yield server


def serve(*args: str, env: dict[str, str]) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [CLI, "serve", *args],
        env=scrubbed_environ(**env),
        cwd=str(REPO),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def wait_healthy(url: str, process: subprocess.Popen[str]) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        assert process.poll() is None, process.communicate()[0]
        try:
            if httpx.get(url + "/health", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise AssertionError("the proxy did not become healthy")


def serve_two_workers(emu: EmulatorServer, qdrant: FakeQdrant) -> tuple[subprocess.Popen[str], str]:
    """``cached-tei serve`` with two workers over the Qdrant stand-in, once healthy; its URL."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {
        "CACHED_TEI_URL": emu.url,
        "CACHED_TEI_QDRANT_URL": qdrant.url,
        "CACHED_TEI_PROXY_PORT": str(port),
        "CACHED_TEI_PROXY_WORKERS": "2",
    }
    process = serve(env=env)
    try:
        wait_healthy(url, process)
    except BaseException:
        process.kill()
        process.communicate()
        raise
    return process, url


def workers_of(process: subprocess.Popen[str]) -> list[psutil.Process]:
    """The supervisor's running workers (not one that ended and awaits its reaping)."""
    workers = []
    for child in psutil.Process(process.pid).children():
        with contextlib.suppress(psutil.NoSuchProcess):  # a zombie included
            if "multiprocessing.spawn" in " ".join(child.cmdline()):
                workers.append(child)
    return workers


def test_two_workers_share_one_qdrant_server(emu, qdrant):
    process, url = serve_two_workers(emu, qdrant)
    try:
        assert len(workers_of(process)) == 2
        first = httpx.post(url + "/embed", json={"inputs": ["across workers"]})
        assert first.headers["x-cache-misses"] == "1"
        deadline = time.monotonic() + 10
        while point_id("across workers") not in qdrant.points():
            assert time.monotonic() < deadline, "the vector never reached Qdrant"
            time.sleep(0.05)
        for _ in range(8):  # new connections: either worker may answer, from Qdrant
            again = httpx.post(url + "/embed", json={"inputs": ["across workers"]})
            assert again.headers["x-cache-hits"] == "1"
            assert np.array_equal(
                np.asarray(again.json()[0], np.float32), expected_vector(FAST, "across workers")
            )
        assert texts_sent(emu) == ["across workers"]
    finally:
        process.send_signal(signal.SIGTERM)
        output = process.communicate(timeout=60)[0]
    assert process.returncode == 0, output


def test_workers_log_json_lines_when_asked(emu, qdrant):
    port = free_port()
    env = {
        "CACHED_TEI_URL": emu.url,
        "CACHED_TEI_QDRANT_URL": qdrant.url,
        "CACHED_TEI_PROXY_PORT": str(port),
        "CACHED_TEI_PROXY_ACCESS_LOG": "true",
    }
    process = serve("--workers", "2", "--log-format", "json", env=env)
    try:
        wait_healthy(f"http://127.0.0.1:{port}", process)
        answer = httpx.post(f"http://127.0.0.1:{port}/embed", json={"inputs": ["logged"]})
        assert answer.status_code == 200
    finally:
        process.send_signal(signal.SIGTERM)
        output = process.communicate(timeout=60)[0]
    entries = [json.loads(line) for line in output.splitlines()]  # every line is JSON
    pids = {entry["message"] for entry in entries if "Started server process" in entry["message"]}
    assert len(pids) == 2, output
    embeds = [e for e in entries if "POST /embed" in e["message"]]
    assert [e["logger"] for e in embeds] == ["uvicorn.access"] and embeds[0]["request_id"]


def test_auto_is_the_cpus_this_process_may_use(emu, qdrant):
    port = free_port()
    env = {
        "CACHED_TEI_URL": emu.url,
        "CACHED_TEI_QDRANT_URL": qdrant.url,
        "CACHED_TEI_PROXY_PORT": str(port),
    }
    process = serve("--workers", "auto", env=env)
    try:
        wait_healthy(f"http://127.0.0.1:{port}", process)
        cpus = len(os.sched_getaffinity(0))
        assert len(workers_of(process)) == (cpus if cpus > 1 else 0)
    finally:
        process.send_signal(signal.SIGTERM)
        process.communicate(timeout=60)


def test_several_workers_are_refused_on_an_embedded_folder(emu, tmp_path):
    folder = tmp_path / "embedded"
    result = run_cli(
        "serve",
        "--tei-url",
        emu.url,
        "--qdrant-path",
        str(folder),
        env={"CACHED_TEI_PROXY_WORKERS": "2"},
        timeout=30,
    )
    assert result.returncode == 1
    assert result.stderr.strip() == (
        f"cached-tei: error: 2 proxy workers need a Qdrant server: the embedded cache "
        f"folder {folder} can be opened by one process only. Set CACHED_TEI_QDRANT_URL "
        "(--qdrant-url), or run one worker (CACHED_TEI_PROXY_WORKERS=1)"
    )
    assert not folder.exists()


def test_workers_must_be_positive(tmp_path):
    result = run_cli("serve", "--workers", "0", "--qdrant-path", str(tmp_path / "q"))
    assert result.returncode == 2  # a bad flag value is a bad command line
    assert "workers must be at least 1 or 'auto'" in result.stderr


def test_several_workers_are_refused_on_an_in_memory_cache(emu):
    result = run_cli(
        "serve",
        "--tei-url",
        emu.url,
        "--qdrant-url",
        ":memory:",
        "--workers",
        "2",
        timeout=30,
    )
    assert result.returncode == 1
    assert result.stderr.strip() == (
        "cached-tei: error: 2 proxy workers cannot share an in-memory cache "
        "(CACHED_TEI_QDRANT_URL=:memory:): each would keep its own. Set CACHED_TEI_QDRANT_URL "
        "to a Qdrant server, or run one worker (CACHED_TEI_PROXY_WORKERS=1)"
    )


@pytest.mark.parametrize("kind", ["embedded", "memory", "server"])
def test_info_names_the_store_kind(emu, make_proxy, qdrant, kind):
    urls = {"embedded": None, "memory": ":memory:", "server": qdrant.url}
    proxy = make_proxy(emu.url, qdrant_url=urls[kind])
    assert httpx.post(proxy.url + "/embed", json={"inputs": "kind"}).status_code == 200
    assert httpx.get(proxy.url + "/info").json()["cache"]["store"] == kind


def test_a_serving_process_settles_its_garbage_collector(tmp_path):
    """The app a served process builds leaves what was loaded at start out of the collector's
    sight and collects young objects far less often than Python's default (700)."""
    code = (
        "import gc, sys\n"
        "from cached_tei.proxy.server import _worker_app\n"
        "from cached_tei.proxy import ProxySettings\n"
        "from cached_tei import CachedTEISettings\n"
        "before = gc.get_threshold()[0], gc.get_freeze_count()\n"
        "settings = CachedTEISettings(tei_url='http://127.0.0.1:9', qdrant_path=sys.argv[1])\n"
        "_worker_app(settings, ProxySettings(), 'text')\n"
        "print(*before, gc.get_threshold()[0], gc.get_freeze_count())\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path)],
        capture_output=True,
        text=True,
        check=True,
        env=scrubbed_environ(),
    )
    threshold, frozen, settled, frozen_after = map(int, done.stdout.split())
    assert (threshold, frozen) == (700, 0)
    assert settled >= 10 * threshold and frozen_after > 10_000
