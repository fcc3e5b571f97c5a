"""Every third-party package is declared where it is imported.

The engine's imports are base dependencies; the proxy's may also use the `proxy` extra, each
adapter its framework's extra, cached_tei.tracing the `otel` extra; tests may use everything
`pip install .[all] --group test` installs, and bench what `--group bench` adds.
"""

from __future__ import annotations

import ast
import importlib.metadata
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

if sys.version_info >= (3, 11):
    import tomllib
else:
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[2]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
FIRST_PARTY = {"cached_tei", "langchain_cached_tei", "llama_index_cached_tei", "tests", "bench"}


def _names(requirements: Iterable[str]) -> set[str]:
    return {canonicalize_name(Requirement(line).name) for line in requirements}


def _extra(name: str) -> set[str]:
    return _names(PYPROJECT["project"]["optional-dependencies"][name]) - {"cached-tei"}


def _group(name: str) -> set[str]:
    names: set[str] = set()
    for entry in PYPROJECT["dependency-groups"][name]:
        names |= _group(entry["include-group"]) if isinstance(entry, dict) else _names([entry])
    return names


BASE = _names(PYPROJECT["project"]["dependencies"])
ALL = BASE | {
    name for extra in ("langchain", "llama-index", "proxy", "otel") for name in _extra(extra)
}
# (folder or file, what may be imported there, paths inside it that have their own row)
SCOPES: list[tuple[str, set[str], tuple[str, ...]]] = [
    ("core/cached_tei", BASE, ("proxy", "tracing.py")),
    ("core/cached_tei/tracing.py", BASE | _extra("otel"), ()),
    ("core/cached_tei/proxy", BASE | _extra("proxy"), ()),
    ("langchain_cached_tei", BASE | _extra("langchain"), ()),
    ("llama_index_cached_tei", BASE | _extra("llama-index"), ()),
    ("tests", ALL | _group("test"), ()),
    ("bench", ALL | _group("bench"), ()),
]


def _imports(folder: Path, skip: tuple[str, ...]) -> Iterator[tuple[str, Path]]:
    """(top-level module, file) for each absolute import of a module outside the project."""
    if folder.is_file():
        folder, paths = folder.parent, [folder]
    else:
        paths = sorted(folder.rglob("*.py"))
    local = {path.stem for path in folder.glob("*.py")}  # scripts import their neighbours
    for path in paths:
        if any(path.is_relative_to(folder / inner) for inner in skip):
            continue
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                modules = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                modules = [node.module]
            else:
                continue
            for module in modules:
                top = module.partition(".")[0]
                if top not in sys.stdlib_module_names and top not in FIRST_PARTY | local:
                    yield top, path


@pytest.mark.parametrize(("folder", "declared", "skip"), SCOPES, ids=[s[0] for s in SCOPES])
def test_each_import_is_declared(folder: str, declared: set[str], skip: tuple[str, ...]) -> None:
    providers = importlib.metadata.packages_distributions()
    undeclared = sorted(
        {
            f"{path.relative_to(ROOT)}: {top} (from {' or '.join(dists)})"
            for top, path in _imports(ROOT / folder, skip)
            # A module not installed here (tomli on Python >= 3.11) is looked up under its own name.
            for dists in [providers.get(top, [top])]
            if not {canonicalize_name(dist) for dist in dists} & declared
        }
    )
    assert not undeclared, "declare these in pyproject.toml:\n" + "\n".join(undeclared)
