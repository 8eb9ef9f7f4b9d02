"""Fixtures of the backend unit tests."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from tests.helpers.stub_http import Reply, StubServer


@pytest.fixture
def stub() -> Iterator[Callable[..., StubServer]]:
    """``stub(*replies)``: a scripted HTTP stub at ``http://127.0.0.1:PORT/v1``, closed after the test."""
    servers: list[StubServer] = []

    def make(*replies: Reply) -> StubServer:
        servers.append(StubServer(replies, path="/v1"))
        return servers[-1]

    yield make
    for s in servers:
        s.close()
