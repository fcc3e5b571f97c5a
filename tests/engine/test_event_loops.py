"""An Engine belongs to the event loop it first runs on; from another it says what to do."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import textwrap
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


def test_two_asyncio_runs_on_one_engine_end_in_the_cached_tei_error(
    tei: EmulatorServer, qdrant_path: Path
) -> None:
    """In a process of its own: its first loop is gone, and so are that loop's connections."""
    script = textwrap.dedent(
        f"""
        import asyncio
        from cached_tei import CachedTEISettings, EmbedOptions, Engine, EventLoopError
        engine = Engine(CachedTEISettings(tei_url={tei.url!r}, qdrant_path={str(qdrant_path)!r}))
        asyncio.run(engine.embed(["first run"], EmbedOptions()))  # returns: nothing left hanging
        try:
            asyncio.run(engine.embed(["second run"], EmbedOptions()))
        except EventLoopError as exc:
            print(exc)
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True, timeout=60
    )
    assert "one Engine per event loop" in done.stdout, done.stderr
    assert "Event loop is closed" not in done.stdout + done.stderr
    assert sent_texts(tei) == ["first run"]
