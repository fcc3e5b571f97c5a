"""``cached-tei cache stats|prune|clear``: inspect and clean the cache."""

from __future__ import annotations

import argparse
import asyncio
import sys
from typing import Any

from ..engine import Engine
from ..settings import CachedTEISettings
from .options import CLIError, settings_from_args


# ---------------------------------------------------------------------------- cache
def _store_name(settings: CachedTEISettings) -> str:
    from ..proxy.redact import redact_url

    return redact_url(settings.qdrant_url) if settings.qdrant_url else str(settings.qdrant_path)


async def _with_engine(settings: CachedTEISettings, action: Any) -> Any:
    engine = Engine(settings)
    try:
        return await action(engine)
    finally:
        await engine.aclose()


def run_cache_stats(args: argparse.Namespace) -> int:
    settings = settings_from_args(args)

    async def stats(engine: Engine) -> Any:
        return await engine.store.collections()

    collections = asyncio.run(_with_engine(settings, stats))
    entries = sum(c.count for c in collections)
    if args.json:
        from ..proxy.jsonio import dumps

        body = {
            "store": _store_name(settings),
            "prefix": settings.collection_prefix,
            "entries": entries,
            "collections": [
                {
                    "name": c.name,
                    "namespace": c.namespace,
                    "dimension": c.dimension,
                    "count": c.count,
                }
                for c in collections
            ],
        }
        sys.stdout.write(dumps(body).decode() + "\n")
        return 0
    for c in collections:
        ns = c.namespace or {}
        model = ns.get("model_id", "?") + (f"@{ns['model_sha']}" if ns.get("model_sha") else "")
        options = " ".join(
            f"{key}={ns[key]}"
            for key in (
                "normalize",
                "truncate",
                "truncation_direction",
                "prompt_name",
                "dimensions",
            )
            if ns.get(key) is not None
        )
        print(f"{c.name}  {model}  {c.dimension} dims  {options}  {c.count} entries")
    print(
        f"{len(collections)} collections, {entries} entries under prefix "
        f"{settings.collection_prefix!r} in {_store_name(settings)}"
    )
    return 0


def run_cache_prune(args: argparse.Namespace) -> int:
    settings = settings_from_args(args)
    if settings.ttl is None:
        raise CLIError(
            "cache prune removes entries older than the TTL: "
            "pass --ttl SECONDS or set CACHED_TEI_TTL"
        )

    async def prune(engine: Engine) -> int:
        return await engine.prune()

    removed = asyncio.run(_with_engine(settings, prune))
    print(f"removed {removed} entries older than {settings.ttl:g} s from {_store_name(settings)}")
    return 0


def run_cache_clear(args: argparse.Namespace) -> int:
    settings = settings_from_args(args)
    if not args.yes:
        if not sys.stdin.isatty():
            raise CLIError(
                "cache clear deletes every cached vector under prefix "
                f"{settings.collection_prefix!r}; pass --yes to confirm"
            )
        answer = input(
            f"delete every cached vector under prefix {settings.collection_prefix!r} "
            f"in {_store_name(settings)}? [y/N] "
        )
        if answer.strip().lower() not in ("y", "yes"):
            print("nothing deleted")
            return 1

    async def clear(engine: Engine) -> int:
        return await engine.store.clear()

    removed = asyncio.run(_with_engine(settings, clear))
    print(f"removed {removed} entries from {_store_name(settings)}")
    return 0
