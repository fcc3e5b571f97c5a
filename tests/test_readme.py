"""Keep the README true: every Python block of README.md and stack/README.md runs, as a
script in a fresh interpreter, against the TEI emulator.

Each block gets ``CACHED_TEI_URL`` pointing at the emulator, its own cache folder and working
folder; the addresses the blocks use stand for what the test serves: TEI (``localhost:8080``),
a ``cached-tei serve`` in front of it (``localhost:8000``), a Qdrant server
(``localhost:6333``), and TEIs serving a SPLADE model (``localhost:8081``) and a reranker
(``localhost:8082``). A block that needs what a test machine lacks (a GPU host, Docker) is
marked by an HTML comment just before it, ``<!-- readme-test: skip (the reason) -->``, and
skipped with that reason.
"""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import pytest
from markdown_it import MarkdownIt

from tests.faults.fake_qdrant import FakeQdrant
from tests.proxy.support import engine_settings
from tests.support.env import scrubbed_environ
from tests.support.proxy import InThreadProxy
from tests.tei_emulator import EmulatorConfig, EmulatorServer

REPO = Path(__file__).resolve().parents[1]
DOCUMENTS = ("README.md", "stack/README.md")
TEI, PROXY, QDRANT = "http://localhost:8080", "http://localhost:8000", "http://localhost:6333"
# TEIs of the other kinds: a SPLADE model and a reranker.
KINDS = {"http://localhost:8081": "splade", "http://localhost:8082": "reranker"}
_SKIP = re.compile(r"<!--\s*readme-test:\s*skip\s*\((.+)\)\s*-->")
# LangChain's warning about its SHA-1 default key encoder: no example may trigger it.
_WARNINGS_AS_ERRORS = ("error:Using default key encoder:UserWarning",)


def python_blocks(markdown: str) -> list[tuple[int, str, str | None]]:
    """(first line, code, skip reason or None) of each ```python block."""
    tokens = MarkdownIt("commonmark").parse(markdown)
    found = []
    for before, token in zip([None, *tokens], tokens, strict=False):
        if token.type != "fence" or token.info.strip() != "python" or token.map is None:
            continue
        marked = _SKIP.search(before.content) if before and before.type == "html_block" else None
        found.append((token.map[0] + 1, token.content, marked.group(1) if marked else None))
    return found


def _params() -> Iterator[object]:
    for document in DOCUMENTS:
        for line, code, reason in python_blocks((REPO / document).read_text()):
            marks = [pytest.mark.skip(reason=reason)] if reason else []
            yield pytest.param(code, id=f"{document}:{line}", marks=marks)


@pytest.fixture(scope="module")
def tei() -> Iterator[EmulatorServer]:
    with EmulatorServer(EmulatorConfig(step_ms=1.0, per_text_ms=0.01)) as server:
        yield server


@pytest.mark.timeout(300)
@pytest.mark.parametrize("code", list(_params()))
def test_the_block_runs(code: str, tei: EmulatorServer, tmp_path: Path) -> None:
    with ExitStack() as services:
        addresses = {TEI: tei.url}
        if PROXY in code:
            settings = engine_settings(tei.url, tmp_path / "proxy-cache")
            addresses[PROXY] = services.enter_context(InThreadProxy(settings)).url
        if QDRANT in code:
            addresses[QDRANT] = services.enter_context(FakeQdrant(validate=False)).url
        for address, model_type in KINDS.items():
            if address in code:
                config = EmulatorConfig(step_ms=1.0, per_text_ms=0.01, model_type=model_type)
                addresses[address] = services.enter_context(EmulatorServer(config)).url
        for address, served in addresses.items():
            code = code.replace(address, served)
        assert "localhost" not in code, "an address this test does not serve"
        script = tmp_path / "block.py"
        script.write_text(code)
        warnings = [f"-W{spec}" for spec in _WARNINGS_AS_ERRORS]
        done = subprocess.run(
            [sys.executable, *warnings, str(script)],
            cwd=tmp_path,
            env=scrubbed_environ(
                CACHED_TEI_URL=tei.url,
                XDG_CACHE_HOME=str(tmp_path / "cache-home"),
                PYTHONPATH=str(REPO),
            ),
            capture_output=True,
            text=True,
            timeout=240,
            check=False,
        )
    assert done.returncode == 0, f"{done.stdout}\n{done.stderr}"


def test_a_marked_block_is_skipped_with_its_reason() -> None:
    markdown = (
        "```python\nprint('runs')\n```\n\n"
        "<!-- readme-test: skip (needs a GPU host with Docker) -->\n"
        "```python\nprint('skipped')\n```\n"
        "```sh\necho not python\n```\n"
    )
    assert python_blocks(markdown) == [
        (1, "print('runs')\n", None),
        (6, "print('skipped')\n", "needs a GPU host with Docker"),
    ]
