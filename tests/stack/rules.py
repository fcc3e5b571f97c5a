"""Rules for the generated compose file that the compose JSON schema cannot express."""

from __future__ import annotations

import re

LOOPBACK = {"127.0.0.1", "::1"}
URL_VARIABLES = ("CACHED_TEI_URL", "CACHED_TEI_SPARSE_URL", "CACHED_TEI_RERANK_URL")
_PINNED_TAG = re.compile(r"^(v?\d+\.\d+\.\d+)([-.][A-Za-z0-9.]+)?$|^[a-z0-9]+-\d+\.\d+\.\d+$")


def image_tag(image: str) -> str | None:
    """The tag of an image reference (None if it has none; digests count as pinned)."""
    if "@sha256:" in image:
        return "@digest"
    last = image.rsplit("/", 1)[-1]
    return last.split(":", 1)[1] if ":" in last else None


def tag_is_pinned(tag: str | None) -> bool:
    if tag is None or tag == "latest" or "latest" in tag:
        return False
    if tag == "@digest":
        return True
    return bool(re.search(r"\d+\.\d+\.\d+", tag))


def _ports(svc: dict) -> list[dict]:
    out = []
    for p in svc.get("ports", []) or []:
        if isinstance(p, dict):
            out.append(p)
        else:  # short syntax [HOST_IP:]PUBLISHED:TARGET
            parts = str(p).split(":")
            host_ip = parts[0] if len(parts) == 3 else "0.0.0.0"
            out.append(
                {
                    "host_ip": host_ip,
                    "published": parts[-2] if len(parts) >= 2 else None,
                    "target": parts[-1],
                }
            )
    return out


def duration_seconds(text: str) -> float:
    """A compose duration ("45s", "1m30s", "500ms") in seconds."""
    units = {"h": 3600, "m": 60, "s": 1, "ms": 0.001, "us": 1e-6}
    parts = re.findall(r"(\d+(?:\.\d+)?)(ms|us|h|m|s)", text)
    assert parts and "".join(n + u for n, u in parts) == text, f"not a duration: {text!r}"
    return sum(float(n) * units[u] for n, u in parts)


def _stop_grace_problems(proxy: dict) -> list[str]:
    """The runtime must wait longer than the proxy's graceful shutdown (compose's default: 10s)."""
    from cached_tei.proxy.settings import ProxySettings

    env = proxy.get("environment") or {}
    default = ProxySettings.model_fields["graceful_timeout"].default
    graceful = float(env.get("CACHED_TEI_PROXY_GRACEFUL_TIMEOUT") or default)
    grace = proxy.get("stop_grace_period", "10s")
    if duration_seconds(grace) <= graceful:
        return [f"proxy: stop_grace_period {grace} does not exceed its {graceful:g}s graceful stop"]
    return []


def _devices(svc: dict) -> list[dict]:
    return (((svc.get("deploy") or {}).get("resources") or {}).get("reservations") or {}).get(
        "devices"
    ) or []


def _pool_problems(services: dict, settings) -> list[str]:
    """Per pool: one TEI service per GPU / replica, each pinning its one GPU, with the pool's
    model and the right image family on the shared model volume; the first downloads, the
    others wait; nginx serves the pool on its port; the proxy's URL for it points there."""
    problems: list[str] = []
    nginx = services.get("nginx") or {}
    proxy_env = (services.get("proxy") or {}).get("environment") or {}
    for pool in settings.pools:
        tei = [n for n in services if re.fullmatch(rf"{pool.name}-\d+", n)]
        if tei != pool.services:
            problems.append(f"{pool.kind} pool: TEI services {tei}, expected {pool.services}")
        for i, name in enumerate(n for n in tei if n in pool.services):
            svc = services[name]
            env = svc.get("environment") or {}
            if (env.get("MODEL_ID"), env.get("REVISION", "")) != (
                pool.model_id,
                pool.model_revision,
            ):
                problems.append(f"{name}: does not serve the {pool.kind} pool's model")
            tag = image_tag(svc["image"]) or ""
            if settings.cpu != tag.startswith("cpu-"):
                problems.append(
                    f"{name}: image tag {tag!r} does not match variant {settings.tei_variant}"
                )
            pinned = [g for dev in _devices(svc) for g in dev.get("device_ids", [])]
            if not settings.cpu and pinned != [pool.gpu_ids[i]]:
                problems.append(f"{name}: pins GPUs {pinned}, not its one GPU {pool.gpu_ids[i]}")
            if "tei-models:/data" not in (svc.get("volumes") or []):
                problems.append(f"{name}: does not mount the shared model volume at /data")
            if svc.get("ports"):
                problems.append(f"{name}: TEI must not be published")
            first = pool.services[0]
            waits = (svc.get("depends_on") or {}).get(first, {}).get("condition")
            if i > 0 and waits != "service_healthy":
                problems.append(f"{name}: does not wait for {first} to be healthy")
        if pool.services:
            first = pool.services[0]
            waits = (nginx.get("depends_on") or {}).get(first, {}).get("condition")
            if waits != "service_healthy":
                problems.append(f"nginx: does not wait for {first} to be healthy")
        if str(pool.nginx_port) not in (nginx.get("expose") or []):
            problems.append(f"nginx: does not expose the {pool.kind} pool's port {pool.nginx_port}")
        want = f"http://nginx:{pool.nginx_port}"
        if proxy_env.get(pool.url_variable) != want:
            problems.append(f"proxy: {pool.url_variable} is not {want}")
    enabled = {pool.url_variable for pool in settings.pools}
    for var in sorted(set(URL_VARIABLES) - enabled):
        if var in proxy_env:
            problems.append(f"proxy: {var} is set but .env runs no such pool")
    return problems


