"""Names, ports and versions that several generated files share."""

from __future__ import annotations

from pathlib import Path

STACK_DIR = Path(__file__).resolve().parents[1]

# TEI image tag prefixes by hardware family (see stack/README.md).
TEI_VARIANTS = {
    "cpu": "cpu-",
    "turing": "turing-",  # T4, RTX 20xx (experimental upstream)
    "plain": "",  # A100 / A30 (compute capability 8.0)
    "86": "86-",  # A10, A40, RTX 30xx
    "89": "89-",  # L4, L40, RTX 40xx
    "hopper": "hopper-",  # H100, H200
}

# Ports inside the containers (the host side is configured in .env).
TEI_PORT = 80
NGINX_PORT = 80
NGINX_HEALTH_PATH = "/nginx-health"
# nginx listens on one port per TEI pool, so each pool is a TEI server at its root (/info,
# /health, /embed_sparse, /rerank, /metrics) for the proxy and any other TEI client.
NGINX_POOL_PORTS = {"dense": NGINX_PORT, "sparse": 8081, "rerank": 8082}
QDRANT_HTTP_PORT = 6333
QDRANT_GRPC_PORT = 6334
PROXY_CONTAINER_PORT = 8000
PROMETHEUS_PORT = 9090
GRAFANA_PORT = 3000

# The server store writes collection metadata, which Qdrant keeps from 1.16 on (older
# servers silently drop it); the stack's requests are checked against 1.19's API.
QDRANT_MIN_VERSION = (1, 16, 0)
# Open source nginx re-resolves upstream names (`server ... resolve`) from 1.27.3 on.
NGINX_MIN_VERSION = (1, 27, 3)
# Seconds the proxy waits for in-flight requests on SIGTERM, then the time it may take to
# drain the cache's write-behind queue; the container runtime must wait for both.
PROXY_GRACEFUL_TIMEOUT = 30
PROXY_STOP_GRACE = PROXY_GRACEFUL_TIMEOUT + 15
MONITORING_PROFILE = "monitoring"
QDRANT_SECRET = "qdrant_api_key"  # Prometheus reads Qdrant's key from /run/secrets/<this>
# Secrets: the generator knows only whether each is set; compose reads them from .env at
# `up` time (as ${VAR}), Kubernetes from Secrets.
COMPOSE_SECRETS = (
    "HF_TOKEN",
    "TEI_API_KEY",
    "QDRANT_API_KEY",
    "PROXY_API_KEYS",
    "GRAFANA_ADMIN_PASSWORD",
)
LOG_LEVELS = ("debug", "info", "warning", "error")
