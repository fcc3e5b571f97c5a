"""Shared fixtures for the stack/ tests: the generator module and the nginx binary."""

from __future__ import annotations

from types import ModuleType

import pytest

from tests.support.nginx import REPO, STACK, example_env, nginx_binary, stack_generator

__all__ = ["POOLS_ENV", "REPO", "SCHEMA", "STACK", "pools_env_text"]

SCHEMA = REPO / "tests" / "reference" / "compose-spec.json"
POOLS_ENV = REPO / "tests" / "stack" / "pools.env"


def pools_env_text() -> str:
    """stack/.env.example with tests/stack/pools.env appended: every pool enabled."""
    example = (STACK / ".env.example").read_text(encoding="utf-8")
    return example + "\n" + POOLS_ENV.read_text(encoding="utf-8")


@pytest.fixture(scope="session")
def gen() -> ModuleType:
    return stack_generator()


@pytest.fixture(scope="session", name="example_env")
def example_env_fixture() -> dict[str, str]:
    return example_env()


@pytest.fixture(scope="session")
def pools_env(gen) -> dict[str, str]:
    """The parsed test .env with the dense, sparse and rerank pools."""
    return dict(gen.parse_dotenv(pools_env_text()))


@pytest.fixture
def nginx_bin() -> str:
    found = nginx_binary()
    if found is None:
        pytest.skip("nginx binary not found (install Debian's nginx)")
    return found