def compose_problems(compose: dict, settings) -> list[str]:
    """Every rule violation, as readable strings (empty list: all good)."""
    problems: list[str] = []
    services: dict = compose.get("services", {})
    volumes = set((compose.get("volumes") or {}).keys())

    # depends_on names existing services; a health condition needs a healthcheck
    for name, svc in services.items():
        deps = svc.get("depends_on") or {}
        items = deps.items() if isinstance(deps, dict) else ((d, {}) for d in deps)
        for dep, cond in items:
            if dep not in services:
                problems.append(f"{name}: depends_on names unknown service {dep!r}")
            elif (cond or {}).get(
                "condition"
            ) == "service_healthy" and "healthcheck" not in services[dep]:
                problems.append(f"{name}: waits for {dep} healthy but {dep} has no healthcheck")
            if dep == name:
                problems.append(f"{name}: depends on itself")

    # every service has a healthcheck and a restart policy
    for name, svc in services.items():
        if "healthcheck" not in svc or svc["healthcheck"].get("disable"):
            problems.append(f"{name}: no healthcheck")
        if svc.get("restart") not in ("always", "unless-stopped", "on-failure"):
            problems.append(f"{name}: no restart policy")

    # images pinned
    for name, svc in services.items():
        if "image" in svc and not tag_is_pinned(image_tag(svc["image"])):
            problems.append(f"{name}: image {svc['image']!r} is not pinned")
        if "image" not in svc and "build" not in svc:
            problems.append(f"{name}: neither image nor build")

    # named volumes are declared
    for name, svc in services.items():
        for v in svc.get("volumes", []) or []:
            src = v.split(":", 1)[0] if isinstance(v, str) else v.get("source")
            if src and not src.startswith((".", "/", "~")) and src not in volumes:
                problems.append(f"{name}: volume {src!r} not declared at top level")

    # GPUs: count and device_ids never together; each GPU id once; the ids asked for
    seen_gpus: list[str] = []
    for name, svc in services.items():
        for dev in _devices(svc):
            if "count" in dev and "device_ids" in dev:
                problems.append(f"{name}: device reservation has both count and device_ids")
            seen_gpus.extend(str(g) for g in dev.get("device_ids", []))
    dupes = sorted({g for g in seen_gpus if seen_gpus.count(g) > 1})
    if dupes:
        problems.append(f"GPU ids used more than once: {dupes}")
    asked = [gpu for pool in settings.pools for gpu in pool.gpu_ids]
    if settings.cpu:
        if seen_gpus:
            problems.append("cpu variant reserves GPUs")
    elif sorted(seen_gpus) != sorted(asked):
        problems.append(f"GPU reservations {seen_gpus} != the pools' GPU ids {asked}")

    problems += _pool_problems(services, settings)
    tei = {name for pool in settings.pools for name in pool.services}
    for name in services:
        if name.startswith("tei-") and name not in tei:
            problems.append(f"{name}: a TEI service of no pool .env asks for")

    # published ports: exactly what .env asks, loopback-only for nginx and qdrant
    expected: dict[str, list[tuple[str, str]]] = {
        "proxy": [(settings.proxy_bind, str(settings.proxy_port))],
        "nginx": [("127.0.0.1", str(settings.nginx_publish_port))]
        if settings.nginx_publish_port
        else [],
        "qdrant": [],
        "prometheus": [("127.0.0.1", str(settings.prometheus_publish_port))]
        if settings.prometheus_publish_port
        else [],
        "grafana": [("127.0.0.1", str(settings.grafana_publish_port))]
        if settings.grafana_publish_port
        else [],
    }
    if settings.qdrant_publish_port:
        expected["qdrant"].append(("127.0.0.1", str(settings.qdrant_publish_port)))
    if settings.qdrant_grpc_publish_port:
        expected["qdrant"].append(("127.0.0.1", str(settings.qdrant_grpc_publish_port)))
    for name, svc in services.items():
        got = [(str(p.get("host_ip", "0.0.0.0")), str(p.get("published"))) for p in _ports(svc)]
        want = expected.get(name, [])
        if sorted(got) != sorted(want):
            problems.append(f"{name}: publishes {got}, .env asks for {want}")
        if name in ("nginx", "qdrant", "prometheus", "grafana"):
            for host_ip, port in got:
                if host_ip not in LOOPBACK:
                    problems.append(f"{name}: port {port} published beyond loopback ({host_ip})")

    # the proxy reaches nginx and Qdrant and waits for them healthy
    proxy = services.get("proxy")
    if proxy is None:
        problems.append("no proxy service")
    else:
        env = proxy.get("environment") or {}
        want_q = settings.qdrant_url or "http://qdrant:6333"
        if env.get("CACHED_TEI_QDRANT_URL") != want_q:
            problems.append(f"proxy: CACHED_TEI_QDRANT_URL != {want_q}")
        problems += _stop_grace_problems(proxy)
        deps = proxy.get("depends_on") or {}
        for dep in ["nginx"] + ([] if settings.qdrant_url else ["qdrant"]):
            if (deps.get(dep) or {}).get("condition") != "service_healthy":
                problems.append(f"proxy: does not wait for {dep} healthy")
    if settings.qdrant_url and "qdrant" in services:
        problems.append("external QDRANT_URL set but a qdrant service is generated")
    if not settings.qdrant_url and "qdrant" not in services:
        problems.append("no qdrant service")

    # monitoring: Prometheus and Grafana exactly when asked, only in the monitoring profile
    monitoring = {"prometheus", "grafana"}
    for name in sorted(monitoring):
        if settings.monitoring and name not in services:
            problems.append(f"MONITORING=true but no {name} service")
        if not settings.monitoring and name in services:
            problems.append(f"MONITORING=false but a {name} service is generated")
    for name, svc in services.items():
        profiles = svc.get("profiles") or []
        if (name in monitoring) != (profiles == ["monitoring"]):
            problems.append(f"{name}: profiles {profiles}, expected the monitoring profile only")
    prometheus = services.get("prometheus")
    if prometheus is not None:
        mounts = prometheus.get("volumes") or []
        if "./prometheus.yml:/etc/prometheus/prometheus.yml:ro" not in mounts:
            problems.append("prometheus: does not mount the generated prometheus.yml")
        declared = set((compose.get("secrets") or {}).keys())
        for secret in prometheus.get("secrets") or []:
            if secret not in declared:
                problems.append(f"prometheus: secret {secret!r} not declared at top level")
    grafana = services.get("grafana")
    if (
        grafana is not None
        and (grafana.get("depends_on") or {}).get("prometheus", {}).get("condition")
        != "service_healthy"
    ):
        problems.append("grafana: does not wait for prometheus healthy")

    # no secret value baked into the file: secrets are ${VAR} references
    for name, svc in services.items():
        for key, value in (svc.get("environment") or {}).items():
            if (
                re.search(r"(API_KEYS?|TOKEN|PASSWORD)$", key)
                and value
                and not str(value).startswith("${")
            ):
                problems.append(f"{name}: secret {key} is written literally")
    return problems


