"""Best-of-N and weighted self-consistency on the scripted fake: which candidate each selection picks (scores set by
hand through the fake's P(yes) logprobs), what the verifier is charged, and the verifier knobs' errors."""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Sequence
from typing import ClassVar

import pytest

from tests.strategies.helpers import PROBLEM, algo_trace, item, words, yes_no_score_fn
from thinkscale.backends.scripted import ScriptedBackend
from thinkscale.strategies.base import build_strategy
from thinkscale.strategies.best_of_n import BestOfN
from thinkscale.strategies.events import Verify
from thinkscale.strategies.run import execute
from thinkscale.strategies.weighted_sc import WeightedSelfConsistency
from thinkscale.types import Budget, Candidate, Ledger, Problem, Role, Usage
from thinkscale.verifiers import base as verifiers
from thinkscale.verifiers.aggregate import StepAggregation
from thinkscale.verifiers.base import VerifierError, VerifierKind

# Three chains answering 41, 41, 42 with P(yes) set per chain: 41 twice at 0.6 (sum 1.2), 42 once at 0.9.
# Best-of-N takes the single best (42, 0.9); weighted SC sums per answer (41: 1.2 > 0.9); plain majority is 41 too.
TEXTS = ["first says \\boxed{41}", "second says \\boxed{41}", "third says \\boxed{42}"]
P_YES = {"first": 0.6, "second": 0.6, "third": 0.9}


def p_of(prompt: str) -> float:
    return next(p for key, p in P_YES.items() if key in prompt)


def backend(texts: Sequence[str] = TEXTS) -> ScriptedBackend:
    return ScriptedBackend(list(texts), score_fn=yes_no_score_fn(p_of))


def test_best_of_n_picks_the_highest_scored_chain():
    b = backend()
    result = execute(BestOfN(n_samples=3), PROBLEM, b, Budget(), rng=random.Random(0))
    assert result.answer == "42" and result.chosen is result.candidates[2]
    assert [c.scores for c in result.candidates] == [pytest.approx((0.6,)), pytest.approx((0.6,)),
                                                    pytest.approx((0.9,))]
    select = next(e for e in algo_trace(result) if e["event"] == "select")
    assert select["how"] == "argmax" and select["winner"] == "42"
    assert result.votes == pytest.approx({"41": 0.6, "42": 0.9}) and result.votes_kind == "score"
    assert result.stop_reason == "done"


def test_weighted_sc_sums_scores_per_answer():
    """41: 0.6 + 0.6 = 1.2 beats 42: 0.9, although 42 is the single best chain."""
    result = execute(WeightedSelfConsistency(n_samples=3), PROBLEM, backend(), Budget(), rng=random.Random(0))
    assert result.answer == "41"
    select = next(e for e in algo_trace(result) if e["event"] == "select")
    assert select["tally"] == pytest.approx({"41": 1.2, "42": 0.9})
    assert result.chosen is result.candidates[0]  # the winning answer's best chain; equal scores: lowest index


def test_verifier_calls_are_charged_to_the_verifier_role():
    """Generator: one generate call, prompt 6 words, completion 3 + 3 + 3 = 9. Verifier: P(yes) sends 2 score
    requests (Yes, No) per chain = 6 calls and generates nothing; each judges "<user> What is 6 times 7?" (6) +
    "<assistant> first says \\boxed{41}" (4) + "<user> Is this solution correct? Answer Yes or No." (9) plus the
    one-word reply = 20 prompt words, 6 x 20 = 120."""
    result = execute(BestOfN(n_samples=3), PROBLEM, b := backend(), Budget(), rng=random.Random(0))
    gen, ver = result.ledger.total(Role.GENERATOR), result.ledger.total(Role.VERIFIER)
    assert (gen.calls, gen.prompt_tokens, gen.completion_tokens) == (1, 6, 9)
    assert (ver.calls, ver.prompt_tokens, ver.completion_tokens) == (6, 120, 0)
    assert len(b.score_requests) == 6
    verify = next(e for e in result.trace if isinstance(e, Verify))
    assert verify.calls == 6 and verify.bound == 6 and verify.verifier == "pyes"


