"""A full disk under the embedded store: the cache stops writing, embedding goes on.

Runs on a real 32 MB tmpfs (mounted here; CI runs as root), where qdrant-edge's memory maps
would otherwise end the process with SIGBUS: while writing, and again when a filled store is
loaded (tmpfs allocates the holes of a file that is read through a map).
"""

from __future__ import annotations

import re
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest

from cached_tei.stores.disk import free_bytes
from tests.proxy.support import run_cli
from tests.tei_emulator import EmulatorServer, expected_vector

BATCH = 1000


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 32 MB tmpfs, unmounted afterwards; skipped where ``mount`` is refused (not root)."""
    mount = tmp_path / "disk"
    mount.mkdir()
    result = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=32m", "tmpfs", str(mount)],
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        pytest.skip(f"cannot mount a 32 MB tmpfs (needs root): {result.stderr.strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def _embed(proxy_url: str, tei: EmulatorServer, texts: list[str]) -> httpx.Response:
    response = httpx.post(f"{proxy_url}/embed", json={"inputs": texts}, timeout=60)
    assert response.status_code == 200, response.text
    vectors = np.asarray(response.json(), dtype=np.float32)
    expected = np.stack([expected_vector(tei.config, t) for t in texts])
    assert np.array_equal(vectors, expected)
    return response


def _metric(proxy_url: str, name: str) -> float:
    text = httpx.get(f"{proxy_url}/metrics", timeout=10).text
    found = re.search(rf"^{re.escape(name)} (\S+)$", text, re.MULTILINE)
    assert found, f"{name} not in /metrics"
    return float(found.group(1))


def _cli(store: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return run_cli("cache", *args, "--qdrant-path", str(store))


def test_a_full_disk_stops_writes_and_never_kills_the_proxy(
    small_disk: Path, tei: EmulatorServer, start_proxy
) -> None:
    store = small_disk / "qdrant"
    proxy = start_proxy(tei.url, qdrant_path=store)
    batches = [[f"disk {b} text {i} " + "word " * 20 for i in range(BATCH)] for b in range(12)]
    for texts in batches:  # 12,000 new vectors: far more than 32 MB of store can hold
        _embed(proxy.url, tei, texts)
    deadline = time.monotonic() + 60
    while _metric(proxy.url, "cached_tei_write_queue_depth") and time.monotonic() < deadline:
        time.sleep(0.2)
    assert proxy.log().count("the cache is skipped until space is freed") == 1  # logged once
    assert _metric(proxy.url, "cached_tei_cache_disk_full_total") > 0  # and counted
    assert free_bytes(small_disk) > 0
    # what was stored is still served from the cache, and right
    served = _embed(proxy.url, tei, batches[0])
    assert served.headers["x-cache-hits"] == str(BATCH)
    assert proxy.terminate() == 0  # no SIGBUS (-7)

    # another process fills the disk to the last byte; a restart reads no hole of the store
    with open(small_disk / "filler", "wb", buffering=0) as filler:  # nothing left to flush
        while True:
            try:
                filler.write(b"\0" * 65536)
            except OSError:
                break
    assert free_bytes(small_disk) < 65536
    proxy = start_proxy(tei.url, qdrant_path=store)
    assert httpx.get(f"{proxy.url}/info", timeout=30).status_code == 200
    _embed(proxy.url, tei, batches[0][:500])  # computed by TEI: the store is skipped
    assert _metric(proxy.url, "cached_tei_cache_skipped_total") >= 500
    stats = _cli(store, "stats")  # while the proxy holds it
    assert stats.returncode == 0, stats.stderr
    assert proxy.terminate() == 0

    stats = _cli(store, "stats")
    assert stats.returncode == 0, stats.stderr
    assert "? entries" in stats.stdout  # cannot be opened safely, so not counted
    cleared = _cli(store, "clear", "--yes")
    assert cleared.returncode == 0, cleared.stderr
    assert not any(store.glob("cached_tei_*"))
