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
    engine = Engine(CachedTEISettings(tei_url=tei.url, qdrant_path=qdrant_path))
    first_loop = asyncio.new_event_loop()
    try:
        first = first_loop.run_until_complete(engine.embed(["first loop"], EmbedOptions()))
        assert np.array_equal(first.vectors[0], expected_vector(tei_config, "first loop"))

        with pytest.raises(EventLoopError, match="CachedEmbedder") as raised:
            asyncio.run(engine.embed(["second loop"], EmbedOptions()))  # a second asyncio.run
        assert "Event loop is closed" not in str(raised.value)
        assert isinstance(raised.value, RuntimeError)
        assert sent_texts(tei) == ["first loop"]
    finally:
        first_loop.run_until_complete(engine.aclose())
        first_loop.close()
