"""``cached-tei cache stats|prune|clear``: inspect and clean the cache through its store."""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from ..errors import StoreConfigurationError, StoreDiskFullError, StoreLockedError
from ..settings import CachedTEISettings
from ..stores import CacheStore, CollectionInfo, EmbeddedStore, open_store
from .options import CLIError, counted, settings_from_args

T = TypeVar("T")

# The namespace fields shown by ``cache stats``, after the model.
_OPTIONS = (
    "normalize",
    "truncate",
    "truncation_direction",
    "prompt_name",
    "dimensions",
    "raw_scores",
)


# ---------------------------------------------------------------------------- cache
def _with_store(settings: CachedTEISettings, action: Callable[[CacheStore], Awaitable[T]]) -> T:
    async def run() -> T:
        store = open_store(settings)
        try:
            return await _readable(settings, action(store))
        finally:
            await store.aclose()

    try:
        return asyncio.run(run())
    except StoreLockedError as exc:
        # Maintenance is for the folder's one opener: the fix is to stop the other one.
        raise CLIError(
            f"the embedded cache at {exc.folder} is held by {exc.holder or 'another process'}, "
            f"and this command needs it to itself: stop {exc.holder or 'that process'} first, "
            "then run the command again"
        ) from None


async def _readable(settings: CachedTEISettings, work: Awaitable[T]) -> T:
    """``work``, with a failure to read the store told in one line that names the recovery."""
    try:
        return await work
    except (StoreConfigurationError, StoreDiskFullError, OSError):
        raise  # they say what to do already
    except Exception as exc:  # StoreUnavailable: the store's files could not be read
        problem = " ".join(str(exc).split())[:300] or type(exc).__name__
        raise CLIError(
            f"the cache in {settings.cache_location} cannot be read ({problem}); "
            "cached-tei cache clear --yes deletes it, and the cache fills again"
        ) from exc


def run_cache_stats(args: argparse.Namespace) -> int:
    settings = settings_from_args(args)

    async def stats(store: CacheStore) -> tuple[list[CollectionInfo], str | None]:
        # asked first: once collections() has read the folder, this process holds it
        holder = store.holder() if isinstance(store, EmbeddedStore) else None
        return await store.collections(), holder

    collections, holder = _with_store(settings, stats)
    counts = [c.count for c in collections]
    entries = None if None in counts else sum(c for c in counts if c is not None)
    if args.json:
        from ..jsonio import dumps

        body: dict[str, Any] = {
            "store": settings.cache_location,
            "prefix": settings.collection_prefix,
            "entries": entries,
            "held_by": holder,
            "collections": [
                {
                    "name": c.name,
                    "kind": _kind(c),
                    "namespace": c.namespace,
                    "dimension": c.dimension,
                    "count": c.count,
                    "lost": c.lost,
                }
                for c in collections
            ],
        }
        sys.stdout.write(dumps(body).decode() + "\n")
        return 0
    for c in collections:
        ns = c.namespace or {}
        model = ns.get("model_id", "?") + (f"@{ns['model_sha']}" if ns.get("model_sha") else "")
        options = " ".join(f"{key}={ns[key]}" for key in _OPTIONS if ns.get(key) is not None)
        count = "? entries" if c.count is None else counted(c.count, "entry", "entries")
        size = {"sparse": "", "rerank": "  scores"}.get(_kind(c), f"  {c.dimension} dims")
        print(f"{c.name}  {_kind(c)}  {model}{size}  {options}  {count}")
    total = "? entries" if entries is None else counted(entries, "entry", "entries")
    print(
        f"{counted(len(collections), 'collection', 'collections')}, {total} under prefix "
        f"{settings.collection_prefix!r} in {settings.cache_location}"
    )
    if holder is not None:
        print(
            f"{settings.cache_location} is held by {holder}: entry counts unknown until it closes"
        )
    lost = _lost_note(collections)
    if lost is not None:
        print(lost)
    return 0


def _kind(collection: CollectionInfo) -> str:
    """The kind of model a collection caches: embedding (dense), sparse or rerank."""
    return str((collection.namespace or {}).get("kind", "embedding"))


def _lost_note(collections: list[CollectionInfo]) -> str | None:
    """A line on entries lost by damaged id trackers since their collections were written."""
    lost = sum(c.lost for c in collections)
    if not lost:
        return None
    return (
        f"{lost} entries were lost since they were written (a damaged id tracker): they are "
        "computed again; check the rest with cached-tei cache verify"
    )


def run_cache_prune(args: argparse.Namespace) -> int:
    settings = settings_from_args(args)
    ttl = settings.ttl
    if ttl is None:
        raise CLIError(
            "cache prune removes entries older than the TTL: "
            "pass --ttl SECONDS or set CACHED_TEI_TTL"
        )

    async def prune(store: CacheStore) -> int:
        return await store.prune(int(time.time() - ttl))

    removed = _with_store(settings, prune)
    print(
        f"removed {counted(removed, 'entry', 'entries')} older than {ttl:g} s "
        f"from {settings.cache_location}"
    )
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
            f"in {settings.cache_location}? [y/N] "
        )
        if answer.strip().lower() not in ("y", "yes"):
            print("nothing deleted")
            return 1

    removed = _with_store(settings, lambda store: store.clear())
    print(f"removed {counted(removed, 'entry', 'entries')} from {settings.cache_location}")
    return 0
