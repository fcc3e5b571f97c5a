"""compose.yml: the services as Python dicts, dumped with yaml.safe_dump."""

from __future__ import annotations

from typing import Any

from .constants import (
    GRAFANA_PORT,
    MONITORING_PROFILE,
    NGINX_HEALTH_PATH,
    NGINX_PORT,
    PROMETHEUS_PORT,
    PROXY_CONTAINER_PORT,
    PROXY_STOP_GRACE,
    QDRANT_GRPC_PORT,
    QDRANT_HTTP_PORT,
    QDRANT_SECRET,
    TEI_PORT,
)
from .environment import pool_urls, proxy_environment, tei_environment
from .output import render_yaml
from .pools import Pool
from .settings import Settings

# Qdrant's image has no curl or wget: an HTTP GET /readyz over bash's /dev/tcp, pure bash.
# `$$` is compose's escape for a literal `$`.
_QDRANT_HEALTH = (
    f"exec 3<>/dev/tcp/127.0.0.1/{QDRANT_HTTP_PORT} && "
    "printf 'GET /readyz HTTP/1.0\\r\\nHost: localhost\\r\\n\\r\\n' >&3 && "
    "read -r status_line <&3 && "
    '[[ "$$status_line" == *" 200 "* ]]'
)

_PROXY_HEALTH = (
    "import sys, urllib.request; "
    f"sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:{PROXY_CONTAINER_PORT}/health', "
    "timeout=4).status == 200 else 1)"
)


def _http_get(tool: str, port: int, path: str) -> list[str]:
    """A health-check command that GETs a local URL with the image's own curl or wget."""
    url = f"http://127.0.0.1:{port}{path}"
    quiet = ["-fsS", "-o"] if tool == "curl" else ["-q", "-O"]
    return ["CMD", tool, *quiet, "/dev/null", url]


def _required_secret(var: str) -> str:
    return "${" + var + ":?set " + var + " in stack/.env}"


def _tei_service(s: Settings, pool: Pool, index: int) -> dict[str, Any]:
    environment = tei_environment(s, pool)
    if s.has_hf_token:  # TEI reads HF_TOKEN; the value stays in .env
        environment["HF_TOKEN"] = "${HF_TOKEN}"
    if s.has_tei_api_key:
        environment["API_KEY"] = "${TEI_API_KEY}"
    svc: dict[str, Any] = {
        "image": f"{s.tei_image}:{s.tei_tag}",
        "restart": "unless-stopped",
        "environment": environment,
        "volumes": ["tei-models:/data"],
        "expose": [str(TEI_PORT)],
        "healthcheck": {
            # The TEI images ship curl (since 1.5); /health is 200 once the model is warm.
            "test": _http_get("curl", TEI_PORT, "/health"),
            "interval": "15s",
            "timeout": "5s",
            "retries": 5,
            "start_period": s.tei_start_period,
            "start_interval": "5s",
        },
    }
    if not s.cpu:
        svc["deploy"] = {
            "resources": {
                "reservations": {
                    "devices": [
                        {
                            "driver": "nvidia",
                            "device_ids": [pool.gpu_ids[index]],
                            "capabilities": ["gpu"],
                        }
                    ]
                }
            }
        }
    if index > 0:
        # The pool's first replica downloads its model into the shared volume; the others wait.
        svc["depends_on"] = {pool.services[0]: {"condition": "service_healthy"}}
    return svc


def _loopback_port(published: int, target: int) -> dict[str, Any]:
    return {
        "target": target,
        "published": str(published),
        "host_ip": "127.0.0.1",
        "protocol": "tcp",
    }


