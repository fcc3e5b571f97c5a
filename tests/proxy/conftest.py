"""Fixtures for the proxy and CLI tests: a fast TEI emulator and proxies in front of it."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from cached_tei.logs import OWN_LOGGERS
from cached_tei.proxy import ProxySettings
from tests.tei_emulator import EmulatorServer

from .support import FAST, ProxyServer, engine_settings


@pytest.fixture
def logging_restored() -> Iterator[None]:
    """``main`` configures logging for its process; in-process runs undo it afterwards."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    levels = {name: logging.getLogger(name).level for name in OWN_LOGGERS}
    yield
    root.handlers[:] = handlers
    root.setLevel(level)
    for name, own in levels.items():
        logging.getLogger(name).setLevel(own)


@pytest.fixture(scope="module")
def emulator() -> Iterator[EmulatorServer]:
    with EmulatorServer(FAST) as server:
        yield server


@pytest.fixture
def emu(emulator: EmulatorServer) -> Iterator[EmulatorServer]:
    """The module's emulator with an empty request log and no faults."""
    emulator.clear_faults()
    emulator.reset_log()
    emulator.set_healthy(True)
    yield emulator
    emulator.clear_faults()
    emulator.set_healthy(True)


@pytest.fixture
def make_proxy(tmp_path: Path) -> Iterator[Callable[..., ProxyServer]]:
    """Start proxies (each with its own store folder unless given one); all stop at the end."""
    started: list[ProxyServer] = []

    def make(
        tei_url: str,
        *,
        proxy: dict[str, Any] | None = None,
        qdrant_path: Path | None = None,
        **settings: Any,
    ) -> ProxyServer:
        path = qdrant_path or tmp_path / f"qdrant-{len(started)}"
        server = ProxyServer(
            engine_settings(tei_url, path, **settings), ProxySettings(**(proxy or {}))
        )
        started.append(server.start())
        return server

    yield make
    for server in reversed(started):
        server.stop()


@pytest.fixture
def proxy(emu: EmulatorServer, make_proxy: Callable[..., ProxyServer]) -> ProxyServer:
    """A proxy in front of the emulator with default proxy settings."""
    return make_proxy(emu.url)
