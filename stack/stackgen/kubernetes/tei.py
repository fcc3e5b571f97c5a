"""TEI on Kubernetes, per pool: one pod per GPU in a StatefulSet, and the headless Service
nginx resolves."""

from __future__ import annotations

from typing import Any

from ..constants import TEI_PORT
from ..environment import tei_environment
from ..pools import Pool
from ..settings import Settings
from .common import (
    HF_TOKEN_SECRET,
    HF_TOKEN_SECRET_KEY,
    TEI_KEY_SECRET,
    TEI_KEY_SECRET_KEY,
    http_probe,
    labels,
    metadata,
    plain_env,
    seconds,
    secret_env,
    service,
    volume_claim,
)

GPU = "nvidia.com/gpu"
PROBE_PERIOD = 10


def _resources(s: Settings) -> dict[str, Any]:
    if s.cpu:
        return {"requests": {"cpu": "2", "memory": "4Gi"}, "limits": {"memory": "8Gi"}}
    # Extended resources are requested by their limit: exactly one GPU per pod.
    return {"requests": {"cpu": "2", "memory": "8Gi"}, "limits": {"memory": "16Gi", GPU: 1}}


def _container(s: Settings, pool: Pool) -> dict[str, Any]:
    env = plain_env(tei_environment(s, pool))
    if s.has_hf_token:
        env.append(secret_env("HF_TOKEN", HF_TOKEN_SECRET, HF_TOKEN_SECRET_KEY))
    if s.has_tei_api_key:
        env.append(secret_env("API_KEY", TEI_KEY_SECRET, TEI_KEY_SECRET_KEY))
    return {
        "name": pool.name,
        "image": f"{s.tei_image}:{s.tei_tag}",
        "env": env,
        "ports": [{"name": "http", "containerPort": TEI_PORT, "protocol": "TCP"}],
        "resources": _resources(s),
        "volumeMounts": [{"name": "models", "mountPath": "/data"}],
        # /health is 200 once the model is downloaded and warm: the startup probe allows
        # TEI_HEALTH_START_PERIOD for that, then readiness and liveness take over.
        "startupProbe": http_probe(
            "/health", "http", PROBE_PERIOD, -(-seconds(s.tei_start_period) // PROBE_PERIOD)
        ),
        "readinessProbe": http_probe("/health", "http", PROBE_PERIOD, 3),
        "livenessProbe": http_probe("/health", "http", 15, 5),
    }


def _pool_objects(s: Settings, pool: Pool) -> list[dict[str, Any]]:
    """The headless Service (one DNS record per ready pod) and the StatefulSet of a pool."""
    pod_spec: dict[str, Any] = {"containers": [_container(s, pool)]}
    if not s.cpu:
        pod_spec["tolerations"] = [{"key": GPU, "operator": "Exists", "effect": "NoSchedule"}]
    statefulset = {
        "apiVersion": "apps/v1",
        "kind": "StatefulSet",
        "metadata": metadata(pool.name),
        "spec": {
            "serviceName": pool.name,
            "replicas": pool.kubernetes_count,
            # Each pod has its own model volume: nothing to wait for, start them together.
            "podManagementPolicy": "Parallel",
            "selector": {"matchLabels": labels(pool.name)},
            "template": {"metadata": {"labels": labels(pool.name)}, "spec": pod_spec},
            "volumeClaimTemplates": [volume_claim("models", s.kubernetes_tei_storage, s)],
        },
    }
    return [service(pool.name, {"http": TEI_PORT}, headless=True, metrics=True), statefulset]


def tei_objects(s: Settings) -> list[dict[str, Any]]:
    """Every pool's headless Service and StatefulSet, the dense pool first."""
    return [obj for pool in s.pools for obj in _pool_objects(s, pool)]
