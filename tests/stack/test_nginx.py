"""The generated nginx.conf, run by the real nginx in front of TEI emulators on loopback."""

from __future__ import annotations

import concurrent.futures as cf
import re
import subprocess
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import pytest

from tests.support.nginx import start_nginx
from tests.support.proxy import ProxyProcess
from tests.tei_emulator.process import free_port


def _settings(gen, example_env, **overrides):
    env = dict(example_env, TEI_VARIANT="cpu", GPU_IDS="", TEI_REPLICAS="3")
    env.update(overrides)
    return gen.Settings.from_env(env)


def _nginx_test(nginx_bin: str, prefix: Path, conf: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [
            nginx_bin,
            "-t",
            "-q",
            "-p",
            str(prefix),
            "-c",
            str(conf),
            "-e",
            str(prefix / "startup-error.log"),
        ],
        capture_output=True,
        text=True,
        timeout=30,
    )


# ---- nginx -t -----------------------------------------------------------------------------


def _checkable_here(text: str, prefix: Path) -> str:
    """A container nginx.conf as Debian's nginx can check it as this user: every upstream name
    mapped to loopback without `resolve` (Debian's nginx 1.22 lacks it; open source nginx has
    it from 1.27.3 and the generator refuses an older NGINX_VERSION), and the container paths
    (user nginx, /var/run, /dev/std*) swapped for writable ones under `prefix`."""
    text, named = re.subn(r"server [a-z0-9-]+:80 resolve ", "server 127.0.0.1:9 ", text)
    assert named and " resolve " not in text
    text = text.replace("user nginx;\n", "").replace(
        "pid /var/run/nginx.pid;", f"pid {prefix}/nginx.pid;"
    )
    text = text.replace("/dev/stderr", str(prefix / "error.log")).replace(
        "/dev/stdout", str(prefix / "access.log")
    )
    for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"):
        text = text.replace("http {\n", f"http {{\n    {kind}_temp_path {prefix / kind};\n", 1)
    return text


@pytest.mark.nginx
def test_committed_nginx_conf_passes_nginx_t(nginx_bin, tmp_path):
    """The committed config, byte for byte, with the upstream names mapped to loopback."""
    text = (Path(__file__).resolve().parents[2] / "stack" / "nginx.conf").read_text()
    assert "server tei-0:80 resolve " in text and "resolver 127.0.0.11 valid=10s" in text
    (tmp_path / "nginx.conf").write_text(_checkable_here(text, tmp_path))
    out = _nginx_test(nginx_bin, tmp_path, tmp_path / "nginx.conf")
    assert out.returncode == 0, out.stderr


@pytest.mark.nginx
def test_pools_nginx_conf_passes_nginx_t(gen, pools_env, nginx_bin, tmp_path):
    """The nginx.conf generated for the test .env with every pool, as the container gets it."""
    text = gen.render_nginx_conf(gen.Settings.from_env(pools_env))
    for server in ("tei-1:80", "tei-sparse-0:80", "tei-rerank-1:80"):
        assert f"server {server} resolve " in text
    (tmp_path / "nginx.conf").write_text(_checkable_here(text, tmp_path))
    out = _nginx_test(nginx_bin, tmp_path, tmp_path / "nginx.conf")
    assert out.returncode == 0, out.stderr


@pytest.mark.nginx
@pytest.mark.parametrize(
    "overrides",
    [
        {},
        {"TEI_REMOTE_UPSTREAMS": "10.0.0.12:8080,gpu-box-2:80", "NGINX_NEXT_UPSTREAM_TRIES": "5"},
        {"TEI_PAYLOAD_LIMIT": "10000000", "NGINX_MAX_FAILS": "0", "NGINX_KEEPALIVE": "8"},
    ],
)
def test_rendered_conf_passes_nginx_t(gen, example_env, nginx_bin, tmp_path, overrides):
    s = _settings(gen, example_env, **overrides)
    ups = [f"127.0.0.1:{9000 + i}" for i in range(len(s.upstreams))]
    conf = tmp_path / "nginx.conf"
    conf.write_text(
        gen.render_nginx_conf(
            s, upstreams=ups, listen=f"127.0.0.1:{free_port()}", runtime_dir=tmp_path
        )
    )
    out = _nginx_test(nginx_bin, tmp_path, conf)
    assert out.returncode == 0, out.stderr


def test_conf_directives(gen, example_env):
    conf = gen.render_nginx_conf(_settings(gen, example_env))
    for directive in (
        "least_conn;",
        "zone tei 64k;",
        "keepalive 64;",
        "proxy_http_version 1.1;",
        'proxy_set_header Connection "";',
        "client_max_body_size 2000000;",
        "proxy_connect_timeout 2s;",
        "proxy_read_timeout 300s;",
        "proxy_next_upstream error timeout http_502 http_503 http_504 non_idempotent;",
        "proxy_next_upstream_tries 3;",
        "max_fails=3 fail_timeout=10s",
    ):
        assert directive in conf, directive
    active = "\n".join(line.split("#")[0] for line in conf.splitlines())
    assert "http_429" not in active and "http_500" not in active


