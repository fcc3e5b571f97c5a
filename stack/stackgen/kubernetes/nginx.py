"""nginx on Kubernetes: the stack's nginx.conf over the TEI pods (headless Service, re-resolved)."""

from __future__ import annotations

import hashlib
from typing import Any

from ..constants import NGINX_HEALTH_PATH, TEI_PORT
from ..nginx import Route, render_nginx_conf
from ..pools import Pool
from ..settings import Settings
from .common import CLUSTER_DOMAIN, KUBE_DNS, http_probe, labels, metadata, service

NAME = "nginx"
REPLICAS = 2


def _route(s: Settings, pool: Pool) -> Route:
    """A pool's TEI pods behind one name (its headless Service), on the pool's port."""
    name = f"{pool.name}.{s.kubernetes_namespace}.svc.{CLUSTER_DOMAIN}:{TEI_PORT}"
    return Route([name], pool.nginx_port, pool.kubernetes_count)


def nginx_conf(s: Settings) -> str:
    """The compose nginx.conf with each pool's pods behind one name, re-resolved via kube-dns."""
    dense, *others = s.pools
    route = _route(s, dense)
    return render_nginx_conf(
        s,
        upstreams=route.servers,
        resolver=KUBE_DNS,
        replicas=route.replicas,
        routes={pool.kind: _route(s, pool) for pool in others},
    )


def _port_name(pool: Pool) -> str:
    return "http" if pool.kind == "dense" else pool.kind


def nginx_objects(s: Settings) -> list[dict[str, Any]]:
    conf = nginx_conf(s)
    configmap = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": metadata("nginx-conf"),
        "data": {"nginx.conf": conf},
    }
    container = {
        "name": NAME,
        "image": f"{s.nginx_image}:{s.nginx_version}-alpine",
        "ports": [
            {"name": _port_name(pool), "containerPort": pool.nginx_port, "protocol": "TCP"}
            for pool in s.pools
        ],
        "resources": {
            "requests": {"cpu": "250m", "memory": "128Mi"},
            "limits": {"memory": "256Mi"},
        },
        "volumeMounts": [
            {"name": "conf", "mountPath": "/etc/nginx/nginx.conf", "subPath": "nginx.conf"}
        ],
        "readinessProbe": http_probe(NGINX_HEALTH_PATH, "http", 10, 3, timeout=3),
        "livenessProbe": http_probe(NGINX_HEALTH_PATH, "http", 10, 3, timeout=3),
    }
    # A changed nginx.conf changes this annotation, so the pods roll onto it.
    digest = hashlib.sha256(conf.encode()).hexdigest()[:16]
    deployment = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": metadata(NAME),
        "spec": {
            "replicas": REPLICAS,
            "selector": {"matchLabels": labels(NAME)},
            "template": {
                "metadata": {
                    "labels": labels(NAME),
                    "annotations": {"cached-tei.github.io/nginx-conf": digest},
                },
                "spec": {
                    "containers": [container],
                    "volumes": [{"name": "conf", "configMap": {"name": "nginx-conf"}}],
                },
            },
        },
    }
    ports = {_port_name(pool): pool.nginx_port for pool in s.pools}
    return [configmap, service(NAME, ports), deployment]
