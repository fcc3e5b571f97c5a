"""The monitoring profile checked by a real Prometheus (Debian's): promtool accepts the committed
prometheus.yml, and with its targets rewritten to loopback, Prometheus scrapes a live
`cached-tei serve`, the TEI emulator and a Qdrant stand-in, then answers every query of the
Grafana dashboard, the cache-fault panels with Qdrant failing."""

from __future__ import annotations

import json
import math
import re
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import httpx
import numpy as np
import pytest
import yaml
from qdrant_client import QdrantClient

from tests.faults.fake_qdrant import FakeQdrant
from tests.support.prometheus import Prometheus, prometheus_binary
from tests.support.proxy import ProxyProcess
from tests.tei_emulator import EmulatorConfig, EmulatorServer, expected_vector

from .conftest import STACK

PROMETHEUS_YML = STACK / "prometheus.yml"
DASHBOARD = STACK / "grafana" / "dashboards" / "cached-tei.json"
SCRAPE_SECONDS = 1
CONFIG = EmulatorConfig(dim=16, step_ms=1.0, per_text_ms=0.01)
# Qdrant's own error counters: no series until Qdrant has answered an error.
QDRANT_ERRORS = ("rest_responses_total", "grpc_responses_total")
_VARIABLE = re.compile(r"\$(\w+)|\$\{(\w+)\}")


def _binary(name: str) -> str:
    found = prometheus_binary(name)
    if found is None:
        pytest.skip(f"{name} not found (install Debian's prometheus package)")
    return found


def dashboard_queries() -> list[str]:
    dashboard = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    assert not dashboard.get("templating", {}).get("list"), "substitute the new variables below"
    return [t["expr"] for p in dashboard["panels"] if p["type"] != "row" for t in p["targets"]]


def as_grafana_sends(expr: str) -> str:
    """Grafana's substitution for a Prometheus datasource whose scrape interval is
    SCRAPE_SECONDS: ``$__interval`` is at least that interval, and ``$__rate_interval`` is
    max($__interval + scrape interval, 4 x scrape interval)."""
    values = {
        "__interval": f"{SCRAPE_SECONDS}s",
        "__rate_interval": f"{max(2 * SCRAPE_SECONDS, 4 * SCRAPE_SECONDS)}s",
    }

    def substitute(match: re.Match[str]) -> str:
        name = match.group(1) or match.group(2)
        assert name in values, f"unknown Grafana variable ${name} in {expr!r}"
        return values[name]

    return _VARIABLE.sub(substitute, expr)


