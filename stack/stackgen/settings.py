"""Settings: one declaration per .env variable, and the rules across several of them."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import parsers as p
from .constants import (
    LOG_LEVELS,
    NGINX_MIN_VERSION,
    QDRANT_MIN_VERSION,
    STACK_DIR,
    TEI_VARIANTS,
)
from .env import ConfigError, parse_dotenv
from .parsers import Parser
from .pools import Pool

OPTIONAL_POOLS = ("sparse", "rerank")


@dataclass(frozen=True)
class EnvVar:
    """How one setting is read: its .env variable, its default as .env text, its parser."""

    name: str
    default: str
    parse: Parser

    def read(self, env: dict[str, str]) -> Any:
        return self.parse(self.name, env.get(self.name, "").strip() or self.default)


def setting(name: str, default: str = "", parse: Parser = p.text) -> Any:
    """A `Settings` field read from the .env variable `name` (empty or unset: `default`)."""
    return dataclasses.field(metadata={"env": EnvVar(name, default, parse)})


@dataclass(frozen=True, kw_only=True)
class Settings:
    """Everything the generator needs, validated. Build with `Settings.from_env(dict)`."""

    project_name: str = setting(
        "COMPOSE_PROJECT_NAME", "cached-tei", p.matching(r"^[a-z0-9][a-z0-9_-]*$", "a valid name")
    )
    # model
    model_id: str = setting("MODEL_ID", "", p.required)
    model_revision: str = setting("MODEL_REVISION")
    has_hf_token: bool = setting("HF_TOKEN", "", p.is_set)
    # TEI
    tei_image: str = setting("TEI_IMAGE", "ghcr.io/huggingface/text-embeddings-inference")
    tei_version: str = setting("TEI_VERSION", "1.9.3", p.pinned)
    tei_variant: str = setting("TEI_VARIANT", "hopper", p.one_of(*TEI_VARIANTS))
    gpu_ids: tuple[str, ...] = setting("GPU_IDS", "", p.gpu_ids)
    tei_replicas: int = setting("TEI_REPLICAS", "1", p.integer(0))  # cpu variant only
    tei_max_client_batch_size: int = setting("TEI_MAX_CLIENT_BATCH_SIZE", "32", p.integer(1))
    tei_max_batch_tokens: int = setting("TEI_MAX_BATCH_TOKENS", "16384", p.integer(1))
    tei_max_concurrent_requests: int = setting("TEI_MAX_CONCURRENT_REQUESTS", "512", p.integer(1))
    tei_payload_limit: int = setting("TEI_PAYLOAD_LIMIT", "2000000", p.integer(1))
    tei_auto_truncate: bool = setting("TEI_AUTO_TRUNCATE", "true", p.boolean)
    tei_dtype: str = setting("TEI_DTYPE", "", p.one_of("", "float16", "float32"))
    tei_start_period: str = setting("TEI_HEALTH_START_PERIOD", "30m", p.duration)
    has_tei_api_key: bool = setting("TEI_API_KEY", "", p.is_set)
    remote_upstreams: tuple[str, ...] = setting("TEI_REMOTE_UPSTREAMS", "", p.host_ports)
    # optional pools: a sparse (SPLADE) model and a reranker, each on TEI servers of its own
    sparse_model_id: str = setting("SPARSE_MODEL_ID")  # empty: no sparse pool
    sparse_model_revision: str = setting("SPARSE_MODEL_REVISION")
    sparse_gpu_ids: tuple[str, ...] = setting("SPARSE_GPU_IDS", "", p.gpu_ids)
    sparse_tei_replicas: int = setting("SPARSE_TEI_REPLICAS", "1", p.integer(0))  # cpu only
    rerank_model_id: str = setting("RERANK_MODEL_ID")  # empty: no rerank pool
    rerank_model_revision: str = setting("RERANK_MODEL_REVISION")
    rerank_gpu_ids: tuple[str, ...] = setting("RERANK_GPU_IDS", "", p.gpu_ids)
    rerank_tei_replicas: int = setting("RERANK_TEI_REPLICAS", "1", p.integer(0))  # cpu only
    # nginx
    nginx_image: str = setting("NGINX_IMAGE", "nginx")
    nginx_version: str = setting(
        "NGINX_VERSION",
        "1.27.5",
        p.at_least(
            NGINX_MIN_VERSION,
            "the TEI names are re-resolved (`server ... resolve`), which open source nginx has",
            "1.27.5",
        ),
    )
    nginx_publish_port: int | None = setting("NGINX_PUBLISH_PORT", "", p.port)
    nginx_next_upstream_tries: int = setting("NGINX_NEXT_UPSTREAM_TRIES", "3", p.integer(1))
    nginx_connect_timeout: str = setting("NGINX_CONNECT_TIMEOUT", "2s", p.duration)
    nginx_read_timeout: str = setting("NGINX_READ_TIMEOUT", "300s", p.duration)
    nginx_max_fails: int = setting("NGINX_MAX_FAILS", "3", p.integer(0))
    nginx_fail_timeout: str = setting("NGINX_FAIL_TIMEOUT", "10s", p.duration)
    nginx_keepalive: int = setting("NGINX_KEEPALIVE", "64", p.integer(1))
    # Qdrant
    qdrant_image: str = setting("QDRANT_IMAGE", "qdrant/qdrant")
    qdrant_version: str = setting(
        "QDRANT_VERSION",
        "v1.19.0",
        p.at_least(
            QDRANT_MIN_VERSION,
            "the cache stores collection metadata, which Qdrant keeps",
            "v1.19.0 (the tested release)",
        ),
    )
    has_qdrant_api_key: bool = setting("QDRANT_API_KEY", "", p.is_set)
    qdrant_url: str = setting("QDRANT_URL", "", p.http_url)  # external Qdrant: no qdrant service
    qdrant_shards: int | None = setting("QDRANT_SHARDS", "", p.optional_count)
    qdrant_replication_factor: int | None = setting(
        "QDRANT_REPLICATION_FACTOR", "", p.optional_count
    )
    qdrant_publish_port: int | None = setting("QDRANT_PUBLISH_PORT", "", p.port)
    qdrant_grpc_publish_port: int | None = setting("QDRANT_GRPC_PUBLISH_PORT", "", p.port)
    # proxy
    proxy_bind: str = setting("PROXY_BIND", "127.0.0.1", p.ip_address)
    proxy_port: int = setting("PROXY_PORT", "8000", p.port)
    has_proxy_api_keys: bool = setting("PROXY_API_KEYS", "", p.is_set)
    proxy_allow_anonymous: bool = setting("PROXY_ALLOW_ANONYMOUS", "false", p.boolean)
    proxy_workers: str = setting("PROXY_WORKERS", "auto", p.workers)
    cache_ttl: str = setting("CACHE_TTL", "", p.seconds)
    proxy_log_level: str = setting("PROXY_LOG_LEVEL", "info", p.one_of(*LOG_LEVELS))
    # monitoring
    monitoring: bool = setting("MONITORING", "false", p.boolean)
    prometheus_image: str = setting("PROMETHEUS_IMAGE", "prom/prometheus")
    prometheus_version: str = setting("PROMETHEUS_VERSION", "v3.13.1", p.pinned)
    prometheus_publish_port: int | None = setting("PROMETHEUS_PUBLISH_PORT", "", p.port)
    grafana_image: str = setting("GRAFANA_IMAGE", "grafana/grafana")
    grafana_version: str = setting("GRAFANA_VERSION", "12.4.3", p.pinned)
    grafana_publish_port: int | None = setting("GRAFANA_PUBLISH_PORT", "", p.port)
    has_grafana_admin_password: bool = setting("GRAFANA_ADMIN_PASSWORD", "", p.is_set)
    # Kubernetes (stack/kubernetes/)
    kubernetes_namespace: str = setting(
        "KUBERNETES_NAMESPACE", "cached-tei", p.matching(p.DNS_LABEL, "a DNS label")
    )
    kubernetes_tei_replicas: int | None = setting("KUBERNETES_TEI_REPLICAS", "", p.optional_count)
    kubernetes_sparse_tei_replicas: int | None = setting(
        "KUBERNETES_SPARSE_TEI_REPLICAS", "", p.optional_count
    )
    kubernetes_rerank_tei_replicas: int | None = setting(
        "KUBERNETES_RERANK_TEI_REPLICAS", "", p.optional_count
    )
    kubernetes_tei_storage: str = setting("KUBERNETES_TEI_STORAGE", "20Gi", p.quantity)
    kubernetes_storage_class: str = setting(
        "KUBERNETES_STORAGE_CLASS", "", p.matching(r"^([a-z0-9]([-a-z0-9.]*[a-z0-9])?)?$", "a name")
    )
    proxy_image: str = setting("PROXY_IMAGE", "ghcr.io/cached-tei/cached-tei-proxy")
    proxy_version: str = setting("PROXY_VERSION", "0.1.0", p.pinned)
    kubernetes_proxy_workers: int = setting("KUBERNETES_PROXY_WORKERS", "2", p.integer(1))
    kubernetes_proxy_min_replicas: int = setting("KUBERNETES_PROXY_MIN_REPLICAS", "2", p.integer(1))
    kubernetes_proxy_max_replicas: int = setting(
        "KUBERNETES_PROXY_MAX_REPLICAS", "10", p.integer(1)
    )
    kubernetes_qdrant_replicas: int = setting("KUBERNETES_QDRANT_REPLICAS", "3", p.integer(1))
    kubernetes_qdrant_storage: str = setting("KUBERNETES_QDRANT_STORAGE", "50Gi", p.quantity)

    @classmethod
    def from_env(cls, env: dict[str, str]) -> Settings:
        """Read and validate every setting from a parsed .env (`parse_dotenv`)."""
        return cls(**{f.name: f.metadata["env"].read(env) for f in dataclasses.fields(cls)})

    def __post_init__(self) -> None:
        """The rules that involve more than one setting."""
        if self.cpu and self.gpu_ids:
            raise ConfigError("GPU_IDS must be empty with TEI_VARIANT=cpu (use TEI_REPLICAS)")
        if len(set(self.upstreams)) != len(self.upstreams):
            raise ConfigError("TEI_REMOTE_UPSTREAMS lists an upstream more than once")
        if not self.upstreams:
            raise ConfigError(
                "no TEI upstream: set GPU_IDS (GPU variants), TEI_REPLICAS>=1 (cpu) "
                "or TEI_REMOTE_UPSTREAMS"
            )
        self._check_pools()
        if self.external_qdrant and (self.qdrant_publish_port or self.qdrant_grpc_publish_port):
            raise ConfigError(
                "QDRANT_PUBLISH_PORT/QDRANT_GRPC_PUBLISH_PORT need the local "
                "Qdrant: leave them empty with QDRANT_URL"
            )
        if self.kubernetes_proxy_max_replicas < self.kubernetes_proxy_min_replicas:
            raise ConfigError(
                "KUBERNETES_PROXY_MAX_REPLICAS must be >= KUBERNETES_PROXY_MIN_REPLICAS"
            )
        published = [port for port in self.published_ports.values() if port]
        if len(set(published)) != len(published):
            raise ConfigError(f"published host ports collide: {published}")

    def _check_pools(self) -> None:
        """The optional pools: a model needs its GPUs (or CPU replicas); no GPU in two pools."""
        for kind in OPTIONAL_POOLS:
            var = kind.upper()
            model = getattr(self, f"{kind}_model_id")
            gpus = getattr(self, f"{kind}_gpu_ids")
            if not model:
                if gpus or getattr(self, f"kubernetes_{kind}_tei_replicas"):
                    raise ConfigError(
                        f"{var}_GPU_IDS and KUBERNETES_{var}_TEI_REPLICAS need {var}_MODEL_ID: "
                        f"set it, or leave them empty for no {kind} pool"
                    )
            elif self.cpu and gpus:
                raise ConfigError(
                    f"{var}_GPU_IDS must be empty with TEI_VARIANT=cpu (use {var}_TEI_REPLICAS)"
                )
            elif not self.cpu and not gpus:
                raise ConfigError(
                    f"{var}_MODEL_ID needs {var}_GPU_IDS: the GPUs of the {kind} pool, one TEI "
                    f"each (or leave {var}_MODEL_ID empty for no {kind} pool)"
                )
            elif self.cpu and not getattr(self, f"{kind}_tei_replicas"):
                raise ConfigError(
                    f"{var}_MODEL_ID needs {var}_TEI_REPLICAS >= 1 with TEI_VARIANT=cpu "
                    f"(or leave {var}_MODEL_ID empty for no {kind} pool)"
                )
        owners: dict[str, str] = {}
        for pool in self.pools:
            var = "GPU_IDS" if pool.kind == "dense" else f"{pool.kind.upper()}_GPU_IDS"
            for gpu in pool.gpu_ids:
                if gpu in owners:
                    raise ConfigError(
                        f"GPU {gpu} is in both {owners[gpu]} and {var}: each GPU runs one TEI, "
                        "of one pool; give each pool GPUs of its own"
                    )
                owners[gpu] = var

    # ---- derived -------------------------------------------------------------------
    @property
    def pools(self) -> list[Pool]:
        """The dense pool, then each optional pool whose model is set."""
        pools = [
            Pool(
                "dense",
                self.model_id,
                self.model_revision,
                self.local_tei_count,
                self.gpu_ids,
                self.remote_upstreams,
                self.kubernetes_tei_replicas,
            )
        ]
        for kind in OPTIONAL_POOLS:
            model = getattr(self, f"{kind}_model_id")
            if model:
                gpus = getattr(self, f"{kind}_gpu_ids")
                pools.append(
                    Pool(
                        kind,
                        model,
                        getattr(self, f"{kind}_model_revision"),
                        getattr(self, f"{kind}_tei_replicas") if self.cpu else len(gpus),
                        gpus,
                        kubernetes_replicas=getattr(self, f"kubernetes_{kind}_tei_replicas"),
                    )
                )
        return pools

    @property
    def cpu(self) -> bool:
        return self.tei_variant == "cpu"

    @property
    def tei_tag(self) -> str:
        return f"{TEI_VARIANTS[self.tei_variant]}{self.tei_version}"

    @property
    def local_tei_count(self) -> int:
        return self.tei_replicas if self.cpu else len(self.gpu_ids)

    @property
    def upstreams(self) -> list[str]:
        """Every TEI address of the dense pool: local services, then remote hosts."""
        return self.pools[0].upstreams

    @property
    def external_qdrant(self) -> bool:
        return bool(self.qdrant_url)

    @property
    def qdrant_needs_key(self) -> bool:
        """The bundled Qdrant always has a key; an external one when QDRANT_API_KEY is set."""
        return not self.external_qdrant or self.has_qdrant_api_key

    @property
    def published_ports(self) -> dict[str, int | None]:
        """Setting -> host port (None: not published) of every service the stack runs."""
        ports = {
            "PROXY_PORT": self.proxy_port,
            "NGINX_PUBLISH_PORT": self.nginx_publish_port,
            "QDRANT_PUBLISH_PORT": self.qdrant_publish_port,
            "QDRANT_GRPC_PUBLISH_PORT": self.qdrant_grpc_publish_port,
        }
        if self.monitoring:
            ports["PROMETHEUS_PUBLISH_PORT"] = self.prometheus_publish_port
            ports["GRAFANA_PUBLISH_PORT"] = self.grafana_publish_port
        return ports


def load_settings(env_path: Path | str | None = None) -> Settings:
    """Settings from `env_path`, else stack/.env, else stack/.env.example."""
    if env_path is None:
        env_path = STACK_DIR / ".env"
        if not env_path.exists():
            env_path = STACK_DIR / ".env.example"
    return Settings.from_env(parse_dotenv(Path(env_path).read_text(encoding="utf-8")))
