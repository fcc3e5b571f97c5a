"""JSON in and out with orjson: fast, and float32 printed as float32 (no widening)."""

from __future__ import annotations

from typing import Any

import numpy as np
import orjson

JSONDecodeError = orjson.JSONDecodeError
loads = orjson.loads


def dumps(value: Any) -> bytes:
    """Serialize; numpy arrays become lists."""
    return orjson.dumps(value, option=orjson.OPT_SERIALIZE_NUMPY)


def dumps_matrix(vectors: np.ndarray) -> bytes:
    """A float32 matrix as TEI's 2-D JSON list."""
    return dumps(np.ascontiguousarray(vectors))
