"""stack/kubernetes/: every overlay rendered by `kubectl kustomize`, every object valid in strict
mode for current Kubernetes versions, and the rules a schema cannot express."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import httpx
import kubernetes_validate
import numpy as np
import pytest
import yaml
from kubernetes_validate import utils as kv

from tests import tei_emulator as emu
from tests.support.proxy import ProxyProcess
from tests.tei_emulator.process import free_port

from .conftest import STACK
from .rules import containers, kubernetes_problems, pod_spec, referenced_secrets, workloads

OVERLAYS = ("dev", "production", "monitoring")
# The newest Kubernetes minor versions kubernetes-validate bundles schemas for.
VERSIONS = sorted({kv.major_minor(v) for v in kv.all_versions()}, key=kv.Version)[-3:]
# Prometheus Operator's kind: a CRD, no schema bundled; checked by the rules below instead.
CUSTOM_KINDS = {"ServiceMonitor"}


@pytest.fixture(scope="session")
def kubectl() -> str:
    found = shutil.which("kubectl")
    if found is None:
        pytest.skip("kubectl (with kustomize) not found")
    return found


def kustomize(kubectl: str, folder: Path) -> list[dict]:
    out = subprocess.run(
        [kubectl, "kustomize", str(folder)], capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr
    return [doc for doc in yaml.safe_load_all(out.stdout) if doc]


def render(gen, env: dict[str, str], tmp_path: Path, kubectl: str) -> dict[str, list[dict]]:
    """Generate the Kubernetes files for `env` under tmp_path and kustomize every overlay."""
    for name, content in gen.generate(gen.Settings.from_env(env)).items():
        if name.startswith("kubernetes/"):
            (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
            (tmp_path / name).write_text(content)
    root = tmp_path / "kubernetes" / "overlays"
    return {overlay: kustomize(kubectl, root / overlay) for overlay in OVERLAYS}


def by_name(objects: list[dict], kind: str, name: str) -> dict:
    return next(o for o in objects if o["kind"] == kind and o["metadata"]["name"] == name)


def env_of(container: dict) -> dict[str, object]:
    """name -> value, or ("secret", name, key, optional) for a Secret reference."""
    out: dict[str, object] = {}
    for e in container.get("env") or []:
        ref = (e.get("valueFrom") or {}).get("secretKeyRef")
        out[e["name"]] = (
            ("secret", ref["name"], ref["key"], ref.get("optional", False)) if ref else e["value"]
        )
    return out


@pytest.fixture(scope="module")
def committed(kubectl) -> dict[str, list[dict]]:
    return {o: kustomize(kubectl, STACK / "kubernetes" / "overlays" / o) for o in OVERLAYS}


@pytest.fixture(scope="module")
def pools_rendered(gen, pools_env, kubectl, tmp_path_factory) -> dict[str, list[dict]]:
    """Every overlay for the test .env with the sparse and rerank pools."""
    return render(gen, pools_env, tmp_path_factory.mktemp("pools"), kubectl)


# ---- every overlay renders and validates ------------------------------------------------


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_object_is_valid_in_strict_mode(committed, overlay, version):
    objects = committed[overlay]
    assert objects
    for obj in objects:
        if obj["kind"] in CUSTOM_KINDS:
            continue
        kubernetes_validate.validate(obj, version, strict=True)  # raises on any error


def test_strict_validation_catches_a_typo(committed):
    proxy = json.loads(json.dumps(by_name(committed["production"], "Deployment", "proxy")))
    pod_spec(proxy)["containers"][0]["readinessProbe"]["httpGett"] = {"path": "/health"}
    with pytest.raises(kv.ValidationError):
        kubernetes_validate.validate(proxy, VERSIONS[-1], strict=True)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_committed_overlays_follow_the_rules(gen, example_env, committed, overlay):
    assert kubernetes_problems(committed[overlay], gen.Settings.from_env(example_env)) == []


def test_overlays_differ_only_in_qdrant_and_monitoring(committed):
    kinds = {o: sorted((x["kind"], x["metadata"]["name"]) for x in committed[o]) for o in OVERLAYS}
    base = set(kinds["production"])
    assert set(kinds["dev"]) - base == {("Service", "qdrant"), ("StatefulSet", "qdrant")}
    assert set(kinds["monitoring"]) - base == {
        ("ServiceMonitor", "cached-tei"),
        ("ConfigMap", "cached-tei-dashboard"),
    }
    for overlay in OVERLAYS:
        namespaced = [o for o in committed[overlay] if o["kind"] != "Namespace"]
        assert {o["metadata"]["namespace"] for o in namespaced} == {"cached-tei"}


# ---- TEI and nginx ----------------------------------------------------------------------


def test_tei_runs_what_compose_runs(gen, example_env, committed):
    compose = gen.build_compose(gen.Settings.from_env(example_env))["services"]["tei-0"]
    tei = by_name(committed["production"], "StatefulSet", "tei")
    container = pod_spec(tei)["containers"][0]
    assert container["image"] == compose["image"]
    assert env_of(container) == compose["environment"]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == 1
    startup = container["startupProbe"]
    # TEI_HEALTH_START_PERIOD (30m) for the download and warm-up
    assert startup["periodSeconds"] * startup["failureThreshold"] == 30 * 60


def test_nginx_balances_over_the_re_resolved_headless_service(committed):
    objects = committed["production"]
    conf = by_name(objects, "ConfigMap", "nginx-conf")["data"]["nginx.conf"]
    assert "least_conn;" in conf
    assert "resolver kube-dns.kube-system.svc.cluster.local valid=10s ipv6=off;" in conf
    assert re.search(r"server tei\.cached-tei\.svc\.cluster\.local:80 resolve max_fails", conf)
    assert by_name(objects, "Service", "tei")["spec"]["clusterIP"] == "None"
    # one name, one pod per GPU behind it: retries may go to another pod
    assert "proxy_next_upstream_tries 1;" in conf  # the example has one GPU
    nginx = by_name(objects, "Deployment", "nginx")
    assert pod_spec(nginx)["containers"][0]["image"] == "nginx:1.27.5-alpine"
    annotation = nginx["spec"]["template"]["metadata"]["annotations"]
    assert annotation["cached-tei.github.io/nginx-conf"]


@pytest.mark.parametrize("rendering", ["committed", "pools_rendered"])
def test_nginx_conf_in_kubernetes_passes_nginx_t(request, rendering, nginx_bin, tmp_path):
    """The ConfigMap's nginx.conf with the container paths swapped for writable ones, the TEI
    names for a loopback address and without `resolve` (Debian's nginx 1.22 lacks it)."""
    objects = request.getfixturevalue(rendering)["production"]
    conf = by_name(objects, "ConfigMap", "nginx-conf")["data"]["nginx.conf"]
    conf, named = re.subn(
        r"server tei(-sparse|-rerank)?\.cached-tei\.svc\.cluster\.local:80 resolve ",
        "server 127.0.0.1:9 ",
        conf,
    )
    assert named == (3 if rendering == "pools_rendered" else 1)
    conf = conf.replace("resolver kube-dns.kube-system.svc.cluster.local ", "resolver 127.0.0.1 ")
    conf = conf.replace("user nginx;\n", "").replace("/var/run/nginx.pid", f"{tmp_path}/n.pid")
    conf = conf.replace("/dev/stderr", f"{tmp_path}/e.log").replace(
        "/dev/stdout", f"{tmp_path}/a.log"
    )
    for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"):
        conf = conf.replace("http {\n", f"http {{\n    {kind}_temp_path {tmp_path / kind};\n", 1)
    conf = conf.replace("listen 80;", "listen 127.0.0.1:9;")
    (tmp_path / "nginx.conf").write_text(conf)
    out = subprocess.run(
        [
            nginx_bin,
            "-t",
            "-q",
            "-p",
            str(tmp_path),
            "-c",
            str(tmp_path / "nginx.conf"),
            "-e",
            str(tmp_path / "startup.log"),
        ],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert out.returncode == 0, out.stderr


# ---- the proxy --------------------------------------------------------------------------


@pytest.mark.parametrize("variant", ["example", "everything", "pools"])
def test_proxy_environment_is_what_the_package_reads(
    gen, example_env, pools_env, variant, tmp_path, kubectl, monkeypatch
):
    """Every CACHED_TEI_* the proxy pod sets is a real setting, and each value parses."""
    from cached_tei.proxy.settings import ProxySettings
    from cached_tei.settings import CachedTEISettings

    known = {"CACHED_TEI_URL"}
    for cls in (CachedTEISettings, ProxySettings):
        prefix = cls.model_config.get("env_prefix", "")
        known |= {f"{prefix}{name}".upper() for name in cls.model_fields}
    env = dict(pools_env if variant == "pools" else example_env)
    if variant == "everything":
        env.update(
            TEI_API_KEY="k",
            HF_TOKEN="t",
            QDRANT_SHARDS="6",
            QDRANT_REPLICATION_FACTOR="2",
            CACHE_TTL="3600",
            QDRANT_URL="https://q.example:6333",
            PROXY_LOG_LEVEL="debug",
        )
    objects = render(gen, env, tmp_path, kubectl)["production"]
    container = pod_spec(by_name(objects, "Deployment", "proxy"))["containers"][0]
    proxy_env = env_of(container)
    unknown = sorted(set(proxy_env) - known)
    assert not unknown, f"the package reads no such settings: {unknown}"
    for key in [k for k in os.environ if k.startswith("CACHED_TEI_")]:
        monkeypatch.delenv(key)
    for key, value in proxy_env.items():
        monkeypatch.setenv(key, "from-a-secret" if isinstance(value, tuple) else value)
    monkeypatch.chdir(tmp_path)  # no stray .env
    core, proxy = CachedTEISettings(), ProxySettings()
    assert core.tei_url == "http://nginx:80"
    assert core.qdrant_url == (env["QDRANT_URL"] or "http://qdrant:6333")
    assert proxy.graceful_timeout == 30
    assert (core.sparse_url, core.rerank_url) == (
        ("http://nginx:8081", "http://nginx:8082") if variant == "pools" else (None, None)
    )
    if variant == "everything":
        assert (core.qdrant_shards, core.qdrant_replication_factor, core.ttl) == (6, 2, 3600)
        assert proxy_env["CACHED_TEI_API_KEY"] == (
            "secret",
            "cached-tei-tei-api-key",
            "api-key",
            False,
        )


def test_proxy_reads_the_keys_from_secrets(committed):
    container = pod_spec(by_name(committed["production"], "Deployment", "proxy"))["containers"][0]
    env = env_of(container)
    # Qdrant's Helm chart (release `qdrant`) keeps its key in Secret qdrant-apikey, key api-key
    assert env["CACHED_TEI_QDRANT_API_KEY"] == ("secret", "qdrant-apikey", "api-key", False)
    assert env["CACHED_TEI_PROXY_API_KEYS"] == (
        "secret",
        "cached-tei-proxy-api-keys",
        "keys",
        False,
    )
    assert container["args"] == ["--host", "0.0.0.0", "--port", "8000", "--workers", "2"]


def test_allow_anonymous_makes_the_keys_optional(gen, example_env, tmp_path, kubectl):
    env = dict(example_env, PROXY_ALLOW_ANONYMOUS="true", KUBERNETES_PROXY_WORKERS="4")
    objects = render(gen, env, tmp_path, kubectl)["production"]
    container = pod_spec(by_name(objects, "Deployment", "proxy"))["containers"][0]
    assert env_of(container)["CACHED_TEI_PROXY_API_KEYS"][-1] is True
    assert container["resources"]["requests"]["cpu"] == "4"


# ---- Qdrant -----------------------------------------------------------------------------


def test_dev_runs_one_qdrant_with_the_same_secret(committed, example_env):
    qdrant = by_name(committed["dev"], "StatefulSet", "qdrant")
    assert qdrant["spec"]["replicas"] == 1
    container = pod_spec(qdrant)["containers"][0]
    assert container["image"] == f"qdrant/qdrant:{example_env['QDRANT_VERSION']}"
    assert env_of(container)["QDRANT__SERVICE__API_KEY"] == (
        "secret",
        "qdrant-apikey",
        "api-key",
        False,
    )
    service = by_name(committed["dev"], "Service", "qdrant")
    assert {p["port"] for p in service["spec"]["ports"]} == {6333, 6334}


def test_production_qdrant_is_the_helm_chart_in_cluster_mode(example_env):
    values = yaml.safe_load(
        (STACK / "kubernetes/overlays/production/qdrant-values.yaml").read_text()
    )
    assert values["config"]["cluster"]["enabled"] is True
    assert values["apiKey"] is True  # the chart generates it into Secret <release>-apikey
    assert values["image"]["tag"] == example_env["QDRANT_VERSION"]
    assert values["replicaCount"] == 3
    readme = (STACK / "README.md").read_text()
    install = re.search(
        r"^helm (?:upgrade --install|install) (\S+) qdrant/qdrant .*$", readme, re.M
    )
    assert install, "stack/README.md has no helm install line for Qdrant"
    assert install.group(1) == "qdrant"  # so the Secret is qdrant-apikey and the Service qdrant
    assert "qdrant-values.yaml" in install.group(0)


# ---- monitoring -------------------------------------------------------------------------


def test_monitoring_scrapes_the_proxy_and_tei_and_ships_the_dashboard(committed):
    objects = committed["monitoring"]
    monitor = by_name(objects, "ServiceMonitor", "cached-tei")
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    selector = monitor["spec"]["selector"]["matchLabels"]
    scraped = [
        o
        for o in objects
        if o["kind"] == "Service" and selector.items() <= o["metadata"]["labels"].items()
    ]
    assert sorted(o["metadata"]["name"] for o in scraped) == ["proxy", "tei"]
    for svc in scraped:
        ports = {p["name"] for p in svc["spec"]["ports"]}
        assert {e["port"] for e in monitor["spec"]["endpoints"]} <= ports
    assert monitor["spec"]["endpoints"][0]["path"] == "/metrics"
    dashboard = by_name(objects, "ConfigMap", "cached-tei-dashboard")
    assert dashboard["metadata"]["labels"]["grafana_dashboard"] == "1"
    source = (STACK / "grafana" / "dashboards" / "cached-tei.json").read_text()
    assert dashboard["data"]["cached-tei.json"] == source


# ---- secrets ----------------------------------------------------------------------------


def test_every_secret_is_created_or_documented(gen, example_env, tmp_path, kubectl):
    env = dict(example_env, HF_TOKEN="t", TEI_API_KEY="k")
    rendered = render(gen, env, tmp_path, kubectl)
    readme = (STACK / "README.md").read_text()
    for overlay, objects in rendered.items():
        created = {o["metadata"]["name"] for o in objects if o["kind"] == "Secret"}
        referenced = referenced_secrets(objects)
        assert {"qdrant-apikey", "cached-tei-proxy-api-keys", "cached-tei-hf-token"} <= referenced
        for name in referenced - created:
            assert re.search(rf"kubectl .*create secret generic {name}\b", readme) or (
                name == "qdrant-apikey" and overlay != "dev"
            ), f"{overlay}: Secret {name} is neither created nor documented in stack/README.md"
    assert "`qdrant-apikey`" in readme  # the chart's Secret, named for the proxy's reader
    for value in ("t", "k"):
        for objects in rendered.values():
            assert value not in {
                e.get("value")
                for w in workloads(objects).values()
                for c in containers(w)
                for e in c.get("env") or []
            }


# ---- variants ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "change, gpus",
    [
        ({"GPU_IDS": "0,1,2,3", "TEI_VARIANT": "89"}, 4),
        ({"KUBERNETES_TEI_REPLICAS": "16"}, 16),
        ({"TEI_VARIANT": "cpu", "GPU_IDS": "", "TEI_REPLICAS": "3"}, 0),
    ],
)
def test_variants_follow_the_rules(gen, example_env, tmp_path, kubectl, change, gpus):
    env = dict(example_env, **change)
    settings = gen.Settings.from_env(env)
    rendered = render(gen, env, tmp_path, kubectl)
    for overlay, objects in rendered.items():
        assert kubernetes_problems(objects, settings) == [], overlay
        for obj in objects:
            if obj["kind"] not in CUSTOM_KINDS:
                kubernetes_validate.validate(obj, VERSIONS[-1], strict=True)
    tei = by_name(rendered["production"], "StatefulSet", "tei")
    limits = pod_spec(tei)["containers"][0]["resources"]["limits"]
    assert tei["spec"]["replicas"] * limits.get("nvidia.com/gpu", 0) == gpus
    conf = by_name(rendered["production"], "ConfigMap", "nginx-conf")["data"]["nginx.conf"]
    tries = min(3, tei["spec"]["replicas"])
    assert f"proxy_next_upstream_tries {tries};" in conf


def test_rules_catch_violations(gen, example_env, committed):
    settings = gen.Settings.from_env(example_env)
    objects = json.loads(json.dumps(committed["production"]))
    tei = pod_spec(by_name(objects, "StatefulSet", "tei"))["containers"][0]
    tei["resources"]["limits"]["nvidia.com/gpu"] = 2
    tei["livenessProbe"]["httpGet"]["path"] = "/"
    proxy_pod = pod_spec(by_name(objects, "Deployment", "proxy"))
    proxy = proxy_pod["containers"][0]
    proxy["image"] = "ghcr.io/cached-tei/cached-tei-proxy:latest"
    proxy["securityContext"]["readOnlyRootFilesystem"] = False
    proxy["args"][-1] = "auto"
    proxy_pod["terminationGracePeriodSeconds"] = 30
    nginx = pod_spec(by_name(objects, "Deployment", "nginx"))["containers"][0]
    nginx["resources"]["limits"]["nvidia.com/gpu"] = 1
    by_name(objects, "PodDisruptionBudget", "proxy")["spec"]["selector"] = {"matchLabels": {}}
    problems = "\n".join(kubernetes_problems(objects, settings))
    for expected in (
        "StatefulSet/tei: a TEI pod must have exactly one GPU, has 2",
        "tei: livenessProbe does not GET /health",
        "Deployment/proxy: image 'ghcr.io/cached-tei/cached-tei-proxy:latest' is not pinned",
        "proxy: root filesystem is writable",
        "proxy: --workers auto, .env asks for 2",
        "proxy: terminationGracePeriodSeconds does not exceed its graceful stop",
        "Deployment/nginx: nginx takes a GPU (1)",
        "proxy: no PodDisruptionBudget over its pods",
    ):
        assert expected in problems


def test_bad_kubernetes_settings_are_refused(gen, example_env):
    for change, message in (
        ({"KUBERNETES_NAMESPACE": "Cached_TEI"}, "KUBERNETES_NAMESPACE"),
        ({"KUBERNETES_TEI_STORAGE": "20GB"}, "KUBERNETES_TEI_STORAGE"),
        ({"PROXY_VERSION": "latest"}, "PROXY_VERSION"),
        ({"KUBERNETES_PROXY_MIN_REPLICAS": "5", "KUBERNETES_PROXY_MAX_REPLICAS": "2"}, "MAX"),
    ):
        with pytest.raises(gen.ConfigError, match=message):
            gen.Settings.from_env(dict(example_env, **change))


def test_proxy_image_tag_is_the_package_version(example_env):
    from cached_tei import __version__

    assert example_env["PROXY_VERSION"] == __version__


def test_proxy_pod_serves_with_its_settings_and_writes_only_to_tmp(committed, tmp_path):
    """The proxy pod's command line and environment, run for real (TEI: the emulator; Qdrant:
    unreachable, so the cache is bypassed): it serves the right vectors behind its keys, stops
    cleanly on SIGTERM, and writes nowhere but TMPDIR (the pod's emptyDir at /tmp)."""
    container = pod_spec(by_name(committed["production"], "Deployment", "proxy"))["containers"][0]
    assert container["command"] == ["cached-tei", "serve"]
    args = container["args"]
    workers = args[args.index("--workers") :]
    assert [m["mountPath"] for m in container["volumeMounts"]] == ["/tmp"]
    secrets = {"CACHED_TEI_PROXY_API_KEYS": "pod-key", "CACHED_TEI_QDRANT_API_KEY": "q"}
    env = {k: secrets[k] if isinstance(v, tuple) else v for k, v in env_of(container).items()}
    env["CACHED_TEI_QDRANT_URL"] = f"http://127.0.0.1:{free_port()}"  # nobody listens
    home, scratch, work = tmp_path / "home", tmp_path / "tmp", tmp_path / "work"
    for folder in (home, scratch, work):
        folder.mkdir()
    env.update(HOME=str(home), XDG_CACHE_HOME=str(home / ".cache"), TMPDIR=str(scratch))
    config = emu.EmulatorConfig()
    tei = emu.EmulatorServer(config, port=0).start()
    try:
        env.pop("CACHED_TEI_URL")  # nginx's address in the pod; the emulator here
        with ProxyProcess(work, tei.url, args=tuple(workers), **env) as proxy:
            texts = ["pod text one", "pod text two"]
            auth = {"Authorization": "Bearer pod-key"}
            r = httpx.post(f"{proxy.url}/embed", json={"inputs": texts}, headers=auth, timeout=30)
            assert r.status_code == 200, r.text[:300]
            want = np.stack([emu.expected_vector(config, t) for t in texts])
            assert np.array_equal(np.asarray(r.json(), dtype=np.float32), want)
            anonymous = httpx.post(f"{proxy.url}/embed", json={"inputs": texts}, timeout=30)
            assert anonymous.status_code == 401
            assert [p.name.startswith("cached-tei-metrics-") for p in scratch.iterdir()] == [True]
            assert proxy.terminate() == 0
    finally:
        tei.stop()
    assert list(home.rglob("*")) == []
    assert [p.name for p in work.iterdir()] == [proxy.log_path.name]


# ---- the sparse and rerank pools --------------------------------------------------------


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_pools_are_valid_and_follow_the_rules(gen, pools_env, pools_rendered, overlay):
    objects = pools_rendered[overlay]
    assert kubernetes_problems(objects, gen.Settings.from_env(pools_env)) == []
    for version in VERSIONS:
        for obj in objects:
            if obj["kind"] not in CUSTOM_KINDS:
                kubernetes_validate.validate(obj, version, strict=True)


def test_a_statefulset_and_an_upstream_per_pool(pools_env, pools_rendered):
    objects = pools_rendered["production"]
    for name, replicas, model, revision in (
        ("tei", 2, pools_env["MODEL_ID"], None),
        ("tei-sparse", 1, pools_env["SPARSE_MODEL_ID"], None),
        ("tei-rerank", 2, pools_env["RERANK_MODEL_ID"], pools_env["RERANK_MODEL_REVISION"]),
    ):
        tei = by_name(objects, "StatefulSet", name)
        assert tei["spec"]["replicas"] == replicas
        container = pod_spec(tei)["containers"][0]
        assert container["resources"]["limits"]["nvidia.com/gpu"] == 1
        env = env_of(container)
        assert (env["MODEL_ID"], env.get("REVISION")) == (model, revision)
        assert by_name(objects, "Service", name)["spec"]["clusterIP"] == "None"
    nginx = by_name(objects, "Service", "nginx")
    assert [(p["name"], p["port"]) for p in nginx["spec"]["ports"]] == [
        ("http", 80),
        ("sparse", 8081),
        ("rerank", 8082),
    ]
    conf = by_name(objects, "ConfigMap", "nginx-conf")["data"]["nginx.conf"]
    for upstream, host, tries in (
        ("tei_sparse", "tei-sparse", 1),
        ("tei_rerank", "tei-rerank", 2),
    ):
        block = conf.split(f"upstream {upstream} {{", 1)[1].split("\n    upstream ", 1)[0]
        assert f"server {host}.cached-tei.svc.cluster.local:80 resolve max_fails" in block
        assert "least_conn;" in block and f"proxy_next_upstream_tries {tries};" in block
    proxy = env_of(pod_spec(by_name(objects, "Deployment", "proxy"))["containers"][0])
    assert proxy["CACHED_TEI_SPARSE_URL"] == "http://nginx:8081"
    assert proxy["CACHED_TEI_RERANK_URL"] == "http://nginx:8082"
    # the monitoring overlay scrapes every pool's pods
    monitoring = pools_rendered["monitoring"]
    selector = by_name(monitoring, "ServiceMonitor", "cached-tei")["spec"]["selector"]
    scraped = sorted(
        o["metadata"]["name"]
        for o in monitoring
        if o["kind"] == "Service"
        and selector["matchLabels"].items() <= o["metadata"]["labels"].items()
    )
    assert scraped == ["proxy", "tei", "tei-rerank", "tei-sparse"]


def test_pool_replicas_on_kubernetes(gen, pools_env, tmp_path, kubectl):
    env = dict(pools_env, KUBERNETES_SPARSE_TEI_REPLICAS="6")
    objects = render(gen, env, tmp_path, kubectl)["production"]
    assert kubernetes_problems(objects, gen.Settings.from_env(env)) == []
    assert by_name(objects, "StatefulSet", "tei-sparse")["spec"]["replicas"] == 6
    conf = by_name(objects, "ConfigMap", "nginx-conf")["data"]["nginx.conf"]
    block = conf.split("upstream tei_sparse {", 1)[1].split("\n    upstream ", 1)[0]
    assert "proxy_next_upstream_tries 3;" in block


def test_rules_catch_pool_violations(gen, pools_env, pools_rendered):
    settings = gen.Settings.from_env(pools_env)
    objects = json.loads(json.dumps(pools_rendered["production"]))
    sparse = pod_spec(by_name(objects, "StatefulSet", "tei-sparse"))["containers"][0]
    sparse["resources"]["limits"]["nvidia.com/gpu"] = 2
    rerank = pod_spec(by_name(objects, "StatefulSet", "tei-rerank"))["containers"][0]
    next(e for e in rerank["env"] if e["name"] == "MODEL_ID")["value"] = "another/model"
    nginx = by_name(objects, "Service", "nginx")
    nginx["spec"]["ports"] = [p for p in nginx["spec"]["ports"] if p["port"] != 8082]
    conf = by_name(objects, "ConfigMap", "nginx-conf")["data"]
    conf["nginx.conf"] = conf["nginx.conf"].replace("tei-sparse.cached-tei", "tei.cached-tei")
    proxy = pod_spec(by_name(objects, "Deployment", "proxy"))["containers"][0]
    proxy["env"] = [e for e in proxy["env"] if e["name"] != "CACHED_TEI_SPARSE_URL"]
    problems = "\n".join(kubernetes_problems(objects, settings))
    for expected in (
        "StatefulSet/tei-sparse: a TEI pod must have exactly one GPU, has 2",
        "tei-rerank: does not serve the rerank pool's model",
        "nginx: its Service lacks the rerank pool's port 8082",
        "nginx: no upstream tei_sparse over tei-sparse.cached-tei.svc.cluster.local:80",
        "proxy: CACHED_TEI_SPARSE_URL is not http://nginx:8081",
    ):
        assert expected in problems, problems
    off = gen.Settings.from_env(dict(pools_env, RERANK_MODEL_ID="", RERANK_GPU_IDS=""))
    problems = "\n".join(kubernetes_problems(pools_rendered["production"], off))
    assert "StatefulSet/tei-rerank: a TEI pool .env does not ask for" in problems
