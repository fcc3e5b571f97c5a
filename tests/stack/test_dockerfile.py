"""stack/Dockerfile without Docker: its rules, and the image's build replayed (the build context
its COPY lines produce, installed into a fresh virtualenv as its RUN line does, then served)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import httpx
import numpy as np
import pytest

from tests.support.env import scrubbed_environ
from tests.support.proxy import ProxyProcess
from tests.tei_emulator import EmulatorConfig, EmulatorServer, expected_vector

from .conftest import REPO
from .image import Instruction, ignore_spec, instructions, lay_out, pip_install_arguments

if sys.version_info >= (3, 11):
    import tomllib
else:
    import tomli as tomllib


@pytest.fixture(scope="module", name="instructions")
def instructions_fixture() -> list[Instruction]:
    return instructions()


def _all(found: list[Instruction], name: str) -> list[str]:
    return [i.value for i in found if i.name == name]


def test_base_image_pinned(instructions):
    froms = _all(instructions, "FROM")
    assert froms, "no FROM"
    for value in froms:
        image = value.split()[0]
        assert "@sha256:" in image or re.search(r":\d+\.\d+\.\d+", image), f"unpinned base {image}"
    assert re.match(r"^python:3\.\d+\.\d+-slim", froms[-1]), froms[-1]


def test_runs_as_non_root_after_the_install(instructions):
    users = _all(instructions, "USER")
    assert users, "no USER"
    # Numeric, so that Kubernetes' runAsNonRoot can verify it.
    assert users[-1] == "10001:10001", users[-1]
    names = [i.name for i in instructions]
    last_user = max(i for i, name in enumerate(names) if name == "USER")
    assert last_user > max(i for i, name in enumerate(names) if name == "RUN")


def test_installs_the_package_with_the_proxy_extra():
    assert pip_install_arguments() == [".[proxy]"]


def test_healthcheck_exposes_and_command(instructions):
    check = _all(instructions, "HEALTHCHECK")
    assert check and "/health" in check[-1] and "urllib" in check[-1] and "CMD" in check[-1]
    assert "8000" in _all(instructions, "EXPOSE")[-1].split()
    command = json.loads(_all(instructions, "CMD")[-1])
    assert command == ["cached-tei", "serve", "--host", "0.0.0.0", "--port", "8000"]


def test_pyproject_has_proxy_extra_and_script():
    data = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))
    assert data["project"]["name"] == "cached-tei"
    assert "proxy" in data["project"]["optional-dependencies"]
    assert data["project"]["scripts"]["cached-tei"].startswith("cached_tei.")


def test_build_context_holds_what_the_image_needs(tmp_path: Path):
    """The COPY lines with the ignore rules applied as Docker applies them (anchored at the
    context root, the last match decides): the sources and the force-included module."""
    workdir = lay_out(tmp_path)
    assert sorted(p.name for p in workdir.iterdir()) == sorted(
        [
            "README.md",
            "core",
            "langchain_cached_tei",
            "llama_index",
            "llama_index_cached_tei",
            "pyproject.toml",
        ]
    )
    assert (workdir / "llama_index" / "embeddings" / "cached_tei" / "__init__.py").is_file()
    assert (workdir / "core" / "cached_tei" / "py.typed").is_file()
    ignored = ignore_spec()
    for path in (
        ".venv/bin/python",
        "tests/reference/README.md",  # `!README.md` keeps the root's only
        "core/cached_tei/__pycache__/engine.cpython-311.pyc",
        "core/cached_tei/engine.pyc",
    ):
        assert ignored.match_file(path), path
    assert not ignored.match_file("core/cached_tei/engine.py")


@pytest.fixture(scope="module")
def image_venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh virtualenv with the package installed from the laid-out build context, by the
    RUN line's ``pip install`` (pip's own cache is kept, unlike the image's PIP_NO_CACHE_DIR)."""
    tmp = tmp_path_factory.mktemp("image")
    workdir = lay_out(tmp / "image")
    venv = tmp / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    env = scrubbed_environ()
    env.pop("PYTHONPATH", None)
    env.pop("PIP_NO_CACHE_DIR", None)
    install = subprocess.run(
        [str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet"]
        + ["--disable-pip-version-check", *pip_install_arguments()],
        cwd=workdir,
        env=env,
        capture_output=True,
        text=True,
        timeout=540,
    )
    assert install.returncode == 0, f"pip install failed in the image:\n{install.stderr[-3000:]}"
    return venv


def test_the_image_builds_and_serves_vectors(image_venv: Path, tmp_path: Path):
    """The proxy from the image's environment (not this source tree) answers the emulator's
    exact vectors."""
    found = subprocess.run(
        [str(image_venv / "bin" / "python"), "-c", "import cached_tei; print(cached_tei.__file__)"],
        cwd=tmp_path,
        env=scrubbed_environ(PYTHONPATH=""),
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    assert Path(found).is_relative_to(image_venv), found
    config = EmulatorConfig(dim=16, step_ms=1.0, per_text_ms=0.01)
    texts = ["built image a", "built image b"]
    with (
        EmulatorServer(config) as emulator,
        ProxyProcess(
            tmp_path, emulator.url, program=(str(image_venv / "bin" / "cached-tei"),)
        ) as proxy,
    ):
        response = httpx.post(f"{proxy.url}/embed", json={"inputs": texts}, timeout=30)
        assert response.status_code == 200, response.text
        for text, vector in zip(texts, response.json(), strict=True):
            assert np.array_equal(np.asarray(vector, np.float32), expected_vector(config, text))
        assert [r.texts for r in emulator.requests] == [texts]
