"""TEI's request bodies, read the way TEI's serde reads them, without per-request pydantic.

A body that TEI could not deserialize raises :class:`BadRequest` with TEI's plain-text status
and message; a body that parses but holds token ids (``[[101, 2023]]``) comes back with
``texts=None``: the proxy cannot key token ids, so it forwards such requests untouched.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any

from ..keys import EmbedOptions

_U32 = 2**32 - 1
_DESERIALIZE = "Failed to deserialize the JSON body into the target type: "


class BadRequest(Exception):
    """A request TEI rejects before reading it: plain-text body, not TEI-shaped JSON."""

    def __init__(self, status: int, text: str) -> None:
        super().__init__(text)
        self.status = status
        self.text = text


def deserialize_error(detail: str) -> BadRequest:
    return BadRequest(422, _DESERIALIZE + detail)


@dataclass(frozen=True, slots=True)
class EmbedCall:
    """What an embed request asks for: its texts (None: token ids), and how to embed them."""

    texts: list[str] | None
    is_batch: bool
    options: EmbedOptions


@dataclass(frozen=True, slots=True)
class OpenAICall:
    """An OpenAI-shaped embed request; TEI always normalises and uses its default truncation."""

    texts: list[str] | None
    is_batch: bool
    options: EmbedOptions
    base64: bool


def _is_ids(value: Any) -> bool:
    return isinstance(value, list) and all(
        type(item) is int and 0 <= item <= _U32 for item in value
    )


def _inputs(body: dict[str, Any], key: str) -> tuple[list[str] | None, bool]:
    """(texts or None for token ids, whether the input was a list), as TEI's ``Input`` enum."""
    if key not in body:
        raise deserialize_error(f"missing field `{key}`")
    value = body[key]
    if type(value) is str:
        return [value], False
    if isinstance(value, list):
        if all(type(item) is str for item in value):
            return value, True
        if _is_ids(value) and value:
            return None, False
        if all(type(item) is str or _is_ids(item) for item in value):
            return None, True
    raise deserialize_error(f"{key}: data did not match any variant of untagged enum Input")


def _bool(body: dict[str, Any], key: str, default: bool | None) -> bool | None:
    value = body.get(key)
    if value is None:
        return default
    if type(value) is not bool:
        raise deserialize_error(f"{key}: invalid type: expected a boolean")
    return value


def _str(body: dict[str, Any], key: str) -> str | None:
    value = body.get(key)
    if value is not None and type(value) is not str:
        raise deserialize_error(f"{key}: invalid type: expected a string")
    return value


def _uint(body: dict[str, Any], key: str) -> int | None:
    value = body.get(key)
    if value is None:
        return None
    if type(value) is not int or value < 0:
        raise deserialize_error(f"{key}: invalid value: expected usize")
    return value


def _direction(body: dict[str, Any]) -> str:
    value = body.get("truncation_direction")
    if value is None:
        return "Right"
    if type(value) is str and value.lower() in ("right", "left"):
        return value.capitalize()
    raise deserialize_error(
        f"truncation_direction: unknown variant `{value}`, expected `Left` or `Right`"
    )


def _struct(body: Any) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise deserialize_error("invalid type: expected struct")
    return body


def parse_embed(body: Any, tenant: str | None = None) -> EmbedCall:
    """``POST /embed`` and ``POST /``: inputs, normalize, truncate, truncation_direction,
    prompt_name, dimensions; other fields are ignored, as TEI does. ``tenant`` is the
    caller's cache namespace (see :mod:`cached_tei.proxy.auth`)."""
    body = _struct(body)
    texts, is_batch = _inputs(body, "inputs")
    options = _embed_options(
        bool(_bool(body, "normalize", True)),
        _bool(body, "truncate", None),
        _direction(body),
        _str(body, "prompt_name"),
        _uint(body, "dimensions"),
        tenant,
    )
    return EmbedCall(texts, is_batch, options)


@functools.lru_cache(maxsize=256)
def _embed_options(
    normalize: bool,
    truncate: bool | None,
    direction: str,
    prompt_name: str | None,
    dimensions: int | None,
    tenant: str | None,
) -> EmbedOptions:
    """One ``EmbedOptions`` per combination of fields: a frozen dataclass costs more to build
    than the rest of a cache hit's parsing, and most requests repeat a few combinations."""
    return EmbedOptions(
        normalize=normalize,
        truncate=truncate,
        truncation_direction=direction,  # type: ignore[arg-type]
        prompt_name=prompt_name,
        dimensions=dimensions,
        tenant=tenant,
    )


def parse_openai(body: Any, tenant: str | None = None) -> OpenAICall:
    """``POST /v1/embeddings``: input, model (ignored), encoding_format, dimensions, user."""
    body = _struct(body)
    texts, is_batch = _inputs(body, "input")
    encoding = body.get("encoding_format") or "float"
    if encoding not in ("float", "base64"):
        raise deserialize_error(
            f"encoding_format: unknown variant `{encoding}`, expected `float` or `base64`"
        )
    dimensions = _uint(body, "dimensions")
    _str(body, "model")
    _str(body, "user")
    options = EmbedOptions(dimensions=dimensions, tenant=tenant)
    return OpenAICall(texts, is_batch, options, encoding == "base64")


@dataclass(frozen=True, slots=True)
class SparseCall:
    """An ``/embed_sparse`` request: its texts (None: token ids) and how to embed them."""

    texts: list[str] | None
    is_batch: bool
    options: EmbedOptions


@dataclass(frozen=True, slots=True)
class RerankCall:
    """A ``/rerank`` request: the texts to rank against the query (in ``options``)."""

    texts: list[str]
    options: EmbedOptions
    return_text: bool


def parse_sparse(body: Any, tenant: str | None = None) -> SparseCall:
    """``POST /embed_sparse``: inputs, truncate, truncation_direction, prompt_name."""
    body = _struct(body)
    texts, is_batch = _inputs(body, "inputs")
    options = EmbedOptions(
        kind="sparse",
        truncate=_bool(body, "truncate", None),
        truncation_direction=_direction(body),  # type: ignore[arg-type]
        prompt_name=_str(body, "prompt_name"),
        tenant=tenant,
    )
    return SparseCall(texts, is_batch, options)


def parse_rerank(body: Any, tenant: str | None = None) -> RerankCall:
    """``POST /rerank``: query, texts, truncate, truncation_direction, raw_scores,
    return_text."""
    body = _struct(body)
    query = _required(body, "query", "a string")
    texts = _required(body, "texts", "a sequence")
    if type(query) is not str:
        raise deserialize_error("query: invalid type: expected a string")
    if not isinstance(texts, list) or not all(type(text) is str for text in texts):
        raise deserialize_error("texts: invalid type: expected a sequence of strings")
    options = EmbedOptions(
        kind="rerank",
        truncate=_bool(body, "truncate", None),
        truncation_direction=_direction(body),  # type: ignore[arg-type]
        raw_scores=bool(_bool(body, "raw_scores", False)),
        query=query,
        tenant=tenant,
    )
    return RerankCall(texts, options, bool(_bool(body, "return_text", False)))


def _required(body: dict[str, Any], key: str, expected: str) -> Any:
    if key not in body:
        raise deserialize_error(f"missing field `{key}`")
    value = body[key]
    if value is None:
        raise deserialize_error(f"{key}: invalid type: null, expected {expected}")
    return value
