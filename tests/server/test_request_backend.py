"""The server's per-request backend wrapper forwards every backend call a verifier may make, charges it to the
request, and refuses work once the request is cancelled."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from thinkscale.backends.base import Cancelled, Capabilities, HiddenStates
from thinkscale.server.engine import Spent, _RequestBackend
from thinkscale.types import ScoreRequest, Usage


class FeatureBackend:
    capabilities = Capabilities(hidden_states=True)

    def __init__(self) -> None:
        self.seen: list[list[ScoreRequest]] = []

    def hidden_states(self, requests):
        self.seen.append(list(requests))
        return HiddenStates(np.ones((len(requests), 3), dtype=np.float32),
                            Usage(prompt_tokens=7 * len(requests), cached_prompt_tokens=2, completion_tokens=0,
                                  calls=1, seconds=0.01, flops=1.0))


def test_hidden_states_pass_through_and_are_charged_to_the_request():
    backend, spent = FeatureBackend(), Spent()
    rb = _RequestBackend(backend, threading.Event(), spent, cancellable=False, lock=None)  # type: ignore[arg-type]
    reqs = [ScoreRequest(prompt="a", continuation="b"), ScoreRequest(prompt="c", continuation="d")]
    out = rb.hidden_states(reqs)
    assert out.vectors.shape == (2, 3)
    assert backend.seen == [reqs]
    assert spent.usage.prompt_tokens == 14 and spent.usage.calls == 1
    assert rb.capabilities.hidden_states


def test_hidden_states_after_cancel_does_no_work():
    backend, cancel = FeatureBackend(), threading.Event()
    rb = _RequestBackend(backend, cancel, Spent(), cancellable=False, lock=None)  # type: ignore[arg-type]
    cancel.set()
    with pytest.raises(Cancelled):
        rb.hidden_states([ScoreRequest(prompt="a", continuation="b")])
    assert backend.seen == []


class CancelledMidway:
    """A backend whose generate is cancelled after it has spent 30 tokens (what llama.cpp reports)."""
    capabilities = Capabilities()

    def generate(self, requests, *, cancel=None):
        raise Cancelled("generation cancelled by the caller",
                        usage=Usage(prompt_tokens=12, cached_prompt_tokens=0, completion_tokens=30, calls=1,
                                    seconds=0.5, flops=9.0))


def test_work_done_before_a_cancel_is_charged_to_the_request():
    spent = Spent()
    rb = _RequestBackend(CancelledMidway(), threading.Event(), spent, cancellable=True, lock=None)  # type: ignore[arg-type]
    with pytest.raises(Cancelled):
        rb.generate([])
    assert (spent.usage.completion_tokens, spent.usage.prompt_tokens, spent.usage.calls) == (30, 12, 1)