# ---- the real nginx in front of three emulators -----------------------------------------


@pytest.fixture
def cluster(gen, example_env, nginx_bin, tmp_path):
    from tests import tei_emulator as emu

    config = emu.EmulatorConfig(step_ms=2.0, per_text_ms=0.1)
    replicas = [emu.EmulatorServer(config, port=0).start() for _ in range(3)]
    s = _settings(gen, example_env, NGINX_FAIL_TIMEOUT="30s")
    try:
        nginx = start_nginx([f"127.0.0.1:{r.port}" for r in replicas], tmp_path, s, nginx_bin)
    except RuntimeError:
        for r in replicas:
            r.stop()
        raise
    try:
        yield emu, config, replicas, nginx
    finally:
        nginx.stop()
        for r in replicas:
            r.stop()


def _embed(client: httpx.Client, url: str, texts: list[str]) -> httpx.Response:
    return client.post(f"{url}/embed", json={"inputs": texts}, timeout=30)


def _assert_vectors(emu, config, texts, body):
    assert len(body) == len(texts)
    for text, vec in zip(texts, body, strict=True):
        np.testing.assert_array_equal(
            np.asarray(vec, dtype=np.float32), emu.expected_vector(config, text)
        )


def _run_load(url: str, n: int, workers: int, tag: str, on_done=None):
    """n requests of 2 texts, `workers` at a time; `on_done(k)` after the k-th completes."""
    results: dict[int, tuple[int, object, list[str]]] = {}
    lock = threading.Lock()
    local = threading.local()
    clients: list[httpx.Client] = []  # one per worker thread, closed at the end

    def one(i: int):
        texts = [f"{tag} request {i} text a", f"{tag} request {i} text b"]
        if not hasattr(local, "client"):
            local.client = httpx.Client()
            with lock:
                clients.append(local.client)
        r = _embed(local.client, url, texts)
        with lock:
            results[i] = (r.status_code, r.json() if r.status_code == 200 else r.text, texts)
            done = len(results)
        if on_done is not None:
            on_done(done)

    try:
        with cf.ThreadPoolExecutor(workers) as pool:
            for f in [pool.submit(one, i) for i in range(n)]:
                f.result()
    finally:
        for client in clients:
            client.close()
    return results


@pytest.mark.nginx
def test_traffic_spreads_over_all_replicas(cluster):
    emu, config, replicas, nginx = cluster
    results = _run_load(nginx.url, 60, 8, "spread")
    assert all(status == 200 for status, _, _ in results.values()), results
    for _status, body, texts in results.values():
        _assert_vectors(emu, config, texts, body)
    counts = [len(r.requests) for r in replicas]
    assert sum(counts) == 60, counts
    assert all(c >= 5 for c in counts), f"uneven spread: {counts}"


@pytest.mark.nginx
def test_keepalive_to_upstreams(cluster):
    """HTTP/1.1 with an empty Connection header: nginx reuses upstream connections."""
    emu, config, replicas, nginx = cluster
    with httpx.Client() as c:
        for i in range(30):
            assert _embed(c, nginx.url, [f"keepalive {i}"]).status_code == 200
    # the emulators' /metrics or logs cannot see sockets; ask the kernel instead:
    # established connections from nginx to the replicas are still open after the requests.
    ports = {r.port for r in replicas}
    out = subprocess.run(["ss", "-Htn", "state", "established"], capture_output=True, text=True)
    if out.returncode != 0:
        pytest.skip("ss not available")
    peers = [line.split()[3] for line in out.stdout.splitlines() if len(line.split()) >= 4]
    open_to_replicas = [peer for peer in peers if peer in {f"127.0.0.1:{p}" for p in ports}]
    assert open_to_replicas, "no idle keepalive connection to any replica"


@pytest.mark.nginx
def test_stopping_a_replica_mid_run_loses_no_request(cluster):
    emu, config, replicas, nginx = cluster
    victim = replicas[1]

    served_before_stop: list[int] = []

    def on_done(k: int):
        if k == 40:  # a quarter in: stop it while requests are in flight
            served_before_stop.append(len(victim.requests))
            threading.Thread(target=victim.stop, daemon=True).start()

    results = _run_load(nginx.url, 160, 8, "failover", on_done)
    bad = {i: (s, b) for i, (s, b, _) in results.items() if s != 200}
    assert not bad, f"lost requests: {bad}\n{nginx.error_log()[-2000:]}"
    for _status, body, texts in results.values():
        _assert_vectors(emu, config, texts, body)
    assert served_before_stop and served_before_stop[0] > 0, "the stopped replica never served"
    # nginx did meet the dead replica (refused/reset) and moved those requests on
    log = nginx.error_log()
    assert f"127.0.0.1:{victim.port}" in log, log[-2000:]
    others = sum(len(r.requests) for r in (replicas[0], replicas[2]))
    assert others >= 100, others


