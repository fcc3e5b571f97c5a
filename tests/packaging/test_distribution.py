"""The wheel and sdist: the three packages (never a top-level `core`), the LICENSE, one version."""

from __future__ import annotations

import email
import subprocess
import sys
import tarfile
import textwrap
import zipfile
from email.message import Message
from pathlib import Path

import pytest

import cached_tei

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def dist(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("dist")
    subprocess.run(
        [sys.executable, "-m", "build", "--sdist", "--wheel", "--no-isolation"]
        + ["--outdir", str(out), str(ROOT)],
        check=True,
        capture_output=True,
        timeout=300,
    )
    return out


@pytest.fixture(scope="module")
def wheel(dist: Path) -> zipfile.ZipFile:
    [built] = dist.glob("cached_tei-*.whl")
    return zipfile.ZipFile(built)


@pytest.fixture(scope="module")
def sdist(dist: Path) -> tarfile.TarFile:
    [built] = dist.glob("cached_tei-*.tar.gz")
    return tarfile.open(built)


@pytest.fixture(scope="module")
def metadata(wheel: zipfile.ZipFile) -> Message:
    name = next(n for n in wheel.namelist() if n.endswith(".dist-info/METADATA"))
    return email.message_from_bytes(wheel.read(name))


def test_the_wheel_holds_the_three_packages_and_the_llama_index_shim(
    wheel: zipfile.ZipFile,
) -> None:
    names = wheel.namelist()
    top_level = {
        name.split("/")[0] for name in names if not name.split("/")[0].endswith(".dist-info")
    }
    assert top_level == {
        "cached_tei",
        "langchain_cached_tei",
        "llama_index_cached_tei",
        "llama_index",
    }
    # llama_index and llama_index.embeddings are namespace packages shared with llama-index
    assert [name for name in names if name.startswith("llama_index/")] == [
        "llama_index/embeddings/cached_tei/__init__.py"
    ]
    assert "cached_tei/__init__.py" in names
    assert not any(name.startswith("core/") for name in names)
    assert not any(name.startswith("tests/") for name in names)


def test_the_wheel_declares_the_extras_and_the_command(
    wheel: zipfile.ZipFile, metadata: Message
) -> None:
    assert set(metadata.get_all("Provides-Extra", [])) == {
        "langchain",
        "llama-index",
        "proxy",
        "otel",
        "all",
    }
    entry_points = next(n for n in wheel.namelist() if n.endswith(".dist-info/entry_points.txt"))
    assert "cached-tei = cached_tei.cli:main" in wheel.read(entry_points).decode()


def test_the_version_is_the_package_version(
    wheel: zipfile.ZipFile, sdist: tarfile.TarFile, metadata: Message
) -> None:
    version = cached_tei.__version__
    assert metadata["Version"] == version
    assert Path(wheel.filename or "").name == f"cached_tei-{version}-py3-none-any.whl"
    assert Path(sdist.name or "").name == f"cached_tei-{version}.tar.gz"


def test_both_distributions_carry_the_apache_license(
    wheel: zipfile.ZipFile, sdist: tarfile.TarFile, metadata: Message
) -> None:
    assert metadata["License-Expression"] == "Apache-2.0"
    assert metadata.get_all("License-File") == ["LICENSE"]
    [in_wheel] = [n for n in wheel.namelist() if n.endswith(".dist-info/licenses/LICENSE")]
    text = wheel.read(in_wheel).decode()
    assert "Apache License" in text and "Version 2.0, January 2004" in text
    assert "END OF TERMS AND CONDITIONS" in text
    assert text == (ROOT / "LICENSE").read_text()
    root = sdist.getnames()[0].split("/")[0]
    assert f"{root}/LICENSE" in sdist.getnames()


def test_the_metadata_names_the_python_versions_and_the_project_urls(metadata: Message) -> None:
    classifiers = set(metadata.get_all("Classifier", []))
    assert metadata["Requires-Python"] == ">=3.10"
    for minor in (10, 11, 12, 13):
        assert f"Programming Language :: Python :: 3.{minor}" in classifiers
    assert "Development Status :: 4 - Beta" in classifiers
    assert "License :: OSI Approved :: Apache Software License" in classifiers
    assert "Typing :: Typed" in classifiers
    urls = dict(url.split(", ", 1) for url in metadata.get_all("Project-URL", []))
    assert urls["Source"] == "https://github.com/cached-tei/cached-tei"
    assert urls["Issues"] == "https://github.com/cached-tei/cached-tei/issues"


def test_the_base_install_needs_no_framework() -> None:
    # Importing the engine must not import LangChain, LlamaIndex or the proxy's web stack.
    script = textwrap.dedent(
        """
        import sys
        for blocked in ("langchain_core", "llama_index", "starlette", "uvicorn"):
            sys.modules[blocked] = None
        import cached_tei
        print(cached_tei.CachedEmbedder())
        """
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "CachedEmbedder(" in out.stdout