def test_confidence_verifier_requests_and_reads_generator_logprobs():
    """confidence-mean = exp(mean logprob): chain 0 has mean -1.0, chain 1 mean -0.2, so chain 1 wins; no verifier
    model call is made."""
    b = ScriptedBackend([item("a \\boxed{1}", (-1.0, -1.0)), item("b \\boxed{2}", (-0.1, -0.3))])
    result = execute(BestOfN(n_samples=2, verifier="confidence-mean"), PROBLEM, b, Budget(), rng=random.Random(0))
    assert b.requests[0].logprobs is True
    assert result.candidates[0].logprobs == (-1.0, -1.0)
    assert result.answer == "2"
    assert result.ledger.total(Role.VERIFIER).calls == 0


def test_pyes_does_not_request_logprobs():
    b = backend()
    execute(BestOfN(n_samples=3), PROBLEM, b, Budget(), rng=random.Random(0))
    assert b.requests[0].logprobs is False


@dataclasses.dataclass(frozen=True)
class StepTable:
    """A process verifier for tests: step i of a chain scores TABLE[first word][i]."""

    kind: ClassVar[VerifierKind] = VerifierKind.PROCESS
    uses_reference: ClassVar[bool] = False
    TABLE: ClassVar[dict[str, tuple[float, ...]]] = {"x": (0.9, 0.1, 0.9), "y": (0.5, 0.5, 0.5)}

    def max_calls(self, candidates: Sequence[Candidate]) -> int:
        return 0  # a table lookup, no model call

    def score(self, problem: Problem, candidates: Sequence[Candidate], *, ledger: Ledger) -> list[tuple[float, ...]]:
        return [self.TABLE[c.text.split()[0]] for c in candidates]


@pytest.fixture
def step_table(monkeypatch):
    monkeypatch.setitem(verifiers.REGISTRY, "step-table",
                        verifiers.VerifierInfo("step-table", StepTable, VerifierKind.PROCESS, False, "test"))


@pytest.mark.parametrize(("how", "winner"), [
    (StepAggregation.LAST, "1"),  # x: 0.9 > y: 0.5
    (StepAggregation.MIN, "2"),  # x: 0.1 < y: 0.5
    (StepAggregation.MEAN, "1"),  # x: 1.9 / 3 = 0.63 > 0.5
    (StepAggregation.PRODUCT, "2"),  # x: 0.081 < y: 0.125
])
def test_step_aggregation_decides_with_a_process_verifier(step_table, how, winner):
    b = ScriptedBackend(["x \\boxed{1}", "y \\boxed{2}"])
    result = execute(build_strategy(f"best-of-n:verifier=step-table,n_samples=2,step_aggregation={how}"),
        PROBLEM, b, Budget(), rng=random.Random(0))
    assert result.answer == winner
    assert result.candidates[0].scores == (0.9, 0.1, 0.9)


def test_a_call_budget_also_pays_for_the_verifier():
    """max_calls 7: 1 generate call + 2 P(yes) calls per chain leaves room for (7 - 1) // 2 = 3 of the 8 chains."""
    b = ScriptedBackend([words(3, "1")] * 8, score_fn=yes_no_score_fn(lambda p: 0.5))
    result = execute(BestOfN(n_samples=8, max_tokens=5), PROBLEM, b, Budget(max_calls=7), rng=random.Random(0))
    assert b.requests[0].n == 3
    assert result.ledger.total().calls == 7
    assert result.stop_reason == "budget"


@dataclasses.dataclass
class LengthJudge:
    """A user's own verifier, passed as an object (registered nowhere): one backend call per candidate (charged as
    such), scoring longer chains higher. ``charge`` calls per candidate are what it really charges; it declares
    ``declared`` per candidate."""

    declared: int = 1
    charge: int = 1
    kind: ClassVar[VerifierKind] = VerifierKind.OUTCOME
    uses_reference: ClassVar[bool] = False

    def max_calls(self, candidates: Sequence[Candidate]) -> int:
        return self.declared * len(candidates)

    def score(self, problem: Problem, candidates: Sequence[Candidate], *, ledger: Ledger) -> list[tuple[float, ...]]:
        for _ in range(self.charge * len(candidates)):
            ledger.charge(Role.VERIFIER, Usage(prompt_tokens=1, cached_prompt_tokens=0, completion_tokens=0, calls=1,
                                               seconds=0.0, flops=0.0))
        return [(min(1.0, len(c.text.split()) / 10),) for c in candidates]