def _proxy_service(s: Settings) -> dict[str, Any]:
    environment = {
        **pool_urls(s, "nginx"),
        "CACHED_TEI_QDRANT_URL": s.qdrant_url or f"http://qdrant:{QDRANT_HTTP_PORT}",
        "CACHED_TEI_QDRANT_API_KEY": (
            "${QDRANT_API_KEY:-}" if s.external_qdrant else _required_secret("QDRANT_API_KEY")
        ),
        "CACHED_TEI_PROXY_API_KEYS": "${PROXY_API_KEYS:-}",
    }
    if s.has_tei_api_key:
        environment["CACHED_TEI_API_KEY"] = "${TEI_API_KEY}"
    environment.update(proxy_environment(s))
    environment["CACHED_TEI_PROXY_WORKERS"] = s.proxy_workers
    depends_on = {"nginx": {"condition": "service_healthy"}}
    if not s.external_qdrant:
        depends_on["qdrant"] = {"condition": "service_healthy"}
    return {
        "build": {"context": "..", "dockerfile": "stack/Dockerfile"},
        "restart": "unless-stopped",
        # SIGTERM, then in-flight requests and the cache's pending writes finish first.
        "stop_grace_period": f"{PROXY_STOP_GRACE}s",
        "command": [
            "cached-tei",
            "serve",
            "--host",
            "0.0.0.0",
            "--port",
            str(PROXY_CONTAINER_PORT),
        ],
        "environment": environment,
        "ports": [
            {
                "target": PROXY_CONTAINER_PORT,
                "published": str(s.proxy_port),
                "host_ip": s.proxy_bind,
                "protocol": "tcp",
            }
        ],
        "depends_on": depends_on,
        "healthcheck": {
            "test": ["CMD", "python", "-c", _PROXY_HEALTH],
            "interval": "15s",
            "timeout": "5s",
            "retries": 3,
            "start_period": "20s",
        },
    }


def _monitoring_services(s: Settings) -> dict[str, dict[str, Any]]:
    prometheus: dict[str, Any] = {
        "image": f"{s.prometheus_image}:{s.prometheus_version}",
        "profiles": [MONITORING_PROFILE],
        "restart": "unless-stopped",
        "volumes": [
            "./prometheus.yml:/etc/prometheus/prometheus.yml:ro",
            "prometheus-data:/prometheus",
        ],
        "expose": [str(PROMETHEUS_PORT)],
        "healthcheck": {
            "test": _http_get("wget", PROMETHEUS_PORT, "/-/ready"),
            "interval": "15s",
            "timeout": "5s",
            "retries": 3,
            "start_period": "20s",
        },
    }
    if s.qdrant_needs_key:
        prometheus["secrets"] = [QDRANT_SECRET]
    if s.prometheus_publish_port:
        prometheus["ports"] = [_loopback_port(s.prometheus_publish_port, PROMETHEUS_PORT)]
    grafana: dict[str, Any] = {
        "image": f"{s.grafana_image}:{s.grafana_version}",
        "profiles": [MONITORING_PROFILE],
        "restart": "unless-stopped",
        "environment": {
            "GF_SECURITY_ADMIN_PASSWORD": _required_secret("GRAFANA_ADMIN_PASSWORD"),
            "GF_USERS_ALLOW_SIGN_UP": "false",
            "GF_ANALYTICS_REPORTING_ENABLED": "false",
            "GF_ANALYTICS_CHECK_FOR_UPDATES": "false",
            "GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH": "/etc/grafana/dashboards/cached-tei.json",
        },
        "volumes": [
            "./grafana/provisioning:/etc/grafana/provisioning:ro",
            "./grafana/dashboards:/etc/grafana/dashboards:ro",
            "grafana-data:/var/lib/grafana",
        ],
        "expose": [str(GRAFANA_PORT)],
        "depends_on": {"prometheus": {"condition": "service_healthy"}},
        "healthcheck": {
            "test": _http_get("wget", GRAFANA_PORT, "/api/health"),
            "interval": "15s",
            "timeout": "5s",
            "retries": 3,
            "start_period": "30s",
        },
    }
    if s.grafana_publish_port:
        grafana["ports"] = [_loopback_port(s.grafana_publish_port, GRAFANA_PORT)]
    return {"prometheus": prometheus, "grafana": grafana}


