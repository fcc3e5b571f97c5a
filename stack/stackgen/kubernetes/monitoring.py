"""The monitoring overlay: a Prometheus Operator ServiceMonitor and the Grafana dashboard."""

from __future__ import annotations

from typing import Any

from ..constants import STACK_DIR
from .common import METRICS_LABEL, PART_OF, metadata

DASHBOARD = STACK_DIR / "grafana" / "dashboards" / "cached-tei.json"


def service_monitor() -> dict[str, Any]:
    """Scrapes /metrics of every Service labelled for it: the proxy and each TEI pod."""
    return {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "ServiceMonitor",
        "metadata": metadata(PART_OF),
        "spec": {
            "selector": {
                "matchLabels": {"app.kubernetes.io/part-of": PART_OF, METRICS_LABEL: "true"}
            },
            "endpoints": [{"port": "http", "path": "/metrics", "interval": "15s"}],
        },
    }


def dashboard_configmap() -> dict[str, Any]:
    """stack/grafana's dashboard, labelled for the Grafana sidecar that loads dashboards."""
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": metadata("cached-tei-dashboard", labels={"grafana_dashboard": "1"}),
        "data": {"cached-tei.json": DASHBOARD.read_text(encoding="utf-8")},
    }