@pytest.mark.nginx
def test_replica_answering_503_is_skipped(cluster):
    emu, config, replicas, nginx = cluster
    replicas[0].inject(emu.Fault(kind="status", status=503, count=1000))
    results = _run_load(nginx.url, 30, 4, "unhealthy")
    assert all(status == 200 for status, _, _ in results.values()), results
    for _status, body, texts in results.values():
        _assert_vectors(emu, config, texts, body)
    statuses = [r.status for r in replicas[0].requests]
    assert statuses and set(statuses) == {503}, "the 503 replica was never tried"
    # passive health: after max_fails it rests for fail_timeout instead of taking every 3rd request
    assert len(statuses) <= 6, statuses


@pytest.mark.nginx
def test_429_is_not_retried_by_nginx(cluster):
    emu, config, replicas, nginx = cluster
    for r in replicas:
        r.inject(emu.Fault(kind="status", status=429, count=1))
    with httpx.Client() as c:
        r = _embed(c, nginx.url, ["overloaded"])
    assert r.status_code == 429
    assert sum(len(rep.requests) for rep in replicas) == 1, "nginx retried a 429"
    for rep in replicas:
        rep.clear_faults()
    with httpx.Client() as c:
        r = _embed(c, nginx.url, ["overloaded"])
    assert r.status_code == 200
    _assert_vectors(emu, config, ["overloaded"], r.json())


@pytest.mark.nginx
def test_large_body_reaches_tei(cluster):
    """client_max_body_size >= TEI's payload limit: a 1.3 MB body passes nginx (default 1 MB)."""
    emu, config, replicas, nginx = cluster
    texts = [f"{i} " + "word " * 8000 for i in range(32)]  # auto-truncated by TEI
    with httpx.Client() as c:
        r = _embed(c, nginx.url, texts)
    assert len(r.request.content) > 1_200_000
    assert r.status_code == 200, r.text[:300]
    _assert_vectors(emu, config, texts, r.json())


# ---- the proxy in front of nginx (the stack's data path, minus Docker) ---------------------


@pytest.mark.nginx
def test_proxy_through_nginx_equals_direct_tei(cluster, tmp_path):
    """cached-tei serve -> real nginx -> 3 emulators: same vectors as TEI itself, then cached."""
    emu, config, replicas, nginx = cluster
    with ProxyProcess(tmp_path, nginx.url, CACHED_TEI_PROXY_LOG_LEVEL="warning") as proxy:
        url = proxy.url
        deadline = time.monotonic() + 30
        while httpx.get(f"{url}/health", timeout=1).status_code != 200:
            assert time.monotonic() < deadline, "proxy did not become healthy"
            time.sleep(0.1)
        texts = [f"proxy text {i}" for i in range(50)] + ["proxy text 3"]  # > max_client_batch_size
        with httpx.Client() as c:
            direct = c.post(
                f"{replicas[0].url}/embed", json={"inputs": texts[:32]}, timeout=30
            ).json()
            direct += c.post(
                f"{replicas[0].url}/embed", json={"inputs": texts[32:]}, timeout=30
            ).json()
            first = c.post(f"{url}/embed", json={"inputs": texts}, timeout=60)
            assert first.status_code == 200, first.text[:500]
            assert first.json() == direct
            _assert_vectors(emu, config, texts, first.json())
            before = sum(len(r.requests) for r in replicas)
            again = c.post(f"{url}/embed", json={"inputs": texts}, timeout=60)
            assert again.status_code == 200 and again.json() == direct
            assert sum(len(r.requests) for r in replicas) == before, "cache hit went to TEI"


# ---- the sparse and rerank pools: an upstream each, on its own port --------------------------

POOL_MODEL_TYPES = {"dense": "embedding", "sparse": "splade", "rerank": "reranker"}
POOL_MODELS = {
    "dense": "emulator/all-MiniLM-L6-v2",
    "sparse": "emulator/splade",
    "rerank": "emulator/bge-reranker",
}


