"""The settings TEI and the proxy get as environment variables, the same on every target.

Secrets are not here: each target refers to them its own way (compose `${VAR}`, Kubernetes
Secrets).
"""

from __future__ import annotations

from .constants import PROXY_GRACEFUL_TIMEOUT
from .pools import Pool
from .settings import Settings


def tei_environment(s: Settings, pool: Pool) -> dict[str, str]:
    """The options of a TEI of `pool` (TEI reads each as an environment variable)."""
    environment = {"MODEL_ID": pool.model_id}
    if pool.model_revision:
        environment["REVISION"] = pool.model_revision
    environment.update(
        {
            "MAX_CLIENT_BATCH_SIZE": str(s.tei_max_client_batch_size),
            "MAX_BATCH_TOKENS": str(s.tei_max_batch_tokens),
            "MAX_CONCURRENT_REQUESTS": str(s.tei_max_concurrent_requests),
            "PAYLOAD_LIMIT": str(s.tei_payload_limit),
            "AUTO_TRUNCATE": "true" if s.tei_auto_truncate else "false",
        }
    )
    if s.tei_dtype:
        environment["DTYPE"] = s.tei_dtype
    return environment


def pool_urls(s: Settings, nginx_host: str) -> dict[str, str]:
    """The proxy's TEI URL of each pool: its port on nginx (`nginx_host`)."""
    return {pool.url_variable: f"http://{nginx_host}:{pool.nginx_port}" for pool in s.pools}


def proxy_environment(s: Settings) -> dict[str, str]:
    """The proxy's cache and serving options (its addresses and keys come per target)."""
    environment = {}
    if s.qdrant_shards:
        environment["CACHED_TEI_QDRANT_SHARDS"] = str(s.qdrant_shards)
    if s.qdrant_replication_factor:
        environment["CACHED_TEI_QDRANT_REPLICATION_FACTOR"] = str(s.qdrant_replication_factor)
    environment.update(
        {
            "CACHED_TEI_MAX_PAYLOAD_BYTES": str(s.tei_payload_limit),
            "CACHED_TEI_TTL": s.cache_ttl,
            "CACHED_TEI_PROXY_LOG_LEVEL": s.proxy_log_level,
            "CACHED_TEI_PROXY_GRACEFUL_TIMEOUT": str(PROXY_GRACEFUL_TIMEOUT),
        }
    )
    return environment
