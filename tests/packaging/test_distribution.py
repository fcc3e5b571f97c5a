"""The wheel installs `cached_tei` and the two adapters, and never a top-level `core`."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("dist")
    subprocess.run(
        [
            sys.executable,
            "-m",
            "build",
            "--wheel",
            "--no-isolation",
            "--outdir",
            str(out),
            str(ROOT),
        ],
        check=True,
        capture_output=True,
        timeout=300,
    )
    [built] = out.glob("cached_tei-*.whl")
    return built


def test_the_wheel_holds_only_the_three_packages(wheel: Path) -> None:
    names = zipfile.ZipFile(wheel).namelist()
    top_level = {
        name.split("/")[0] for name in names if not name.split("/")[0].endswith(".dist-info")
    }
    assert top_level == {"cached_tei", "langchain_cached_tei", "llama_index_cached_tei"}
    assert "cached_tei/__init__.py" in names
    assert not any(name.startswith("core/") for name in names)
    assert not any(name.startswith("tests/") for name in names)


def test_the_wheel_declares_the_extras_and_the_command(wheel: Path) -> None:
    archive = zipfile.ZipFile(wheel)
    metadata = next(n for n in archive.namelist() if n.endswith(".dist-info/METADATA"))
    text = archive.read(metadata).decode()
    for extra in ("langchain", "llama-index", "proxy", "all"):
        assert f"Provides-Extra: {extra}" in text
    entry_points = next(n for n in archive.namelist() if n.endswith(".dist-info/entry_points.txt"))
    assert "cached-tei = cached_tei.cli:main" in archive.read(entry_points).decode()


def test_the_base_install_needs_no_framework(tmp_path: Path) -> None:
    # Importing the engine must not import LangChain, LlamaIndex or FastAPI.
    script = textwrap.dedent(
        """
        import sys
        for blocked in ("langchain_core", "llama_index", "fastapi", "uvicorn"):
            sys.modules[blocked] = None
        import cached_tei
        print(cached_tei.CachedEmbedder())
        """
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "CachedEmbedder(" in out.stdout
