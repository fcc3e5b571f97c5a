"""prometheus.yml: scrape the proxy, every TEI of every pool (local and remote) and Qdrant."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from .constants import PROXY_CONTAINER_PORT, QDRANT_HTTP_PORT, QDRANT_SECRET
from .output import render_yaml
from .settings import Settings


def build_prometheus_config(s: Settings) -> dict[str, Any]:
    """Scrape the proxy, every TEI (local and remote) and Qdrant, with Qdrant's key if any."""
    qdrant: dict[str, Any] = {"job_name": "qdrant"}
    if s.external_qdrant:
        url = urlsplit(s.qdrant_url)
        qdrant["scheme"] = url.scheme
        qdrant["metrics_path"] = url.path.rstrip("/") + "/metrics"
        qdrant["static_configs"] = [{"targets": [url.netloc]}]
    else:
        qdrant["static_configs"] = [{"targets": [f"qdrant:{QDRANT_HTTP_PORT}"]}]
    if s.qdrant_needs_key:
        qdrant["authorization"] = {
            "type": "Bearer",
            "credentials_file": f"/run/secrets/{QDRANT_SECRET}",
        }
    return {
        "global": {"scrape_interval": "15s", "evaluation_interval": "15s"},
        "scrape_configs": [
            {
                "job_name": "cached-tei-proxy",
                "static_configs": [{"targets": [f"proxy:{PROXY_CONTAINER_PORT}"]}],
            },
            # TEI serves /metrics on its HTTP port, without its API key; a job per pool.
            *(
                {"job_name": pool.name, "static_configs": [{"targets": pool.upstreams}]}
                for pool in s.pools
            ),
            qdrant,
        ],
    }


def render_prometheus_config(s: Settings) -> str:
    return render_yaml(build_prometheus_config(s))
