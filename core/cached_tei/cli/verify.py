"""``cached-tei cache verify``: re-embed a sample of cached entries through TEI and compare.

What can be checked depends on what the store kept. Every sampled entry is checked for
corruption that shows without its text: the right size, finite values, and unit length when
the namespace normalizes. An entry stored with its text (``store_text=True``) is also checked
against its key (the id is derived from the text) and re-embedded through TEI: a vector that
differs from TEI's today is drift (the model or its numerics changed behind the same name).
A small corruption of an entry without text cannot be told apart from a sound one here.

Exit status: 0 when every checked entry holds, 3 when some drifted, 4 when some are corrupt
(4 wins), 1 on an error.
"""

from __future__ import annotations

import argparse
import asyncio
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..engine import Engine
from ..keys import EmbedOptions, point_id
from ..settings import CachedTEISettings
from ..stores import EmbeddedStore
from ..stores.base import TEXT
from .options import CLIError, settings_from_args

DRIFTED = 3
CORRUPT = 4
# Relative difference from TEI's vector still counted as the same (GPU batching jitter).
_TOLERANCE = 1e-4
# Entries named per collection, at most.
_EXAMPLES = 5


@dataclass
class Verdict:
    """What the sample of one collection showed."""

    name: str
    model: str
    sampled: int = 0
    matched: int = 0
    drifted: int = 0
    corrupt: int = 0
    without_text: int = 0
    skipped: str | None = None
    examples: list[str] = field(default_factory=list)

    def line(self) -> str:
        if self.skipped:
            return f"{self.name}  {self.model}: not compared, {self.skipped}"
        text = (
            f"{self.name}  {self.model}: {self.sampled} sampled, {self.matched} match TEI, "
            f"{self.drifted} drifted, {self.corrupt} corrupt"
        )
        if self.without_text:
            text += (
                f", {self.without_text} without text (checked for corruption only; "
                "store_text=True keeps texts so that entries can be re-embedded)"
            )
        return text


def run_cache_verify(args: argparse.Namespace) -> int:
    settings = settings_from_args(args)
    if settings.qdrant_url is not None:
        raise CLIError(
            "cache verify reads an embedded store (CACHED_TEI_QDRANT_PATH); "
            "unset CACHED_TEI_QDRANT_URL or --qdrant-url"
        )
    if args.sample < 1:
        raise CLIError("--sample must be at least 1")
    verdicts = asyncio.run(_verify(settings, args.sample))
    for verdict in verdicts:
        print(verdict.line())
        for example in verdict.examples:
            print(f"  {example}")
    if any(v.corrupt for v in verdicts):
        return CORRUPT
    return DRIFTED if any(v.drifted for v in verdicts) else 0


async def _verify(settings: CachedTEISettings, size: int) -> list[Verdict]:
    engine = Engine(settings.model_copy(update={"lru_bytes": 0}))
    try:
        info = await engine.info()
        store = engine.store
        assert isinstance(store, EmbeddedStore)
        verdicts = []
        for collection in await store.collections():
            namespace = collection.namespace or {}
            model = f"{namespace.get('model_id')}@{namespace.get('model_sha')}"
            verdict = Verdict(collection.name, model)
            if (namespace.get("model_id"), namespace.get("model_sha")) != (
                info.model_id,
                info.model_sha,
            ):
                verdict.skipped = (
                    f"TEI at {settings.tei_url} serves {info.model_id}@{info.model_sha}"
                )
            else:
                entries = await store.sample(collection.name, size)
                await _check(engine, verdict, namespace, collection.dimension, entries)
            verdicts.append(verdict)
        return verdicts
    finally:
        await engine.aclose()


async def _check(
    engine: Engine,
    verdict: Verdict,
    namespace: dict[str, Any],
    dimension: int,
    entries: list[tuple[str, np.ndarray, dict[str, Any]]],
) -> None:
    verdict.sampled = len(entries)
    with_text: list[tuple[str, np.ndarray, str]] = []
    for key, vector, payload in entries:
        text = payload.get(TEXT)
        problem = _damage(vector, dimension, bool(namespace.get("normalize")))
        if problem is None and isinstance(text, str) and point_id(text) != key:
            problem = "its id is not its text's key"
        if problem is not None:
            verdict.corrupt += 1
            _example(verdict, f"corrupt {key}: {problem}")
        elif isinstance(text, str):
            with_text.append((key, vector, text))
        else:
            verdict.without_text += 1
    if not with_text:
        return
    options = EmbedOptions(
        normalize=bool(namespace.get("normalize")),
        truncate=namespace.get("truncate"),
        truncation_direction=namespace.get("truncation_direction", "Right"),
        prompt_name=namespace.get("prompt_name"),
        dimensions=namespace.get("dimensions"),
        tenant=namespace.get("tenant"),
    )
    fresh = await engine.embed(
        [text for _, _, text in with_text], options, read_cache=False, write_cache=False
    )
    for (key, stored, _), computed in zip(with_text, fresh.vectors, strict=True):
        difference = float(np.max(np.abs(stored - computed)))
        if difference <= _TOLERANCE * max(1.0, float(np.max(np.abs(computed)))):
            verdict.matched += 1
        else:
            verdict.drifted += 1
            _example(verdict, f"drifted {key}: differs from TEI's by up to {difference:.3g}")


def _damage(vector: np.ndarray, dimension: int, normalized: bool) -> str | None:
    """What is visibly wrong with a stored vector, without its text; None if nothing."""
    if vector.shape != (dimension,):
        return f"{vector.shape[0]} values, not {dimension}"
    if not np.all(np.isfinite(vector)):
        return "values that are not finite"
    if normalized and abs(float(np.linalg.norm(vector)) - 1.0) > 1e-3:
        return f"length {float(np.linalg.norm(vector)):.4g}, not 1 (the namespace normalizes)"
    return None


def _example(verdict: Verdict, text: str) -> None:
    if len(verdict.examples) < _EXAMPLES:
        verdict.examples.append(text)