def test_a_custom_verifier_object_works_under_a_call_budget():
    """max_calls 5: one generate call leaves 4, and the judge declares one call per chain, so 4 of the 8 chains
    are sampled (1 + 4 = 5 calls), all scored; the longest chain (5 words: "41") wins."""
    b = ScriptedBackend(["a b \\boxed{40}", "a b c \\boxed{41}", "x \\boxed{40}", "a b c d \\boxed{41}"] * 2)
    result = execute(BestOfN(n_samples=8, verifier=LengthJudge()), PROBLEM, b, Budget(max_calls=5),
                     rng=random.Random(0))
    assert b.requests[0].n == 4 and result.stop_reason == "budget"
    assert result.ledger.total().calls == 5 and result.ledger.total(Role.VERIFIER).calls == 4
    assert result.answer == "41" and result.chosen is result.candidates[3]
    verify = next(e for e in result.trace if isinstance(e, Verify))
    assert verify.verifier == "LengthJudge" and verify.bound == 4 and verify.calls == 4


def test_a_verifier_that_charges_more_than_it_declared_is_an_error():
    b = ScriptedBackend(["a \\boxed{1}"] * 2)
    with pytest.raises(VerifierError, match="more than the 2 its max_calls declared"):
        execute(BestOfN(n_samples=2, verifier=LengthJudge(declared=1, charge=2)), PROBLEM, b, Budget(),
                rng=random.Random(0))


def test_an_object_that_is_no_verifier_or_reads_the_key_is_refused():
    class NoBound:
        uses_reference = False

        def score(self, problem: Problem, candidates: Sequence[Candidate], *, ledger: Ledger) -> list[tuple[float]]:
            return [(0.5,) for _ in candidates]

    with pytest.raises(ValueError, match="no max_calls"):
        BestOfN(verifier=NoBound())  # type: ignore[arg-type]
    keyed = dataclasses.replace(LengthJudge())
    object.__setattr__(keyed, "uses_reference", True)
    with pytest.raises(ValueError, match="reads the reference answer"):
        BestOfN(verifier=keyed)
    with pytest.raises(ValueError, match="verifier_path"):
        BestOfN(verifier=LengthJudge(), verifier_path="x.json")


@pytest.mark.parametrize(("spec", "needles"), [
    ("best-of-n:verifier=reference", ["reference answer"]),
    ("weighted-sc:verifier=no-such", ["'no-such'", "pyes", "confidence-mean"]),
    ("best-of-n:verifier=prm", ["'prm'", "verifier_path"]),
    ("best-of-n:verifier=prm-http", ["'prm-http'", "verifier_path"]),
    ("best-of-n:verifier=pyes,verifier_path=x.json", ["'pyes'", "verifier_path"]),
    ("best-of-n:step_aggregation=median", ["step_aggregation", "last|min|product|mean"]),
    ("best-of-n:temperature=0", ["temperature"]),
    ("weighted-sc:n_samples=0", ["n_samples"]),
])
def test_bad_verifier_knobs_fail_at_construction(spec, needles):
    with pytest.raises(ValueError) as info:
        build_strategy(spec)
    for needle in needles:
        assert needle in str(info.value), (needle, str(info.value))


def test_unanswered_chains_are_scored_but_never_chosen():
    b = ScriptedBackend(["first has no answer", "second says \\boxed{7}"], score_fn=yes_no_score_fn(
        lambda prompt: 0.95 if "first" in prompt else 0.2))
    result = execute(BestOfN(n_samples=2), PROBLEM, b, Budget(), rng=random.Random(0))
    assert result.answer == "7"
    assert result.candidates[0].scores == pytest.approx((0.95,))


