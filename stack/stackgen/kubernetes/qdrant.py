"""Qdrant on Kubernetes: a single-node StatefulSet (dev) and the official chart's values."""

from __future__ import annotations

from typing import Any

from ..constants import QDRANT_GRPC_PORT, QDRANT_HTTP_PORT
from ..settings import Settings
from .common import (
    QDRANT_SECRET,
    QDRANT_SECRET_KEY,
    http_probe,
    labels,
    metadata,
    plain_env,
    secret_env,
    service,
    volume_claim,
)

NAME = "qdrant"  # the Helm release name too: the chart then names its Service `qdrant`
DEV_STORAGE = "10Gi"


def qdrant_dev_objects(s: Settings) -> list[dict[str, Any]]:
    """One Qdrant pod for trying the stack out: no replication, no cluster."""
    container = {
        "name": NAME,
        "image": f"{s.qdrant_image}:{s.qdrant_version}",
        "env": [
            secret_env("QDRANT__SERVICE__API_KEY", QDRANT_SECRET, QDRANT_SECRET_KEY),
            *plain_env({"QDRANT__TELEMETRY_DISABLED": "true"}),
        ],
        "ports": [
            {"name": "http", "containerPort": QDRANT_HTTP_PORT, "protocol": "TCP"},
            {"name": "grpc", "containerPort": QDRANT_GRPC_PORT, "protocol": "TCP"},
        ],
        "resources": {"requests": {"cpu": "500m", "memory": "1Gi"}, "limits": {"memory": "4Gi"}},
        "volumeMounts": [{"name": "storage", "mountPath": "/qdrant/storage"}],
        # /readyz and /livez answer without the API key.
        "startupProbe": http_probe("/readyz", "http", 5, 60),
        "readinessProbe": http_probe("/readyz", "http", 10, 3),
        "livenessProbe": http_probe("/livez", "http", 15, 4),
    }
    statefulset = {
        "apiVersion": "apps/v1",
        "kind": "StatefulSet",
        "metadata": metadata(NAME),
        "spec": {
            "serviceName": NAME,
            "replicas": 1,
            "selector": {"matchLabels": labels(NAME)},
            "template": {"metadata": {"labels": labels(NAME)}, "spec": {"containers": [container]}},
            "volumeClaimTemplates": [volume_claim("storage", DEV_STORAGE, s)],
        },
    }
    return [service(NAME, {"http": QDRANT_HTTP_PORT, "grpc": QDRANT_GRPC_PORT}), statefulset]


def qdrant_helm_values(s: Settings) -> dict[str, Any]:
    """Values for `helm install qdrant qdrant/qdrant`: a cluster with a generated API key,
    which the chart keeps in the Secret `qdrant-apikey` (key `api-key`) the proxy reads."""
    values: dict[str, Any] = {
        "replicaCount": s.kubernetes_qdrant_replicas,
        "image": {"tag": s.qdrant_version},
        "apiKey": True,
        "config": {"cluster": {"enabled": True}, "telemetry_disabled": True},
        "persistence": {"size": s.kubernetes_qdrant_storage},
    }
    if s.kubernetes_storage_class:
        values["persistence"]["storageClassName"] = s.kubernetes_storage_class
    return values
