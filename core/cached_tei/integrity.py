"""Checksums of cache entries: what is read back is what was written.

Each entry keeps the CRC32 of its id and its float32 bytes (a sparse vector: its u32 indices,
then its f32 values) in its payload. The engine checks it
once per read; an entry whose checksum differs is a miss (recomputed and rewritten). Entries
written before checksums were kept have none and are served as they are.
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence

import numpy as np

from .values import SparseVector


def checksums(ids: Sequence[str], vectors: np.ndarray) -> list[int]:
    """The checksum of each row of ``vectors`` under its id: the CRC32 of the id's UTF-8
    bytes, then the row's float32 bytes (an object array holds SparseVectors)."""
    if vectors.dtype == object:
        return [_sparse_crc(i, vector) for i, vector in zip(ids, vectors, strict=True)]
    matrix = np.ascontiguousarray(vectors, dtype=np.float32)
    return [zlib.crc32(row, zlib.crc32(i.encode())) for i, row in zip(ids, matrix, strict=True)]


def intact(ids: Sequence[str], vectors: np.ndarray, stored: Sequence[int | None]) -> list[bool]:
    """For each row, whether it matches its stored checksum (True when none was stored)."""
    if vectors.dtype == object:
        return [
            crc is None or _sparse_crc(i, vector) == crc
            for i, vector, crc in zip(ids, vectors, stored, strict=True)
        ]
    matrix = np.ascontiguousarray(vectors, dtype=np.float32)
    return [
        crc is None or zlib.crc32(row, zlib.crc32(i.encode())) == crc
        for i, row, crc in zip(ids, matrix, stored, strict=True)
    ]


def _sparse_crc(point_id: str, vector: SparseVector) -> int:
    indices = np.asarray(vector.indices, dtype="<u4").tobytes()
    crc = zlib.crc32(indices, zlib.crc32(point_id.encode()))
    return zlib.crc32(np.asarray(vector.values, dtype="<f4").tobytes(), crc)