# ---- Kubernetes ----------------------------------------------------------------------------

GPU = "nvidia.com/gpu"


def workloads(objects: list[dict]) -> dict[str, dict]:
    """kind/name -> object, for every object that runs pods."""
    kinds = ("Deployment", "StatefulSet", "DaemonSet", "Job", "CronJob")
    return {f"{o['kind']}/{o['metadata']['name']}": o for o in objects if o["kind"] in kinds}


def pod_spec(workload: dict) -> dict:
    spec = workload["spec"]
    if workload["kind"] == "CronJob":
        spec = spec["jobTemplate"]["spec"]
    return spec["template"]["spec"]


def containers(workload: dict) -> list[dict]:
    spec = pod_spec(workload)
    return list(spec.get("initContainers") or []) + list(spec["containers"])


def referenced_secrets(objects: list[dict]) -> set[str]:
    """Every Secret a pod reads: env secretKeyRef, envFrom secretRef, secret volumes."""
    names: set[str] = set()
    for workload in workloads(objects).values():
        for c in containers(workload):
            for env in c.get("env") or []:
                ref = (env.get("valueFrom") or {}).get("secretKeyRef")
                if ref:
                    names.add(ref["name"])
            for source in c.get("envFrom") or []:
                if "secretRef" in source:
                    names.add(source["secretRef"]["name"])
        for volume in pod_spec(workload).get("volumes") or []:
            if "secret" in volume:
                names.add(volume["secret"]["secretName"])
    return names


