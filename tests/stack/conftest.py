"""Shared fixtures for the stack/ tests: the generator module and the nginx binary."""

from __future__ import annotations

import importlib.util
import shutil
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
STACK = REPO / "stack"
SCHEMA = REPO / "tests" / "reference" / "compose-spec.json"


def _load_generator():
    name = "cached_tei_stack_generate"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, STACK / "generate.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def nginx_binary() -> str | None:
    found = shutil.which("nginx")
    if found:
        return found
    for candidate in ("/usr/sbin/nginx", "/usr/local/sbin/nginx", "/usr/local/nginx/sbin/nginx"):
        if Path(candidate).exists():
            return candidate
    return None


@pytest.fixture(scope="session")
def gen():
    return _load_generator()


@pytest.fixture(scope="session")
def example_env(gen) -> dict[str, str]:
    return gen.parse_dotenv((STACK / ".env.example").read_text(encoding="utf-8"))


@pytest.fixture
def nginx_bin() -> str:
    found = nginx_binary()
    if found is None:
        pytest.skip("nginx binary not found (install Debian's nginx)")
    return found
