"""One symbolic worker for the whole session: starting one takes ~2 s, a verdict milliseconds."""

from __future__ import annotations

import pytest

from thinkscale.answers.worker import SymbolicChecker


@pytest.fixture(scope="session")
def checker():
    with SymbolicChecker() as c:
        c.start()
        yield c
