"""Model side of the TEI emulator: configuration, tokenisation, prompts, vectors.

Everything here is pure and deterministic; `expected_vector`, `expected_sparse` and
`expected_score` are the oracles tests use.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import numpy as np

TEI_VERSION = "1.9.3"
# The kinds of model an emulator serves, as /info's model_type tells them apart.
MODEL_TYPES = {
    "embedding": {"embedding": {"pooling": "mean"}},
    "splade": {"embedding": {"pooling": "splade"}},
    "reranker": {"reranker": {"id2label": {"0": "LABEL_0"}, "label2id": {"LABEL_0": 0}}},
}
# A sparse entry is kept where the raw vector exceeds this (about 16% of the dimensions).
SPARSE_THRESHOLD = 1.0
MAX_CHAR_MULTIPLIER = 250  # TEI's character pre-check: 250 x max_input_length


@dataclass(frozen=True)
class EmulatorConfig:
    model_id: str = "emulator/all-MiniLM-L6-v2"
    model_sha: str | None = None  # reported as /info model_sha (the --revision)
    dim: int = 384
    max_client_batch_size: int = 32
    max_input_length: int = 512  # tokens (whitespace-split words)
    max_batch_tokens: int = 16384
    max_concurrent_requests: int = 512  # permits, one per input item
    auto_truncate: bool = True  # TEI 1.9 default
    payload_limit: int = 2_000_000  # bytes
    step_ms: float = 20.0  # one step = step_ms + per_text_ms * texts_in_step
    per_text_ms: float = 1.0
    api_key: str | None = None
    prompts: dict[str, str] = field(default_factory=dict)
    default_prompt_name: str | None = None
    model_type: str = "embedding"  # "embedding", "splade" or "reranker" (MODEL_TYPES)

    def __hash__(self) -> int:  # prompts is a dict: hash by the JSON form
        return hash(self.to_json())

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> EmulatorConfig:
        data = json.loads(text) if text else {}
        return cls(**data)


class TEIError(Exception):
    """A TEI-shaped error: {"error": message, "error_type": error_type} with status."""

    STATUS = {
        "Validation": 422,
        "Tokenizer": 422,
        "Empty": 400,
        "Overloaded": 429,
        "Backend": 424,
        "Unhealthy": 503,
    }

    def __init__(self, error_type: str, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.error_type = error_type
        self.message = message
        self.status = status if status is not None else self.STATUS[error_type]


def _rust_debug_keys(keys: Any) -> str:
    return "[" + ", ".join(json.dumps(k) for k in keys) + "]"


def resolve_prompt(config: EmulatorConfig, prompt_name: str | None) -> str | None:
    """The prefix TEI prepends, or raise TEI's validation error for an unknown name."""
    name = prompt_name if prompt_name is not None else config.default_prompt_name
    if name is None:
        return None
    if not config.prompts:
        raise TEIError(
            "Validation",
            f"Input validation error: `default-prompt-name` is set to `{name}` but no prompts "
            "were found in the Sentence Transformers configuration",
        )
    if name not in config.prompts:
        raise TEIError(
            "Validation",
            f"Input validation error: `default-prompt-name` is set to `{name}` "
            "but it was not found in the Sentence Transformers prompts. "
            f"Available prompts: {_rust_debug_keys(config.prompts.keys())}",
        )
    return config.prompts[name]


def normalize_direction(value: Any) -> str:
    if value in ("Right", "right"):
        return "Right"
    if value in ("Left", "left"):
        return "Left"
    raise ValueError(f"unknown variant `{value}`, expected `Left` or `Right`")


def prepare_text(
    config: EmulatorConfig,
    text: str,
    truncate: bool | None = None,
    truncation_direction: str = "Right",
    prompt_name: str | None = None,
) -> tuple[str, int]:
    """(final text the model sees, its token count) or TEIError, in TEI's order of checks."""
    if text == "":
        raise TEIError("Empty", "Input validation error: `inputs` cannot be empty")
    effective = config.auto_truncate if truncate is None else bool(truncate)
    direction = normalize_direction(truncation_direction)
    prefix = resolve_prompt(config, prompt_name)
    limit = config.max_input_length * MAX_CHAR_MULTIPLIER
    n_chars = len(text)
    if n_chars > limit:
        if not effective:
            raise TEIError(
                "Validation",
                f"Input validation error: `inputs` must have less than {limit} characters. "
                f"Given: {n_chars}",
            )
        text = text[:limit]
    if prefix:
        text = prefix + text
    words = text.split()
    n = len(words)
    maxlen = config.max_input_length
    if n > maxlen:
        if not effective:
            raise TEIError(
                "Validation",
                f"Input validation error: `inputs` must have less than {maxlen} tokens. Given: {n}",
            )
        kept = words[:maxlen] if direction == "Right" else words[n - maxlen :]
        return " ".join(kept), maxlen
    return text, n


