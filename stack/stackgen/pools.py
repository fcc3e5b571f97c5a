"""TEI pools, one per model kind: the dense pool always, the sparse and rerank pools when .env
names their model. Each pool has its own TEI servers and its own nginx upstream and port."""

from __future__ import annotations

from dataclasses import dataclass

from .constants import NGINX_POOL_PORTS, TEI_PORT

# The proxy's setting for each kind's TEI URL (cached_tei.settings.CachedTEISettings).
URL_VARIABLES = {
    "dense": "CACHED_TEI_URL",
    "sparse": "CACHED_TEI_SPARSE_URL",
    "rerank": "CACHED_TEI_RERANK_URL",
}


@dataclass(frozen=True)
class Pool:
    """The TEI servers of one model kind: local ones (one per GPU, or CPU replicas) and, for
    the dense pool only, remote hosts."""

    kind: str  # dense | sparse | rerank
    model_id: str
    model_revision: str
    local_count: int
    gpu_ids: tuple[str, ...] = ()
    remote_upstreams: tuple[str, ...] = ()
    kubernetes_replicas: int | None = None

    @property
    def name(self) -> str:
        """The services' prefix, the StatefulSet and its headless Service: tei, tei-sparse..."""
        return "tei" if self.kind == "dense" else f"tei-{self.kind}"

    @property
    def upstream(self) -> str:
        """The nginx upstream (and its zone)."""
        return self.name.replace("-", "_")

    @property
    def nginx_port(self) -> int:
        return NGINX_POOL_PORTS[self.kind]

    @property
    def url_variable(self) -> str:
        return URL_VARIABLES[self.kind]

    @property
    def services(self) -> list[str]:
        return [f"{self.name}-{i}" for i in range(self.local_count)]

    @property
    def upstreams(self) -> list[str]:
        """Every TEI address the pool's upstream balances over: local services, then remotes."""
        return [f"{name}:{TEI_PORT}" for name in self.services] + list(self.remote_upstreams)

    @property
    def kubernetes_count(self) -> int:
        """TEI pods on Kubernetes: as set, else as many as compose runs (at least one)."""
        return self.kubernetes_replicas or self.local_count or 1