def _nginx_service(s: Settings) -> dict[str, Any]:
    nginx: dict[str, Any] = {
        "image": f"{s.nginx_image}:{s.nginx_version}-alpine",
        "restart": "unless-stopped",
        "volumes": ["./nginx.conf:/etc/nginx/nginx.conf:ro"],
        "expose": [str(pool.nginx_port) for pool in s.pools],
        "healthcheck": {
            "test": _http_get("wget", NGINX_PORT, NGINX_HEALTH_PATH),
            "interval": "10s",
            "timeout": "3s",
            "retries": 3,
            "start_period": "5s",
        },
    }
    # nginx starts once the first TEI of each pool is serving; later replicas join as they
    # come up (passive health: a refused connection moves the request to the next upstream).
    depends_on = {
        name: {"condition": "service_healthy" if i == 0 else "service_started"}
        for pool in s.pools
        for i, name in enumerate(pool.services)
    }
    if depends_on:
        nginx["depends_on"] = depends_on
    if s.nginx_publish_port:
        nginx["ports"] = [_loopback_port(s.nginx_publish_port, NGINX_PORT)]
    return nginx


def _qdrant_service(s: Settings) -> dict[str, Any]:
    qdrant: dict[str, Any] = {
        "image": f"{s.qdrant_image}:{s.qdrant_version}",
        "restart": "unless-stopped",
        "environment": {
            "QDRANT__SERVICE__API_KEY": _required_secret("QDRANT_API_KEY"),
            "QDRANT__TELEMETRY_DISABLED": "true",
            "QDRANT__SERVICE__HTTP_PORT": str(QDRANT_HTTP_PORT),
            "QDRANT__SERVICE__GRPC_PORT": str(QDRANT_GRPC_PORT),
        },
        "volumes": ["qdrant-storage:/qdrant/storage"],
        "expose": [str(QDRANT_HTTP_PORT), str(QDRANT_GRPC_PORT)],
        "healthcheck": {
            "test": ["CMD", "bash", "-c", _QDRANT_HEALTH],
            "interval": "10s",
            "timeout": "5s",
            "retries": 5,
            "start_period": "30s",
        },
    }
    ports = []
    if s.qdrant_publish_port:
        ports.append(_loopback_port(s.qdrant_publish_port, QDRANT_HTTP_PORT))
    if s.qdrant_grpc_publish_port:
        ports.append(_loopback_port(s.qdrant_grpc_publish_port, QDRANT_GRPC_PORT))
    if ports:
        qdrant["ports"] = ports
    return qdrant


def _volumes(s: Settings) -> dict[str, dict[str, Any]]:
    volumes: dict[str, dict[str, Any]] = {}
    if any(pool.services for pool in s.pools):
        volumes["tei-models"] = {}
    if not s.external_qdrant:
        volumes["qdrant-storage"] = {}
    if s.monitoring:
        volumes["prometheus-data"] = {}
        volumes["grafana-data"] = {}
    return volumes


def build_compose(s: Settings) -> dict[str, Any]:
    """The compose file as a dict, services in start order."""
    services = {
        name: _tei_service(s, pool, i) for pool in s.pools for i, name in enumerate(pool.services)
    }
    services["nginx"] = _nginx_service(s)
    if not s.external_qdrant:
        services["qdrant"] = _qdrant_service(s)
    services["proxy"] = _proxy_service(s)
    if s.monitoring:
        services.update(_monitoring_services(s))

    compose: dict[str, Any] = {"name": s.project_name, "services": services}
    volumes = _volumes(s)
    if volumes:
        compose["volumes"] = volumes
    if s.monitoring and s.qdrant_needs_key:
        compose["secrets"] = {QDRANT_SECRET: {"environment": "QDRANT_API_KEY"}}
    return compose


def render_compose(s: Settings) -> str:
    return render_yaml(build_compose(s))
