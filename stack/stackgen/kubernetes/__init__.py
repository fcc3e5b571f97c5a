"""Kubernetes manifests from the same .env: a Kustomize base and three overlays.

kubernetes/base/                  namespace, TEI, nginx, the proxy
kubernetes/overlays/dev/          + a single-node Qdrant StatefulSet
kubernetes/overlays/production/   Qdrant from its official Helm chart (qdrant-values.yaml)
kubernetes/overlays/monitoring/   production + ServiceMonitor + Grafana dashboard
"""

from __future__ import annotations

from typing import Any

from ..output import render_yaml, render_yaml_documents
from ..settings import Settings
from .common import PART_OF, metadata
from .monitoring import dashboard_configmap, service_monitor
from .nginx import nginx_objects
from .proxy import proxy_objects
from .qdrant import qdrant_dev_objects, qdrant_helm_values
from .tei import tei_objects

ROOT = "kubernetes"


def _kustomization(namespace: str, resources: list[str]) -> dict[str, Any]:
    return {
        "apiVersion": "kustomize.config.k8s.io/v1beta1",
        "kind": "Kustomization",
        "namespace": namespace,
        "resources": resources,
    }


def _base(s: Settings) -> dict[str, str]:
    namespace = {
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {**metadata(PART_OF), "name": s.kubernetes_namespace},
    }
    files: dict[str, list[dict[str, Any]]] = {
        "namespace.yaml": [namespace],
        "tei.yaml": tei_objects(s),
        "nginx.yaml": nginx_objects(s),
        "proxy.yaml": proxy_objects(s),
    }
    out = {name: render_yaml_documents(docs) for name, docs in files.items()}
    out["kustomization.yaml"] = render_yaml(_kustomization(s.kubernetes_namespace, list(files)))
    return {f"base/{name}": text for name, text in out.items()}


def render_kubernetes(s: Settings) -> dict[str, str]:
    """Path under stack/ -> content, for every Kubernetes file."""
    ns = s.kubernetes_namespace
    files = _base(s)
    files["overlays/dev/kustomization.yaml"] = render_yaml(
        _kustomization(ns, ["../../base", "qdrant.yaml"])
    )
    files["overlays/dev/qdrant.yaml"] = render_yaml_documents(qdrant_dev_objects(s))
    files["overlays/production/kustomization.yaml"] = render_yaml(
        _kustomization(ns, ["../../base"])
    )
    files["overlays/production/qdrant-values.yaml"] = render_yaml(qdrant_helm_values(s))
    files["overlays/monitoring/kustomization.yaml"] = render_yaml(
        _kustomization(ns, ["../production", "servicemonitor.yaml", "dashboard.yaml"])
    )
    files["overlays/monitoring/servicemonitor.yaml"] = render_yaml_documents([service_monitor()])
    files["overlays/monitoring/dashboard.yaml"] = render_yaml_documents([dashboard_configmap()])
    return {f"{ROOT}/{path}": text for path, text in files.items()}