def trained_prm_file(tmp_path, backend: ScriptedBackend) -> str:
    """A saved PRM head whose step score is sigmoid(#"good" - #"bad") of the step prefix."""
    import numpy as np

    from thinkscale.verifiers.trained_prm import LogisticHead, TrainedPRM

    head = LogisticHead(np.zeros(2), np.ones(2), np.array([1.0, 0.0]), 0.0)
    meta = {"model": {"fingerprint": backend.info().fingerprint}, "feature_dim": 2}
    TrainedPRM(backend=backend, head=head, metadata=meta).save(tmp_path / "prm.json")
    return str(tmp_path / "prm.json")


def test_trained_prm_by_path_scores_steps(tmp_path):
    """prm: each step prefix's hidden state -> score; "last" aggregation: chain 1 ends on a "good" step
    (prefix good-bad+good = +1) and wins over chain 0 (good+bad = 0)."""
    b = ScriptedBackend(["good\n\nbad \\boxed{1}", "good\n\nbad\n\ngood \\boxed{2}"], n_embd=2,
                        hidden_fn=lambda prompt, cont: [cont.count("good") - cont.count("bad"), 0.0])
    path = trained_prm_file(tmp_path, b)
    result = execute(build_strategy(f"best-of-n:verifier=prm,verifier_path={path},n_samples=2"),
        PROBLEM, b, Budget(), rng=random.Random(0))
    assert [len(c.scores) for c in result.candidates] == [2, 3]
    assert result.answer == "2"
    assert result.ledger.total(Role.VERIFIER).calls == 5  # one hidden-state request per step prefix


def test_when_a_prms_steps_make_scoring_too_dear_only_the_first_chains_that_fit_are_scored(tmp_path):
    """max_calls 5 and 3 chains: before generation each chain is assumed to cost at least 1 scoring call (1 + 3 <=
    5). The chains have 3, 1 and 2 steps: all 6 step prefixes would need 6 calls, but 4 are left, so only the first
    two chains (3 + 1 = 4 calls) are scored and can win; the run says "budget"."""
    b = ScriptedBackend(["good\n\ngood\n\ngood \\boxed{1}", "bad \\boxed{2}", "good\n\ngood \\boxed{3}"], n_embd=2,
                        hidden_fn=lambda prompt, cont: [cont.count("good") - cont.count("bad"), 0.0])
    path = trained_prm_file(tmp_path, b)
    result = execute(build_strategy(f"best-of-n:verifier=prm,verifier_path={path},n_samples=3"),
        PROBLEM, b, Budget(max_calls=5), rng=random.Random(0))
    assert result.ledger.total().calls == 5
    assert [len(c.scores) for c in result.candidates] == [3, 1, 0]
    assert result.answer == "1" and result.stop_reason == "budget"
    assert next(e for e in result.trace if isinstance(e, Verify)).refs == (0, 1)


def test_a_prm_server_costs_one_call_for_all_chains(monkeypatch):
    """prm-http scores every chain in one POST: with max_calls 3, 1 generate call + 1 POST fit, so all 4 chains
    are sampled (a per-chain reservation would have allowed only 2). Step scores come from the fake server."""
    import httpx

    import thinkscale.verifiers.prm as prm

    posts = []

    def fake_post(url, json, headers, timeout):
        posts.append(json)
        scores = [[0.2 + 0.1 * i] * len(c["steps"]) for i, c in enumerate(json["candidates"])]
        return httpx.Response(200, json={"scores": scores, "usage": {"prompt_tokens": 10}})

    monkeypatch.setattr(prm.httpx, "post", fake_post)
    b = ScriptedBackend([f"s{i} \\boxed{{{i}}}" for i in range(4)])
    result = execute(build_strategy("best-of-n:verifier=prm-http,verifier_path=http://127.0.0.1:9/score,n_samples=4"),
        PROBLEM, b, Budget(max_calls=3), rng=random.Random(0))
    assert b.requests[0].n == 4 and len(posts) == 1
    assert result.answer == "3" and result.stop_reason == "done"
    assert result.ledger.total(Role.VERIFIER).calls == 1 and result.ledger.total().calls == 2
