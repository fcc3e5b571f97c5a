"""Shared fixtures for the stack/ tests: the generator module and the nginx binary."""

from __future__ import annotations

from types import ModuleType

import pytest

from tests.support.nginx import REPO, STACK, example_env, nginx_binary, stack_generator

__all__ = ["REPO", "SCHEMA", "STACK"]

SCHEMA = REPO / "tests" / "reference" / "compose-spec.json"


@pytest.fixture(scope="session")
def gen() -> ModuleType:
    return stack_generator()


@pytest.fixture(scope="session", name="example_env")
def example_env_fixture() -> dict[str, str]:
    return example_env()


@pytest.fixture
def nginx_bin() -> str:
    found = nginx_binary()
    if found is None:
        pytest.skip("nginx binary not found (install Debian's nginx)")
    return found
