"""The proxy on Kubernetes: Deployment, Service, HorizontalPodAutoscaler, PodDisruptionBudget."""

from __future__ import annotations

from typing import Any

from ..constants import (
    PROXY_CONTAINER_PORT,
    PROXY_STOP_GRACE,
    QDRANT_HTTP_PORT,
)
from ..environment import pool_urls, proxy_environment
from ..settings import Settings
from .common import (
    PROXY_KEYS_SECRET,
    PROXY_KEYS_SECRET_KEY,
    QDRANT_SECRET,
    QDRANT_SECRET_KEY,
    TEI_KEY_SECRET,
    TEI_KEY_SECRET_KEY,
    http_probe,
    labels,
    metadata,
    plain_env,
    restricted_security,
    secret_env,
    service,
)

NAME = "proxy"
UID = 10001  # the image's user (stack/Dockerfile)


def _env(s: Settings) -> list[dict[str, Any]]:
    env = plain_env(
        {
            **pool_urls(s, "nginx"),
            "CACHED_TEI_QDRANT_URL": s.qdrant_url or f"http://qdrant:{QDRANT_HTTP_PORT}",
        }
    )
    env.append(
        secret_env(
            "CACHED_TEI_QDRANT_API_KEY",
            QDRANT_SECRET,
            QDRANT_SECRET_KEY,
            optional=not s.qdrant_needs_key,
        )
    )
    # Without PROXY_ALLOW_ANONYMOUS=true the pods wait for the keys' Secret to exist.
    env.append(
        secret_env(
            "CACHED_TEI_PROXY_API_KEYS",
            PROXY_KEYS_SECRET,
            PROXY_KEYS_SECRET_KEY,
            optional=s.proxy_allow_anonymous,
        )
    )
    if s.has_tei_api_key:
        env.append(secret_env("CACHED_TEI_API_KEY", TEI_KEY_SECRET, TEI_KEY_SECRET_KEY))
    return env + plain_env(proxy_environment(s))


def _container(s: Settings) -> dict[str, Any]:
    workers = s.kubernetes_proxy_workers
    return {
        "name": NAME,
        "image": f"{s.proxy_image}:{s.proxy_version}",
        # A fixed worker count: `auto` would count the node's CPUs, not the pod's.
        "command": ["cached-tei", "serve"],
        "args": [
            "--host",
            "0.0.0.0",
            "--port",
            str(PROXY_CONTAINER_PORT),
            "--workers",
            str(workers),
        ],
        "env": _env(s),
        "ports": [{"name": "http", "containerPort": PROXY_CONTAINER_PORT, "protocol": "TCP"}],
        "resources": {
            "requests": {"cpu": str(workers), "memory": f"{512 * workers}Mi"},
            "limits": {"cpu": str(workers), "memory": f"{1024 * workers}Mi"},
        },
        "securityContext": restricted_security(),
        # The workers share their metrics through a temporary folder.
        "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}],
        "startupProbe": {"tcpSocket": {"port": "http"}, "periodSeconds": 2, "failureThreshold": 30},
        # /health asks TEI through nginx: a pod is ready when it can serve. Liveness only
        # asks whether the process accepts connections, so a TEI outage restarts nothing.
        "readinessProbe": http_probe("/health", "http", 10, 3, timeout=6),
        "livenessProbe": {
            "tcpSocket": {"port": "http"},
            "periodSeconds": 15,
            "failureThreshold": 4,
        },
    }


def _deployment(s: Settings) -> dict[str, Any]:
    pod = {
        "terminationGracePeriodSeconds": PROXY_STOP_GRACE,
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": UID,
            "runAsGroup": UID,
            "fsGroup": UID,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "containers": [_container(s)],
        "volumes": [{"name": "tmp", "emptyDir": {"sizeLimit": "256Mi"}}],
        "topologySpreadConstraints": [
            {
                "maxSkew": 1,
                "topologyKey": "kubernetes.io/hostname",
                "whenUnsatisfiable": "ScheduleAnyway",
                "labelSelector": {"matchLabels": labels(NAME)},
            }
        ],
    }
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": metadata(NAME),
        "spec": {
            # No replicas: the autoscaler owns the count.
            "selector": {"matchLabels": labels(NAME)},
            "strategy": {"rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1}},
            "template": {"metadata": {"labels": labels(NAME)}, "spec": pod},
        },
    }


def _autoscaler(s: Settings) -> dict[str, Any]:
    return {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": metadata(NAME),
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": NAME},
            "minReplicas": s.kubernetes_proxy_min_replicas,
            "maxReplicas": s.kubernetes_proxy_max_replicas,
            "metrics": [
                {
                    "type": "Resource",
                    "resource": {
                        "name": "cpu",
                        "target": {"type": "Utilization", "averageUtilization": 70},
                    },
                }
            ],
            "behavior": {"scaleDown": {"stabilizationWindowSeconds": 300}},
        },
    }


def proxy_objects(s: Settings) -> list[dict[str, Any]]:
    disruption_budget = {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": metadata(NAME),
        "spec": {"maxUnavailable": 1, "selector": {"matchLabels": labels(NAME)}},
    }
    return [
        service(NAME, {"http": PROXY_CONTAINER_PORT}, metrics=True),
        _deployment(s),
        _autoscaler(s),
        disruption_budget,
    ]
