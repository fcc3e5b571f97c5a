"""Static checks of stack/Dockerfile (no Docker engine here)."""

from __future__ import annotations

import json
import re
import sys

import pytest

from .conftest import REPO, STACK

if sys.version_info >= (3, 11):
    import tomllib
else:
    import tomli as tomllib

DOCKERFILE = STACK / "Dockerfile"


def _instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    text = DOCKERFILE.read_text(encoding="utf-8")
    out: list[tuple[str, str]] = []
    buf = ""
    for line in text.splitlines():
        stripped = line.strip()
        if not buf and (not stripped or stripped.startswith("#")):
            continue
        if stripped.startswith("#"):
            continue
        if stripped.endswith("\\"):
            buf += stripped[:-1] + " "
            continue
        buf += stripped
        word, _, rest = buf.partition(" ")
        out.append((word.upper(), rest.strip()))
        buf = ""
    assert not buf, "dangling line continuation"
    return out


@pytest.fixture(scope="module")
def instructions():
    return _instructions()


def _all(instructions, name):
    return [args for word, args in instructions if word == name]


def test_base_image_pinned(instructions):
    froms = _all(instructions, "FROM")
    assert froms, "no FROM"
    for args in froms:
        image = args.split()[0]
        assert "@sha256:" in image or re.search(r":\d+\.\d+\.\d+", image), f"unpinned base {image}"
        assert not image.endswith(":latest")
    assert re.match(r"^python:3\.\d+\.\d+-slim", froms[-1]), froms[-1]


def test_runs_as_non_root(instructions):
    users = _all(instructions, "USER")
    assert users, "no USER"
    final = users[-1].split(":")[0]
    assert final not in ("root", "0"), final
    # USER comes after the last RUN that needs root (the install)
    words = [w for w, _ in instructions]
    assert max(i for i, w in enumerate(words) if w == "USER") > max(
        i for i, w in enumerate(words) if w == "RUN"
    )


def test_installs_the_package_with_the_proxy_extra(instructions):
    runs = " ".join(_all(instructions, "RUN"))
    assert re.search(r"pip install [^&]*[\"']?\.\[proxy\][\"']?", runs), runs
    copied = " ".join(_all(instructions, "COPY"))
    for needed in ("pyproject.toml", "README.md", "core"):
        assert needed in copied, f"{needed} not copied into the build"


def test_healthcheck_exposes_and_command(instructions):
    hc = _all(instructions, "HEALTHCHECK")
    assert hc and "/health" in hc[-1] and "urllib" in hc[-1] and "CMD" in hc[-1]
    assert "8000" in _all(instructions, "EXPOSE")[-1].split()
    cmd = json.loads(_all(instructions, "CMD")[-1])
    assert cmd == ["cached-tei", "serve", "--host", "0.0.0.0", "--port", "8000"]


def test_copied_paths_exist_and_ignore_file_keeps_them(instructions):
    ignore = (STACK / "Dockerfile.dockerignore").read_text(encoding="utf-8").splitlines()
    for args in _all(instructions, "COPY"):
        parts = [p for p in args.split() if not p.startswith("--")]
        for src in parts[:-1]:
            assert (REPO / src).exists(), f"COPY source {src} missing from the repo"
            assert f"!{src}" in ignore, f"{src} is excluded by stack/Dockerfile.dockerignore"
    assert ignore and "*" in ignore, "context should default to excluded (.venv etc.)"


def test_pyproject_has_proxy_extra_and_script():
    data = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))
    assert data["project"]["name"] == "cached-tei"
    assert "proxy" in data["project"]["optional-dependencies"]
    assert data["project"]["scripts"]["cached-tei"].startswith("cached_tei.")
