"""Each adapter imports without the other framework; the LlamaIndex one also where LlamaIndex
users look for it, in the wheel too."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from tests.adapters.conftest import REPO_ROOT, run_python

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


def test_importable_where_llama_index_users_look() -> None:
    """``llama_index.embeddings.cached_tei`` is a module inside llama-index-core's namespace
    packages: both import in one fresh process, and its classes are the same."""
    out = run_python(
        "from llama_index.embeddings.cached_tei import (\n"
        "    CachedTEIEmbeddings, CachedTEISparseEmbedding\n"
        ")\n"
        "import llama_index.core, llama_index.embeddings.text_embeddings_inference\n"
        "import llama_index_cached_tei\n"
        "print(CachedTEIEmbeddings is llama_index_cached_tei.CachedTEIEmbeddings)\n"
        "print(CachedTEISparseEmbedding is llama_index_cached_tei.CachedTEISparseEmbedding)\n"
        "print(CachedTEIEmbeddings(base_url='http://127.0.0.1:9').class_name())\n"
    )
    assert out.split() == ["True", "True", "CachedTEIEmbeddings"]


def test_langchain_qdrant_is_imported_for_the_sparse_face_only() -> None:
    """Dense users do not pay for importing langchain-qdrant (and its vector store)."""
    out = run_python(
        "import sys\n"
        "import langchain_cached_tei\n"
        "langchain_cached_tei.CachedTEIRerank(rerank_url='http://127.0.0.1:9')\n"
        "print('langchain_qdrant' in sys.modules)\n"
        "sparse = langchain_cached_tei.CachedTEISparseEmbeddings\n"
        "from langchain_qdrant import SparseEmbeddings\n"
        "print(issubclass(sparse, SparseEmbeddings))\n"
    )
    assert out.split() == ["False", "True"]


def test_the_wheel_ships_the_llama_index_module(tmp_path: Path) -> None:
    subprocess.run(
        [sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir", str(tmp_path)]
        + [str(REPO_ROOT)],
        check=True,
        capture_output=True,
        timeout=300,
    )
    [wheel] = tmp_path.glob("cached_tei-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "llama_index/embeddings/cached_tei/__init__.py" in names
    # Never a package __init__ above it: that would shadow llama-index-core's namespace.
    assert not {"llama_index/__init__.py", "llama_index/embeddings/__init__.py"} & set(names)
    assert "llama_index_cached_tei/embeddings.py" in names
