"""JSON in and out: orjson when installed (fast, float32 without widening), else the stdlib."""

from __future__ import annotations

from typing import Any

import numpy as np

try:
    import orjson
except ImportError:  # pragma: no cover - orjson is a transitive dependency
    orjson = None  # type: ignore[assignment]

if orjson is not None:
    JSONDecodeError: type[Exception] = orjson.JSONDecodeError
    _NUMPY = orjson.OPT_SERIALIZE_NUMPY

    def loads(data: bytes) -> Any:
        return orjson.loads(data)

    def dumps(value: Any) -> bytes:
        """Serialize; numpy arrays become lists (float32 printed as float32)."""
        return orjson.dumps(value, option=_NUMPY)

else:  # pragma: no cover
    import json

    JSONDecodeError = ValueError

    def loads(data: bytes) -> Any:
        return json.loads(data)

    def _default(value: Any) -> Any:
        if isinstance(value, np.ndarray):
            return value.tolist()
        if isinstance(value, np.generic):
            return value.item()
        raise TypeError(f"{type(value).__name__} is not JSON serializable")

    def dumps(value: Any) -> bytes:
        return json.dumps(
            value, default=_default, separators=(",", ":"), ensure_ascii=False
        ).encode()


def dumps_matrix(vectors: np.ndarray) -> bytes:
    """A float32 matrix as TEI's 2-D JSON list."""
    return dumps(np.ascontiguousarray(vectors))