@pytest.fixture
def pools_cluster(gen, example_env, nginx_bin, tmp_path):
    """The real nginx with every pool, each in front of two emulators serving its own model."""
    from tests import tei_emulator as emu

    configs = {
        kind: emu.EmulatorConfig(
            model_id=model, model_type=POOL_MODEL_TYPES[kind], step_ms=2.0, per_text_ms=0.1
        )
        for kind, model in POOL_MODELS.items()
    }
    replicas = {
        kind: [emu.EmulatorServer(config, port=0).start() for _ in range(2)]
        for kind, config in configs.items()
    }
    s = _settings(
        gen,
        example_env,
        TEI_REPLICAS="2",
        SPARSE_MODEL_ID=POOL_MODELS["sparse"],
        SPARSE_TEI_REPLICAS="2",
        RERANK_MODEL_ID=POOL_MODELS["rerank"],
        RERANK_TEI_REPLICAS="2",
        NGINX_FAIL_TIMEOUT="30s",
    )
    servers = {kind: [f"127.0.0.1:{r.port}" for r in rs] for kind, rs in replicas.items()}
    dense = servers.pop("dense")
    try:
        nginx = start_nginx(dense, tmp_path, s, nginx_bin, pools=servers)
    except RuntimeError:
        for r in (r for rs in replicas.values() for r in rs):
            r.stop()
        raise
    try:
        yield emu, configs, replicas, nginx
    finally:
        nginx.stop()
        for r in (r for rs in replicas.values() for r in rs):
            r.stop()


def _sparse_oracle(emu, config, text: str) -> list[dict]:
    """The emulator's SPLADE answer for `text` (its oracle), as JSON reads it."""
    indices, values = emu.expected_sparse(config, text)
    return [{"index": i, "value": float(str(v))} for i, v in zip(indices, values, strict=True)]


@pytest.mark.nginx
def test_each_pool_is_served_on_its_own_port(pools_cluster):
    emu, configs, replicas, nginx = pools_cluster
    urls = {
        "dense": nginx.url,
        "sparse": nginx.pool_url("sparse"),
        "rerank": nginx.pool_url("rerank"),
    }
    with httpx.Client(timeout=30) as c:
        for kind, url in urls.items():  # each port is a TEI of its pool's model, at the root
            assert c.get(f"{url}/info").json()["model_id"] == POOL_MODELS[kind]
        for i in range(10):
            texts = [f"dense {i} a", f"dense {i} b"]
            r = _embed(c, urls["dense"], texts)
            assert r.status_code == 200, r.text
            _assert_vectors(emu, configs["dense"], texts, r.json())

            texts = [f"sparse {i} a", f"sparse {i} b", f"sparse {i} c"]
            r = c.post(f"{urls['sparse']}/embed_sparse", json={"inputs": texts})
            assert r.status_code == 200, r.text
            assert r.json() == [_sparse_oracle(emu, configs["sparse"], t) for t in texts]

            query, texts = f"query {i}", [f"passage {i} {j}" for j in range(5)]
            body = {"query": query, "texts": texts, "return_text": True}
            r = c.post(f"{urls['rerank']}/rerank", json=body)
            assert r.status_code == 200, r.text
            direct = c.post(f"{replicas['rerank'][i % 2].url}/rerank", json=body).json()
            assert r.json() == direct
            scores = [emu.expected_score(configs["rerank"], query, t) for t in texts]
            assert [hit["index"] for hit in r.json()] == sorted(range(5), key=lambda j: -scores[j])
            assert [hit["text"] for hit in r.json()] == [texts[hit["index"]] for hit in r.json()]
    # the dense pool's emulators got every /embed, spread over both; the others none
    dense = [len(r.requests) for r in replicas["dense"]]
    assert sum(dense) == 10 and min(dense) >= 2, dense
    assert all(q.route == "/embed" for r in replicas["dense"] for q in r.requests)
    assert all(q.route == "/embed_sparse" for r in replicas["sparse"] for q in r.requests)
    assert all(q.route == "/rerank" for r in replicas["rerank"] for q in r.requests)


@pytest.mark.nginx
def test_a_pool_retries_on_its_other_replica(pools_cluster):
    """A sparse replica goes down: nginx moves its requests to the pool's other replica."""
    emu, configs, replicas, nginx = pools_cluster
    victim = replicas["sparse"][1]
    victim.stop()
    with httpx.Client(timeout=30) as c:
        for i in range(12):
            texts = [f"failover sparse {i}"]
            r = c.post(f"{nginx.pool_url('sparse')}/embed_sparse", json={"inputs": texts})
            assert r.status_code == 200, r.text
            assert r.json() == [_sparse_oracle(emu, configs["sparse"], texts[0])]
    log = nginx.error_log()
    assert f'upstream: "http://127.0.0.1:{victim.port}/embed_sparse"' in log, log[-2000:]


def test_routes_must_match_the_enabled_pools(gen, example_env):
    s = _settings(gen, example_env, SPARSE_MODEL_ID="emulator/splade")
    routes = {"rerank": gen.Route(["127.0.0.1:9"], "127.0.0.1:8082")}
    with pytest.raises(gen.ConfigError, match=r"the enabled pools \['sparse'\], got \['rerank'\]"):
        gen.render_nginx_conf(s, upstreams=["127.0.0.1:9"], routes=routes)
