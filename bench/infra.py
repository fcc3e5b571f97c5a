"""The benchmarks' clusters, cost model and corpus.

The replicas are ``tests.tei_emulator.EmulatorProcess`` children behind Debian's nginx running
the configuration ``stack/generate.py`` renders for the stack (``tests.support.cluster``, the
same scaffolding the tests use).
"""

from __future__ import annotations

import random
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from tests.support.cluster import EmulatorCluster  # noqa: E402
from tests.tei_emulator import EmulatorConfig  # noqa: E402

# The main clusters: a TEI step costs 20 ms + 1 ms per text (a mid-size GPU).
STEP_MS = 20.0
PER_TEXT_MS = 1.0
# "Fast replicas" (issue 11): 4 ms + 0.25 ms per text, where the proxy's own cost shows.
FAST_STEP_MS = 4.0
FAST_PER_TEXT_MS = 0.25


def make_cluster(
    workdir: Path,
    replicas: int = 4,
    dim: int = 384,
    step_ms: float = STEP_MS,
    per_text_ms: float = PER_TEXT_MS,
) -> EmulatorCluster:
    """``replicas`` emulators of ``dim`` dimensions behind the stack's nginx (not started)."""
    config = EmulatorConfig(dim=dim, step_ms=step_ms, per_text_ms=per_text_ms)
    return EmulatorCluster(workdir / f"nginx-{replicas}x{dim}-{step_ms:g}ms", replicas, config)


def theoretical_capacity(
    replicas: int, batch_tokens: int = 16384, tokens_per_text: int = 20
) -> float:
    """Texts/s the replicas' cost model allows at best: full steps (max_batch_tokens)."""
    texts = batch_tokens // tokens_per_text
    return replicas * texts / ((STEP_MS + PER_TEXT_MS * texts) / 1000.0)


def step_capacity(replicas: int, texts_per_step: int) -> float:
    """Texts/s when each step carries ``texts_per_step`` texts (in flight x batch / replicas)."""
    return replicas * texts_per_step / ((STEP_MS + PER_TEXT_MS * texts_per_step) / 1000.0)


# ----------------------------------------------------------------------------- the corpus
_SYLLABLES = [
    "ka",
    "lo",
    "mi",
    "ren",
    "tas",
    "vor",
    "ul",
    "pe",
    "ri",
    "son",
    "dra",
    "bel",
    "quo",
    "nix",
    "ta",
    "el",
    "fi",
    "gor",
    "hu",
    "jin",
    "lak",
    "mor",
    "ne",
    "os",
    "pra",
    "sul",
    "tri",
    "ve",
]


def _vocabulary(size: int = 5000, seed: int = 7) -> list[str]:
    rng = random.Random(seed)
    words: set[str] = set()
    while len(words) < size:
        words.add("".join(rng.choice(_SYLLABLES) for _ in range(rng.randint(1, 4))))
    return sorted(words)


def make_texts(n: int, words: int = 20, seed: int = 0, prefix: str = "") -> list[str]:
    """n unique ~``words``-word texts, the same for the same arguments."""
    vocab = _vocabulary()
    rng = random.Random(seed)
    out: list[str] = []
    seen: set[str] = set()
    while len(out) < n:
        count = rng.randint(words - 3, words + 3)
        text = prefix + " ".join(rng.choice(vocab) for _ in range(count))
        if text not in seen:
            seen.add(text)
            out.append(text)
    return out