def test_promtool_accepts_the_committed_config():
    """Syntax only: the Qdrant key file it names exists inside the Prometheus container."""
    checked = subprocess.run(
        [_binary("promtool"), "check", "config", "--syntax-only", str(PROMETHEUS_YML)],
        capture_output=True,
        text=True,
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_promtool_accepts_the_pools_config(gen, pools_env, tmp_path):
    """With the sparse and rerank pools, a job per pool scrapes its TEI services."""
    text = gen.render_prometheus_config(gen.Settings.from_env(pools_env))
    jobs = {job["job_name"]: job for job in yaml.safe_load(text)["scrape_configs"]}
    assert jobs["tei-sparse"]["static_configs"] == [{"targets": ["tei-sparse-0:80"]}]
    assert jobs["tei-rerank"]["static_configs"] == [
        {"targets": ["tei-rerank-0:80", "tei-rerank-1:80"]}
    ]
    (tmp_path / "prometheus.yml").write_text(text)
    checked = subprocess.run(
        [_binary("promtool"), "check", "config", "--syntax-only", str(tmp_path / "prometheus.yml")],
        capture_output=True,
        text=True,
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr


def loopback_config(targets: dict[str, str], key_file: Path) -> dict[str, Any]:
    """The committed prometheus.yml with each job's target on loopback, scraped every
    SCRAPE_SECONDS, and the Qdrant key read from ``key_file``."""
    config = yaml.safe_load(PROMETHEUS_YML.read_text(encoding="utf-8"))
    interval = f"{SCRAPE_SECONDS}s"
    config["global"].update(
        scrape_interval=interval, scrape_timeout=interval, evaluation_interval=interval
    )
    jobs = [job["job_name"] for job in config["scrape_configs"]]
    assert sorted(jobs) == sorted(targets), f"jobs {jobs}: give the test a target for each"
    for job in config["scrape_configs"]:
        job["static_configs"] = [{"targets": [targets[job["job_name"]]]}]
        if "authorization" in job:
            job["authorization"]["credentials_file"] = str(key_file)
    return config


@dataclass
class Traffic:
    """Requests to the proxy in a thread until stopped: each one a new text (a miss) and a
    repeated one (a hit); every vector compared with the emulator's oracle."""

    url: str
    sent: int = 0
    wrong: int = 0

    def __post_init__(self) -> None:
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        with httpx.Client(base_url=self.url, timeout=30) as client:
            while not self._stop.is_set():
                texts = [f"monitored {self.sent}", "monitored again"]
                response = client.post("/embed", json={"inputs": texts})
                self.sent += 1
                if response.status_code != 200 or not all(
                    np.array_equal(np.asarray(v, np.float32), expected_vector(CONFIG, t))
                    for t, v in zip(texts, response.json(), strict=True)
                ):
                    self.wrong += 1
                self._stop.wait(0.05)

    def __enter__(self) -> Traffic:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(30)


def _wait(condition: Callable[[], bool], what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"waited {timeout}s for {what}"
        time.sleep(0.2)


def _scraped(prometheus: Prometheus, times: int, since: float) -> Callable[[], bool]:
    """True once every target has been scraped ``times`` times since ``since`` (epoch s)."""

    def check() -> bool:
        window = math.ceil(time.time() - since)
        counts = prometheus.query(f"count_over_time(up[{window}s])")
        return len(counts) == 3 and all(float(s["value"][1]) >= times for s in counts)

    return check


Samples = list[tuple[dict[str, str], float]]


def _evaluate(prometheus: Prometheus, queries: list[str]) -> dict[str, Samples]:
    """Each query as Grafana sends it -> its result's (labels, value) pairs."""
    return {
        expr: [
            (s["metric"], float(s["value"][1])) for s in prometheus.query(as_grafana_sends(expr))
        ]
        for expr in queries
    }


def _not_of_qdrant_errors(queries: list[str]) -> list[str]:
    return [q for q in queries if not any(name in q for name in QDRANT_ERRORS)]


def _has_data(samples: Samples) -> bool:
    return bool(samples) and all(math.isfinite(value) for _, value in samples)


def _evaluate_until_data(
    prometheus: Prometheus, queries: list[str], needed: list[str], timeout: float = 20.0
) -> dict[str, Samples]:
    """Evaluations once every ``needed`` query has data (a series needs two scrapes in a rate
    window, and a loaded machine may miss one), or the last ones after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        found = _evaluate(prometheus, queries)
        if all(_has_data(found[q]) for q in needed) or time.monotonic() > deadline:
            return found
        time.sleep(SCRAPE_SECONDS)


@dataclass
class Evaluations:
    healthy: dict[str, Samples]
    failing: dict[str, Samples]
    traffic: Traffic


@pytest.fixture(scope="module")
def evaluations(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Evaluations]:
    """Every dashboard query evaluated by Prometheus after traffic with a healthy Qdrant, then
    again with Qdrant failing (HTTP 500 and gRPC INTERNAL)."""
    binary = _binary("prometheus")
    tmp = tmp_path_factory.mktemp("prometheus")
    key_file = tmp / "qdrant_api_key"
    key_file.write_text("unused-by-the-stand-in")
    queries = dashboard_queries()
    with (
        EmulatorServer(CONFIG) as emulator,
        FakeQdrant(grpc=True) as qdrant,
        ProxyProcess(
            tmp,
            emulator.url,
            CACHED_TEI_QDRANT_URL=qdrant.url,
            CACHED_TEI_BREAKER_COOLDOWN="300",
        ) as proxy,
    ):
        targets = {
            "cached-tei-proxy": f"127.0.0.1:{proxy.port}",
            "tei": emulator.url.removeprefix("http://"),
            "qdrant": f"127.0.0.1:{qdrant.port}",
        }
        config = loopback_config(targets, key_file)
        prometheus = Prometheus(binary, config, tmp)
        checked = subprocess.run(
            [_binary("promtool"), "check", "config", str(prometheus.config_path)],
            capture_output=True,
            text=True,
        )
        assert checked.returncode == 0, checked.stdout + checked.stderr
        grpc_client = QdrantClient(
            url=qdrant.url,
            grpc_port=qdrant.grpc_port,
            prefer_grpc=True,
            timeout=5,
            check_compatibility=False,
        )
        with prometheus, Traffic(proxy.url) as traffic:
            # Rate windows hold 4 scrapes: wait for 5 after the traffic started.
            _wait(_scraped(prometheus, 5, time.time()), "5 scrapes")
            healthy = _evaluate_until_data(prometheus, queries, _not_of_qdrant_errors(queries))
            qdrant.mode = "down"
            failed_at = time.time()
            for _ in range(3):  # another client's gRPC reads fail too
                with pytest.raises(grpc.RpcError, match="injected fault"):
                    grpc_client.retrieve("cached_tei_any", ids=[1])
            _wait(_scraped(prometheus, 5, failed_at), "5 more scrapes")
            failing = _evaluate_until_data(prometheus, queries, queries)
        grpc_client.close()
    yield Evaluations(healthy, failing, traffic)


def test_every_dashboard_query_returns_data(evaluations):
    """With Qdrant failing, every query answers finite numbers; with Qdrant healthy, every
    query but those of Qdrant's own errors does (those have no series before an error)."""
    assert evaluations.traffic.sent >= 20 and evaluations.traffic.wrong == 0
    assert len(evaluations.failing) == len(dashboard_queries()) >= 20
    no_data = [expr for expr, values in evaluations.failing.items() if not _has_data(values)]
    assert not no_data, f"no data with Qdrant failing: {no_data}"
    empty = [expr for expr, values in evaluations.healthy.items() if not _has_data(values)]
    assert empty and not _not_of_qdrant_errors(empty), empty


def test_the_cache_panels_show_the_fault(evaluations):
    """Breaker open (2), cache errors and dropped writes counted, Qdrant's own error answers
    (HTTP 500, gRPC INTERNAL): zero or absent while Qdrant is healthy, shown once it fails."""

    def samples(phase: dict[str, Samples], start: str) -> Samples:
        (expr,) = [e for e in phase if e.startswith(start)]
        return phase[expr]

    def value(phase: dict[str, Samples], start: str) -> float:
        return sum(v for _, v in samples(phase, start))

    breaker = 'max(cached_tei_cache_breaker_state{state="open"}) * 2'
    assert value(evaluations.healthy, breaker) == 0
    assert value(evaluations.failing, breaker) == 2
    for counted in (
        "sum(increase(cached_tei_cache_errors_total[1h]))",
        'sum(increase(cached_tei_cache_writes_total{result="dropped"}[1h]))',
    ):
        assert value(evaluations.healthy, counted) == 0
        assert value(evaluations.failing, counted) > 0
    for errors, status in (
        ("sum by (status) (rate(rest_", "500"),
        ("sum by (status) (rate(grpc_", "13"),
    ):
        assert samples(evaluations.healthy, errors) == []
        assert [labels for labels, _ in samples(evaluations.failing, errors)] == [
            {"status": status}
        ]