def _gpu_problems(objects: list[dict], settings) -> list[str]:
    problems = []
    tei = {(f"StatefulSet/{pool.name}", pool.name) for pool in settings.pools}
    for key, workload in workloads(objects).items():
        for c in containers(workload):
            resources = c.get("resources") or {}
            gpus = (resources.get("limits") or {}).get(GPU)
            requested = (resources.get("requests") or {}).get(GPU)
            if requested is not None and requested != gpus:
                problems.append(f"{key}: {c['name']} requests {requested} GPUs, limits {gpus}")
            is_tei = (key, c["name"]) in tei
            if is_tei and not settings.cpu and gpus != 1:
                problems.append(f"{key}: a TEI pod must have exactly one GPU, has {gpus}")
            if (not is_tei or settings.cpu) and gpus is not None:
                problems.append(f"{key}: {c['name']} takes a GPU ({gpus})")
    return problems


def _image_problems(objects: list[dict]) -> list[str]:
    return [
        f"{key}: image {c['image']!r} is not pinned"
        for key, workload in workloads(objects).items()
        for c in containers(workload)
        if not tag_is_pinned(image_tag(c["image"]))
    ]


def _tei_problems(objects: list[dict], settings) -> list[str]:
    problems = []
    for pool in settings.pools:
        problems += _pool_problems_k8s(objects, settings, pool)
    running = {key for key in workloads(objects) if key.startswith("StatefulSet/tei")}
    for key in sorted(running - {f"StatefulSet/{pool.name}" for pool in settings.pools}):
        problems.append(f"{key}: a TEI pool .env does not ask for")
    return problems


def _pool_problems_k8s(objects: list[dict], settings, pool) -> list[str]:
    """A pool's StatefulSet (its model, probes, model volume) and headless Service, the nginx
    upstream over it on the pool's port, and the proxy's URL for it."""
    name = pool.name
    tei = workloads(objects).get(f"StatefulSet/{name}")
    if tei is None:
        return [f"no TEI StatefulSet {name}"]
    problems = []
    if tei["spec"]["replicas"] != pool.kubernetes_count:
        problems.append(
            f"{name}: {tei['spec']['replicas']} replicas, .env asks for {pool.kubernetes_count}"
        )
    container = pod_spec(tei)["containers"][0]
    env = {e["name"]: e.get("value") for e in container.get("env") or []}
    if (env.get("MODEL_ID"), env.get("REVISION") or "") != (pool.model_id, pool.model_revision):
        problems.append(f"{name}: does not serve the {pool.kind} pool's model")
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        if (container.get(probe) or {}).get("httpGet", {}).get("path") != "/health":
            problems.append(f"{name}: {probe} does not GET /health")
    mounts = {m["mountPath"]: m["name"] for m in container.get("volumeMounts") or []}
    claims = {t["metadata"]["name"] for t in tei["spec"].get("volumeClaimTemplates") or []}
    if mounts.get("/data") not in claims:
        problems.append(f"{name}: the model cache (/data) is not on a persistent volume")
    headless = [
        o
        for o in objects
        if o["kind"] == "Service" and o["metadata"]["name"] == tei["spec"]["serviceName"]
    ]
    if not headless or headless[0]["spec"].get("clusterIP") != "None":
        problems.append(f"{name}: no headless Service for nginx to resolve")
    conf = next(
        (o["data"]["nginx.conf"] for o in objects if o["metadata"]["name"] == "nginx-conf"), ""
    )
    block = re.search(rf"upstream {pool.upstream} {{(.*?)}}", conf, re.S)
    host = f"{tei['spec']['serviceName']}.{settings.kubernetes_namespace}.svc.cluster.local:80"
    if block is None or f"server {host} resolve " not in block.group(1):
        problems.append(f"nginx: no upstream {pool.upstream} over {host}")
    if f"listen {pool.nginx_port};" not in conf:
        problems.append(f"nginx: does not listen on the {pool.kind} pool's port {pool.nginx_port}")
    service_ports = [
        p["port"]
        for o in objects
        if o["kind"] == "Service" and o["metadata"]["name"] == "nginx"
        for p in o["spec"]["ports"]
    ]
    if pool.nginx_port not in service_ports:
        problems.append(f"nginx: its Service lacks the {pool.kind} pool's port {pool.nginx_port}")
    proxy = workloads(objects).get("Deployment/proxy")
    proxy_env = {
        e["name"]: e.get("value")
        for e in (pod_spec(proxy)["containers"][0].get("env") if proxy else None) or []
    }
    want = f"http://nginx:{pool.nginx_port}"
    if proxy_env.get(pool.url_variable) != want:
        problems.append(f"proxy: {pool.url_variable} is not {want}")
    return problems


