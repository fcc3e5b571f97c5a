"""Names, labels and small builders that every Kubernetes object shares."""

from __future__ import annotations

import re
from typing import Any

from ..settings import Settings

PART_OF = "cached-tei"
# Secrets the objects read; stack/README.md ("More than one host") says how to create each.
QDRANT_SECRET = "qdrant-apikey"  # Qdrant's Helm chart: Secret <release>-apikey, key api-key
QDRANT_SECRET_KEY = "api-key"
PROXY_KEYS_SECRET = "cached-tei-proxy-api-keys"
PROXY_KEYS_SECRET_KEY = "keys"
HF_TOKEN_SECRET = "cached-tei-hf-token"
HF_TOKEN_SECRET_KEY = "token"
TEI_KEY_SECRET = "cached-tei-tei-api-key"
TEI_KEY_SECRET_KEY = "api-key"
# A label that the monitoring overlay's ServiceMonitor selects.
METRICS_LABEL = "cached-tei.github.io/metrics"
CLUSTER_DOMAIN = "cluster.local"
KUBE_DNS = f"kube-dns.kube-system.svc.{CLUSTER_DOMAIN}"


def labels(name: str) -> dict[str, str]:
    return {"app.kubernetes.io/name": name, "app.kubernetes.io/part-of": PART_OF}


def metadata(name: str, **extra: dict[str, str]) -> dict[str, Any]:
    return {"name": name, "labels": {**labels(name), **extra.get("labels", {})}}


def secret_env(var: str, secret: str, key: str, optional: bool = False) -> dict[str, Any]:
    ref: dict[str, Any] = {"name": secret, "key": key}
    if optional:
        ref["optional"] = True
    return {"name": var, "valueFrom": {"secretKeyRef": ref}}


def plain_env(values: dict[str, str]) -> list[dict[str, Any]]:
    return [{"name": name, "value": value} for name, value in values.items()]


def http_probe(
    path: str, port: str, period: int, failures: int, timeout: int = 5
) -> dict[str, Any]:
    return {
        "httpGet": {"path": path, "port": port},
        "periodSeconds": period,
        "timeoutSeconds": timeout,
        "failureThreshold": failures,
    }


def seconds(duration: str) -> int:
    """A .env duration (30s, 10m, 1h30m; validated already) in whole seconds."""
    units = {"ms": 0.001, "s": 1, "m": 60, "h": 3600}
    total = sum(int(n) * units[u] for n, u in re.findall(r"(\d+)(ms|s|m|h)", duration))
    return max(1, int(total))


def volume_claim(name: str, size: str, s: Settings) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "accessModes": ["ReadWriteOnce"],
        "resources": {"requests": {"storage": size}},
    }
    if s.kubernetes_storage_class:
        spec["storageClassName"] = s.kubernetes_storage_class
    return {"metadata": {"name": name}, "spec": spec}


def service(
    name: str, ports: dict[str, int], headless: bool = False, metrics: bool = False
) -> dict[str, Any]:
    meta = metadata(name, labels={METRICS_LABEL: "true"} if metrics else {})
    spec: dict[str, Any] = {
        "selector": labels(name),
        "ports": [
            {"name": port_name, "port": port, "targetPort": port_name, "protocol": "TCP"}
            for port_name, port in ports.items()
        ],
    }
    if headless:
        spec["clusterIP"] = "None"
    return {"apiVersion": "v1", "kind": "Service", "metadata": meta, "spec": spec}


def restricted_security() -> dict[str, Any]:
    """A container that cannot gain privileges, has no capabilities, and writes nowhere."""
    return {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "capabilities": {"drop": ["ALL"]},
    }
