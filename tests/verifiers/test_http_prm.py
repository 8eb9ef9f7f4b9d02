"""HttpPRM against an in-test HTTP stub: the request it sends, the scores it returns, and every failure mode."""

from __future__ import annotations

import pytest

from tests.helpers.stub_http import StubServer
from thinkscale.types import Candidate, Ledger, Problem, Role
from thinkscale.verifiers.base import VerifierError
from thinkscale.verifiers.prm import HttpPRM

PROBLEM = Problem.from_text("Natalia sold 48 clips. How many?", system="system text is not sent")


@pytest.fixture
def stub():
    with StubServer(path="/prm") as s:
        yield s


def test_sends_problem_and_steps_and_returns_per_step_scores(stub):
    stub.reply({"scores": [[0.9, 0.4], [0.75]], "usage": {"prompt_tokens": 120, "completion_tokens": 0}})
    prm = HttpPRM(stub.url, model="qwen2.5-math-prm-7b", api_key="k")
    ledger = Ledger()
    cands = [Candidate(text="48 / 2 = 24\n\n48 + 24 = 72", answer="72"),
             Candidate(text="ignored text", answer="5", steps=("one given step",))]
    assert prm.score(PROBLEM, cands, ledger=ledger) == [(0.9, 0.4), (0.75,)]
    assert stub.bodies == [{"problem": "Natalia sold 48 clips. How many?", "model": "qwen2.5-math-prm-7b",
                            "candidates": [{"steps": ["48 / 2 = 24", "48 + 24 = 72"]},
                                           {"steps": ["one given step"]}]}]
    assert stub.headers[0]["Authorization"] == "Bearer k"
    (role, usage), = ledger.entries
    assert role is Role.VERIFIER and usage.calls == 1
    assert (usage.prompt_tokens, usage.completion_tokens) == (120, 0)
    assert usage.cached_prompt_tokens is None and usage.seconds is not None and usage.seconds >= 0


def test_usage_the_server_does_not_report_is_unknown_not_zero(stub):
    stub.reply({"scores": [[0.5]]})
    ledger = Ledger()
    HttpPRM(stub.url).score_steps(PROBLEM, [["a"]], ledger=ledger)
    u = ledger.total(Role.VERIFIER)
    assert u.calls == 1 and u.prompt_tokens is None and u.completion_tokens is None
    assert "model" not in stub.bodies[0] and "Authorization" not in stub.headers[0]


@pytest.mark.parametrize(("status", "body", "match"), [
    (500, {"error": "CUDA out of memory"}, "HTTP 500.*CUDA out of memory"),
    (200, "not json", "not JSON"),
    (200, {"rewards": [[0.5]]}, "no \"scores\" list"),
    (200, {"scores": [[0.5], [0.5]]}, "2 score lists for 1 candidates"),
    (200, {"scores": [[0.5, 0.5]]}, "candidate 0 has 1 steps but got 2 scores"),
    (200, {"scores": [[1.5]]}, "score 1.5.*must be in \\[0, 1\\]"),
    (200, {"scores": [["0.5"]]}, "score '0.5'"),
    (200, {"scores": [[True]]}, "score True"),
])
def test_bad_answers_raise_one_clear_error(stub, status, body, match):
    stub.reply(body, status)
    with pytest.raises(VerifierError, match=match):
        HttpPRM(stub.url).score_steps(PROBLEM, [["only step"]], ledger=Ledger())
    assert len(stub.bodies) == 1  # no retry


def test_an_unreachable_server_is_a_verifier_error():
    with StubServer(path="/prm") as s:
        url = s.url
    with pytest.raises(VerifierError, match="request failed"):
        HttpPRM(url, timeout_s=2).score_steps(PROBLEM, [["a"]], ledger=Ledger())


def test_nothing_to_score_sends_nothing(stub):
    ledger = Ledger()
    assert HttpPRM(stub.url).score(PROBLEM, [], ledger=ledger) == []
    assert stub.bodies == [] and ledger.entries == []


def test_bad_settings_are_refused():
    with pytest.raises(ValueError, match="http"):
        HttpPRM("localhost:8000")
    with pytest.raises(ValueError, match="timeout_s"):
        HttpPRM("http://x", timeout_s=0)
