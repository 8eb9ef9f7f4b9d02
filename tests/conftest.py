"""Shared fixtures. Real-model tests use the smallest catalog model (smollm2-135m, pulled and verified on first use)."""

from __future__ import annotations

import os

import pytest


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--runslow", action="store_true", default=False, help="run tests marked slow")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if config.getoption("--runslow"):
        return
    skip = pytest.mark.skip(reason="slow: opt in with --runslow")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def smollm2_path() -> str:
    override = os.environ.get("THINKSCALE_TEST_MODEL")
    if override:
        return override
    from thinkscale.models import TEST_MODEL, resolve

    return str(resolve(TEST_MODEL, progress=False))


@pytest.fixture(scope="session")
def llama_backend(smollm2_path: str):
    from thinkscale.backends.llamacpp import LlamaCppBackend

    backend = LlamaCppBackend(smollm2_path, n_ctx=4096, n_seq_max=32)
    yield backend
    backend.close()


@pytest.fixture
def unshipped_default_policy(monkeypatch: pytest.MonkeyPatch) -> None:
    """As if no default policy were packaged (the tests of the error that says so keep working once one is)."""
    from thinkscale.strategies import auto
    from thinkscale.strategies import auto_policy as model

    monkeypatch.setattr(model, "DEFAULT_POLICY_FILE", "not-shipped-policy.json")
    auto._cached_policy.cache_clear()
    yield
    auto._cached_policy.cache_clear()
