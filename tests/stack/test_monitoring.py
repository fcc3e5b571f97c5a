"""The Grafana dashboard and its provisioning: every query names metrics the proxy exports."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from tests.tei_emulator import EmulatorConfig, EmulatorServer

from .conftest import STACK

GRAFANA = STACK / "grafana"
DASHBOARD = GRAFANA / "dashboards" / "cached-tei.json"
CLI = str(Path(sys.executable).with_name("cached-tei"))
# `name{matchers}` or a bare `name` in PromQL; label matchers like result="hit", route=~"..."
_SELECTOR = re.compile(r"\b(cached_tei_[a-z0-9_]+)(\{[^}]*\})?")
_MATCHER = re.compile(r'(\w+)\s*(=~|!~|!=|=)\s*"([^"]*)"')


def _panels(dashboard: dict) -> list[dict]:
    return [p for p in dashboard["panels"] if p["type"] != "row"]


def _queries(dashboard: dict) -> list[str]:
    return [t["expr"] for panel in _panels(dashboard) for t in panel["targets"]]


@pytest.fixture(scope="module")
def dashboard() -> dict:
    return json.loads(DASHBOARD.read_text(encoding="utf-8"))


Samples = dict[str, list[tuple[dict[str, str], float]]]


@pytest.fixture(scope="module")
def proxy_metrics(tmp_path_factory: pytest.TempPathFactory) -> Samples:
    """`cached-tei serve` in front of the TEI emulator after 2 misses then 2 hits: sample name
    -> (labels, value) as scraped from its real /metrics."""
    tmp = tmp_path_factory.mktemp("proxy")
    config = EmulatorConfig(dim=16, step_ms=1.0, per_text_ms=0.01)
    with EmulatorServer(config) as emulator:
        env = {k: v for k, v in os.environ.items() if not k.startswith("CACHED_TEI_")}
        env.update(
            CACHED_TEI_URL=emulator.url,
            CACHED_TEI_QDRANT_PATH=str(tmp / "qdrant"),
            XDG_CACHE_HOME=str(tmp / "cache"),
        )
        port = _free_port()
        proc = subprocess.Popen(
            [CLI, "serve", "--host", "127.0.0.1", "--port", str(port)],
            env=env,
            cwd=tmp,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        url = f"http://127.0.0.1:{port}"
        try:
            _wait_healthy(proc, url)
            with httpx.Client(base_url=url, timeout=30) as client:
                texts = ["dashboard a", "dashboard b"]
                for _ in range(2):  # misses, then hits
                    assert client.post("/embed", json={"inputs": texts}).status_code == 200
                assert len(emulator.requests) == 1
                text = client.get("/metrics").text
        finally:
            proc.terminate()
            proc.communicate(timeout=15)  # reaps it and closes its pipe
    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples.setdefault(sample.name, []).append((sample.labels, sample.value))
    return samples


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait_healthy(proc: subprocess.Popen, url: str) -> None:
    deadline = time.monotonic() + 60
    while True:
        if proc.poll() is not None:
            out = proc.stdout.read().decode() if proc.stdout else ""
            pytest.fail(f"cached-tei serve exited {proc.returncode}: {out[-3000:]}")
        try:
            if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        assert time.monotonic() < deadline, "cached-tei serve did not become healthy"
        time.sleep(0.1)


def test_dashboard_shows_what_the_issue_asks(dashboard):
    assert dashboard["uid"] == "cached-tei"
    titles = " | ".join(p["title"] for p in _panels(dashboard))
    for wanted in (
        "Hit ratio",
        "Texts/s from the cache and from TEI",
        "TEI latency",
        "TEI queue",
        "Qdrant errors",
        "Dropped cache writes",
        "Cache breaker",
    ):
        assert wanted in titles, wanted
    queries = "\n".join(_queries(dashboard))
    for metric in ("te_queue_size", "te_request_duration_bucket", "rest_responses_total"):
        assert metric in queries  # TEI's and Qdrant's own metrics, scraped by Prometheus


def test_every_panel_uses_the_provisioned_datasource(dashboard, gen):
    sources = yaml.safe_load(
        (GRAFANA / "provisioning" / "datasources" / "prometheus.yml").read_text(encoding="utf-8")
    )["datasources"]
    assert [(s["uid"], s["url"]) for s in sources] == [
        ("prometheus", f"http://prometheus:{gen.PROMETHEUS_PORT}")
    ]
    for panel in _panels(dashboard):
        assert panel["datasource"] == {"type": "prometheus", "uid": "prometheus"}, panel["title"]
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            assert target["datasource"]["uid"] == "prometheus"
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(set(ids)) == len(ids)


def test_dashboard_provider_reads_the_mounted_folder(gen, example_env):
    provider = yaml.safe_load(
        (GRAFANA / "provisioning" / "dashboards" / "cached-tei.yml").read_text(encoding="utf-8")
    )["providers"][0]
    settings = gen.Settings.from_env(dict(example_env, MONITORING="true"))
    mounts = gen.build_compose(settings)["services"]["grafana"]["volumes"]
    assert f"./grafana/dashboards:{provider['options']['path']}:ro" in mounts
    assert provider["type"] == "file"


def test_every_cached_tei_metric_queried_is_exported(dashboard, proxy_metrics):
    """Names (with the suffix Prometheus sees: _total, _bucket, _sum, _count) and label values
    compared with a real proxy's /metrics after misses and hits."""
    used = 0
    for expr in _queries(dashboard):
        for name, matchers in _SELECTOR.findall(expr):
            used += 1
            assert name in proxy_metrics, f"{name} (in {expr!r}) is not exported"
            exported = [labels for labels, _ in proxy_metrics[name]]
            for label, op, value in _MATCHER.findall(matchers):
                assert any(label in labels for labels in exported), f"{name} has no {label}"
                if op == "=":
                    values = {labels.get(label) for labels in exported}
                    assert value in values, f"{name}{{{label}={value!r}}}: exported {values}"
    assert used >= 15


def test_the_panels_read_the_counts_of_known_traffic(dashboard, proxy_metrics):
    """2 misses then 2 hits, one TEI request: what the hit-ratio, texts/s and breaker panels
    read from the proxy says exactly that."""

    def value(name: str, **labels: str) -> float:
        return sum(v for lbl, v in proxy_metrics[name] if labels.items() <= lbl.items())

    queries = "\n".join(_queries(dashboard))
    assert 'sum(rate(cached_tei_texts_total{result="hit"}' in queries
    assert value("cached_tei_texts_total", result="hit") == 2
    assert value("cached_tei_texts_total", result="miss") == 2
    assert value("cached_tei_tei_texts_total") == 2
    assert value("cached_tei_tei_request_duration_seconds_count") == 1
    assert value("cached_tei_cache_breaker_state", state="closed") == 1
    assert value("cached_tei_cache_breaker_state", state="open") == 0
    assert value("cached_tei_cache_writes_total", result="dropped") == 0
