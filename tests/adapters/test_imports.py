"""Each adapter imports without the other framework installed."""

from __future__ import annotations

import pytest

from tests.adapters.conftest import run_python

BLOCK = (
    "import sys\nfor name in {names!r}:\n    sys.modules[name] = None  # makes 'import name' fail\n"
)


@pytest.mark.parametrize(
    ("adapter", "blocked"),
    [
        ("langchain_cached_tei", ["llama_index", "llama_index.core"]),
        ("llama_index_cached_tei", ["langchain_core", "langchain", "langchain_classic"]),
    ],
)
def test_adapter_never_imports_the_other_framework(adapter: str, blocked: list[str]) -> None:
    code = BLOCK.format(names=blocked) + (
        f"import {adapter}\n"
        f"{adapter}.CachedTEIEmbeddings(tei_url='http://127.0.0.1:9')\n"
        "loaded = sorted({m.split('.')[0] for m in sys.modules if sys.modules[m] is not None})\n"
        "print(' '.join(loaded))\n"
    )
    loaded = run_python(code).split()
    assert adapter in loaded
    assert not {name.split(".")[0] for name in blocked} & set(loaded)