def check_dimensions(config: EmulatorConfig, dimensions: int | None) -> None:
    if dimensions is None:
        return
    if dimensions < 1 or dimensions > config.dim:
        raise TEIError(
            "Validation",
            f"Input validation error: `dimensions` must be between 1 and {config.dim}. "
            f"Given: {dimensions}",
        )


def raw_vector(model_id: str, model_sha: str | None, dim: int, final_text: str) -> np.ndarray:
    """Unnormalised full-dimension float32 vector for the text the model sees."""
    h = hashlib.sha256()
    h.update(model_id.encode("utf-8"))
    h.update(b"\x00")
    h.update((model_sha or "").encode("utf-8"))
    h.update(b"\x00")
    h.update(final_text.encode("utf-8", "surrogatepass"))
    seed = int.from_bytes(h.digest()[:8], "little")
    return np.random.default_rng(seed).standard_normal(dim, dtype=np.float32)


def finish_vector(raw: np.ndarray, normalize: bool, dimensions: int | None) -> np.ndarray:
    v = raw[:dimensions] if dimensions is not None else raw
    if normalize:
        norm = np.linalg.norm(v)  # float32 for a float32 vector
        if norm > 0:
            v = (v / norm).astype(np.float32, copy=False)
    return v


def expected_vector(
    config: EmulatorConfig,
    text: str,
    *,
    normalize: bool = True,
    truncate: bool | None = None,
    truncation_direction: str = "Right",
    prompt_name: str | None = None,
    dimensions: int | None = None,
) -> np.ndarray:
    """Exactly the float32 vector the emulator returns for this input (raises ValueError where
    the emulator would answer with an error)."""
    try:
        final, _ = prepare_text(config, text, truncate, truncation_direction, prompt_name)
        check_dimensions(config, dimensions)
    except TEIError as exc:
        raise ValueError(exc.message) from exc
    return finish_vector(
        raw_vector(config.model_id, config.model_sha, config.dim, final), normalize, dimensions
    )


@dataclass(frozen=True)
class Fault:
    """One injected fault, consumed by the next `count` embed-type requests."""

    kind: Literal["status", "drop", "delay"]
    status: int | None = None
    seconds: float = 0.0
    count: int = 1

    def __post_init__(self) -> None:
        if self.kind not in ("status", "drop", "delay"):
            raise ValueError(f"unknown fault kind {self.kind!r}")
        if self.kind == "status" and self.status is None:
            raise ValueError("a status fault needs status")
        if self.count < 1:
            raise ValueError("count must be >= 1")


@dataclass
class RecordedRequest:
    route: str
    texts: list[str]
    status: int  # 0: connection dropped by a fault
    normalize: bool | None = None
    truncate: bool | None = None
    truncation_direction: str | None = None
    prompt_name: str | None = None
    dimensions: int | None = None
    encoding_format: str | None = None
    error_type: str | None = None
    fault: str | None = None  # "status" | "drop" | "delay" when a fault was applied
    time: float = 0.0  # time.time() when the request arrived
    duration: float = 0.0  # seconds until the answer
    traceparent: str | None = None  # the W3C trace context header, as received


def sparse_of(raw: np.ndarray) -> tuple[list[int], np.ndarray]:
    """The sparse vector of a raw vector: ascending indices (as TEI's sparsify yields them)
    of the entries above the threshold, and their float32 values."""
    indices = np.nonzero(raw > SPARSE_THRESHOLD)[0]
    return indices.tolist(), raw[indices]


def expected_sparse(
    config: EmulatorConfig,
    text: str,
    *,
    truncate: bool | None = None,
    truncation_direction: str = "Right",
    prompt_name: str | None = None,
) -> tuple[list[int], np.ndarray]:
    """Exactly the (indices, float32 values) the emulator's /embed_sparse returns for a text."""
    try:
        final, _ = prepare_text(config, text, truncate, truncation_direction, prompt_name)
    except TEIError as exc:
        raise ValueError(exc.message) from exc
    return sparse_of(raw_vector(config.model_id, config.model_sha, config.dim, final))


def pair_text(query: str, text: str) -> str:
    """What the emulated cross-encoder reads for a (query, text) pair."""
    return f"{query} [SEP] {text}"


def score_of(raw: np.ndarray, raw_scores: bool) -> np.float32:
    """The pair's logit (float32), or TEI's sigmoid of it computed in float32."""
    logit = raw[0] * np.float32(3)
    if raw_scores:
        return np.float32(logit)
    one = np.float32(1)
    return np.float32(one / (one + np.exp(-logit)))


def expected_score(
    config: EmulatorConfig,
    query: str,
    text: str,
    *,
    raw_scores: bool = False,
    truncate: bool | None = None,
    truncation_direction: str = "Right",
) -> np.float32:
    """Exactly the float32 score the emulator's /rerank gives a (query, text) pair."""
    try:
        final, _ = prepare_text(config, pair_text(query, text), truncate, truncation_direction)
    except TEIError as exc:
        raise ValueError(exc.message) from exc
    return score_of(raw_vector(config.model_id, config.model_sha, config.dim, final), raw_scores)
