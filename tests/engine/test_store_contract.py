"""The store contract: a store raises StoreConfigurationError (permanent) or StoreUnavailable
(transient), nothing else; its rows are raw."""

from __future__ import annotations

import numpy as np
import pytest

from cached_tei import StoreConfigurationError, StoreUnavailable
from cached_tei.keys import Namespace
from cached_tei.settings import CachedTEISettings
from cached_tei.stores.base import Rows, float32_matrix, store_contract
from cached_tei.stores.server import QdrantServerStore
from tests.faults.fake_qdrant import FakeQdrant

NAMESPACE = Namespace("org/model", None, True, False, "Right", None, None)


@store_contract
class Failing:
    def __init__(self, error: Exception) -> None:
        self.error = error

    async def lookup(self) -> None:
        raise self.error

    async def _private(self) -> None:
        raise self.error


async def test_anything_a_store_client_raises_becomes_store_unavailable() -> None:
    cause = ConnectionResetError("peer went away")
    with pytest.raises(StoreUnavailable, match="in lookup: ConnectionResetError") as raised:
        await Failing(cause).lookup()
    assert raised.value.__cause__ is cause


async def test_configuration_errors_pass_as_they_are() -> None:
    error = StoreConfigurationError("a collection holds another namespace")
    with pytest.raises(StoreConfigurationError) as raised:
        await Failing(error).lookup()
    assert raised.value is error


async def test_private_methods_are_left_alone() -> None:
    with pytest.raises(KeyError):
        await Failing(KeyError("x"))._private()


async def test_a_failing_qdrant_server_is_unavailable_not_a_crash() -> None:
    with FakeQdrant() as qdrant:
        store = QdrantServerStore(CachedTEISettings(qdrant_url=qdrant.url))
        ids = ["00000000-0000-0000-0000-000000000001"]
        try:
            await store.upsert(NAMESPACE, ids, np.ones((1, 4), np.float32))
            qdrant.mode = "down"
            with pytest.raises(StoreUnavailable, match="answered 500 to a lookup"):
                await store.lookup(NAMESPACE, ids)
            with pytest.raises(StoreUnavailable, match="in upsert"):
                await store.upsert(NAMESPACE, ids, np.ones((1, 4), np.float32))
        finally:
            await store.aclose()


def test_rows_join_chunks_in_order_and_skip_empty_ones() -> None:
    first = Rows(["a"], np.ones((1, 2), np.float32), [1], [None])
    second = Rows(["b", "c"], np.zeros((2, 2), np.float32), [2, 3], [7, 8])
    joined = Rows.join([first, Rows.empty(), second])
    assert (joined.ids, joined.created, joined.checksums) == (
        ["a", "b", "c"],
        [1, 2, 3],
        [None, 7, 8],
    )
    assert joined.vectors.tolist() == [[1, 1], [0, 0], [0, 0]]
    assert Rows.join([Rows.empty()]).ids == []


def test_rows_join_keeps_the_lists_only_when_every_chunk_has_them() -> None:
    first = Rows(["a"], np.ones((1, 2), np.float32), [1], [None], [[1.0, 1.0]])
    second = Rows(["b"], np.zeros((1, 2), np.float32), [2], [7], [[0.0, 0.0]])
    assert Rows.join([first, second]).lists == [[1.0, 1.0], [0.0, 0.0]]
    without = Rows(["c"], np.zeros((1, 2), np.float32), [3], [8])
    assert Rows.join([first, without]).lists is None


def test_float32_matrix_packs_lists_exactly() -> None:
    vectors = np.random.default_rng(3).standard_normal((5, 7)).astype(np.float32)
    vectors[0, 0] = np.float32(1e-45)  # the smallest subnormal survives too
    matrix = float32_matrix(vectors.tolist(), 7)
    assert matrix.dtype == np.float32 and matrix.tobytes() == vectors.tobytes()
