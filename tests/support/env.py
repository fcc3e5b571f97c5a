"""The environment a test or a benchmark child runs in: no developer settings leak in."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import pytest

PREFIX = "CACHED_TEI_"


def scrubbed_environ(**extra: str) -> dict[str, str]:
    """``os.environ`` without any ``CACHED_TEI_*`` variable, plus ``extra``: for a child process."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(PREFIX)}
    env.update(extra)
    return env


def isolate_environment(monkeypatch: pytest.MonkeyPatch, cache_home: Path) -> None:
    """For this test only: drop every ``CACHED_TEI_*`` variable and point ``XDG_CACHE_HOME``
    (where the default store lives) at ``cache_home``, never at the developer's ~/.cache."""
    for name in list(os.environ):
        if name.startswith(PREFIX):
            monkeypatch.delenv(name)
    monkeypatch.setenv("XDG_CACHE_HOME", str(cache_home))
