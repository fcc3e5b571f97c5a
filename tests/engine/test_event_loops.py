"""An Engine belongs to the event loop it first runs on; from another it says what to do."""

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np
import pytest

from cached_tei import CachedTEISettings, EmbedOptions, Engine, EventLoopError
from tests.conftest import sent_texts
from tests.tei_emulator import EmulatorConfig, EmulatorServer, expected_vector


def test_an_engine_used_from_a_second_event_loop_names_the_fix(
    tei: EmulatorServer, tei_config: EmulatorConfig, qdrant_path: Path
) -> None:
    # Written through: a write-behind task left pending would keep the first asyncio.run
    # from returning (asyncio.wait_for swallows its cancellation on Python 3.11).
    settings = CachedTEISettings(tei_url=tei.url, qdrant_path=qdrant_path, write_through=True)
    engine = Engine(settings)
    first = asyncio.run(engine.embed(["first loop"], EmbedOptions()))
    assert np.array_equal(first.vectors[0], expected_vector(tei_config, "first loop"))

    with pytest.raises(EventLoopError, match="CachedEmbedder") as raised:
        asyncio.run(engine.embed(["second loop"], EmbedOptions()))
    assert "Event loop is closed" not in str(raised.value)
    assert isinstance(raised.value, RuntimeError)
    assert sent_texts(tei) == ["first loop"]
