"""The runtime on its own: engines shared by faces that agree, counted, closed by the last
face, forgotten after fork, all closed at exit. Engines here never reach the network."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from cached_tei import CachedTEISettings
from cached_tei.runtime import Runtime


@pytest.fixture
def runtime() -> Iterator[Runtime]:
    made = Runtime()
    yield made
    made.shutdown()


@pytest.fixture
def settings(qdrant_path: Path) -> CachedTEISettings:
    return CachedTEISettings(qdrant_path=qdrant_path)


def test_faces_that_differ_only_per_call_or_per_vector_share_an_engine(
    runtime: Runtime, settings: CachedTEISettings
) -> None:
    loop, engine = runtime.acquire(settings)
    other = settings.model_copy(update={"dimensions": 64, "write_cache": False})
    assert runtime.acquire(other) == (loop, engine)


def test_faces_that_differ_per_engine_get_their_own(
    runtime: Runtime, settings: CachedTEISettings
) -> None:
    loop, engine = runtime.acquire(settings)
    other_loop, other = runtime.acquire(settings.model_copy(update={"lru_bytes": 0}))
    assert other is not engine and other_loop is loop


def test_the_last_face_closes_the_engine(runtime: Runtime, settings: CachedTEISettings) -> None:
    loop, engine = runtime.acquire(settings)
    runtime.acquire(settings)
    runtime.release(loop, engine)
    assert runtime.acquire(settings)[1] is engine  # one face still used it
    runtime.release(loop, engine)
    runtime.release(loop, engine)
    assert runtime.acquire(settings)[1] is not engine


def test_after_fork_the_child_starts_afresh_and_never_touches_the_parents(
    runtime: Runtime, settings: CachedTEISettings
) -> None:
    loop, engine = runtime.acquire(settings)
    runtime.forget_after_fork()
    new_loop, new_engine = runtime.acquire(settings)
    assert new_loop is not loop and new_engine is not engine
    assert loop.running  # the "parent's" loop is left alone
    loop.stop()


def test_shutdown_closes_every_engine_and_stops_the_loop(
    runtime: Runtime, settings: CachedTEISettings
) -> None:
    loop, engine = runtime.acquire(settings)
    runtime.shutdown()
    assert not loop.running
    assert runtime.acquire(settings)[1] is not engine