def _proxy_problems(objects: list[dict], settings) -> list[str]:
    from cached_tei.proxy.settings import ProxySettings

    proxy = workloads(objects).get("Deployment/proxy")
    if proxy is None:
        return ["no proxy Deployment"]
    problems = []
    spec = pod_spec(proxy)
    container = spec["containers"][0]
    security = {**(spec.get("securityContext") or {}), **(container.get("securityContext") or {})}
    if security.get("runAsUser") != 10001 or not security.get("runAsNonRoot"):
        problems.append("proxy: does not run as the non-root uid 10001")
    if not security.get("readOnlyRootFilesystem"):
        problems.append("proxy: root filesystem is writable")
    empty_dirs = {v["name"] for v in spec.get("volumes") or [] if "emptyDir" in v}
    mounts = {m["mountPath"]: m["name"] for m in container.get("volumeMounts") or []}
    if mounts.get("/tmp") not in empty_dirs:
        problems.append("proxy: no emptyDir at /tmp for the workers' shared metrics")
    resources = container.get("resources") or {}
    if not (resources.get("requests") or {}).get("cpu") or not resources.get("limits"):
        problems.append("proxy: no resource requests and limits")
    for probe in ("readinessProbe", "livenessProbe"):
        if probe not in container:
            problems.append(f"proxy: no {probe}")
    argv = list(container.get("command") or []) + list(container.get("args") or [])
    workers = argv[argv.index("--workers") + 1] if "--workers" in argv else None
    if workers != str(settings.kubernetes_proxy_workers):
        problems.append(
            f"proxy: --workers {workers}, .env asks for {settings.kubernetes_proxy_workers}"
        )
    graceful = ProxySettings.model_fields["graceful_timeout"].default
    env = {e["name"]: e.get("value") for e in container.get("env") or []}
    graceful = float(env.get("CACHED_TEI_PROXY_GRACEFUL_TIMEOUT") or graceful)
    if spec.get("terminationGracePeriodSeconds", 30) <= graceful:
        problems.append("proxy: terminationGracePeriodSeconds does not exceed its graceful stop")
    return problems


def _scaling_problems(objects: list[dict]) -> list[str]:
    by_kind = {(o["kind"], o["metadata"]["name"]): o for o in objects}
    problems = []
    hpa = by_kind.get(("HorizontalPodAutoscaler", "proxy"))
    if hpa is None or hpa["spec"]["scaleTargetRef"] != {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": "proxy",
    }:
        problems.append("proxy: no HorizontalPodAutoscaler on its Deployment")
    pdb = by_kind.get(("PodDisruptionBudget", "proxy"))
    proxy = by_kind.get(("Deployment", "proxy"))
    if pdb is None or proxy is None or pdb["spec"]["selector"] != proxy["spec"]["selector"]:
        problems.append("proxy: no PodDisruptionBudget over its pods")
    return problems


def kubernetes_problems(objects: list[dict], settings) -> list[str]:
    """Every rule violation in one rendered overlay (empty list: all good)."""
    return (
        _gpu_problems(objects, settings)
        + _image_problems(objects)
        + _tei_problems(objects, settings)
        + _proxy_problems(objects, settings)
        + _scaling_problems(objects)
    )
