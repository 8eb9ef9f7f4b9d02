"""P(yes) verifier on the scripted fake: normalisation, batching, spellings, and what it charges."""

from __future__ import annotations

import math

import pytest

from thinkscale.backends.scripted import ScriptedBackend
from thinkscale.types import Candidate, GenRequest, Ledger, Problem, Role
from thinkscale.verifiers.llm_judge import JudgeLayout, PYesVerifier, p_yes

PROBLEM = Problem.from_text("What is 2 + 2?", system="Be brief.")


def cands(*texts: str) -> list[Candidate]:
    return [Candidate(text=t, answer=None) for t in texts]


def table_score_fn(table: dict[tuple[str, str], tuple[float, ...]]):
    """score_fn answering from {(solution marker, continuation): logprobs}; the marker must be in the prompt."""

    def fn(prompt: str, continuation: str) -> tuple[float, ...]:
        for (marker, cont), lps in table.items():
            if marker in prompt and cont == continuation:
                return lps
        raise AssertionError(f"unexpected score request {continuation!r}")

    return fn


def test_p_yes_normalises_yes_against_no():
    """log P(Yes) = -0.1, log P(No) = -2.3: e^-0.1 / (e^-0.1 + e^-2.3) = 0.904837 / 1.005096 = sigmoid(2.2)
    = 0.900250 (the other 9.5% of the mass, on neither word, is ignored)."""
    assert p_yes(-0.1, -2.3) == pytest.approx(0.9002495, abs=1e-7)
    assert p_yes(-2.3, -0.1) == pytest.approx(1 - 0.9002495, abs=1e-7)
    assert p_yes(-5.0, -5.0) == 0.5
    assert p_yes(-1000.0, -1.0) == pytest.approx(0.0) and p_yes(-1.0, -1000.0) == pytest.approx(1.0)


def test_score_reads_one_yes_no_pair_per_candidate_and_charges_the_verifier():
    fake = ScriptedBackend(score_fn=table_score_fn({
        ("SOL-A", "Yes"): (-0.1,), ("SOL-A", "No"): (-2.3,),
        ("SOL-B", "Yes"): (-3.0,), ("SOL-B", "No"): (-0.2,),
    }))
    ledger = Ledger()
    scores = PYesVerifier(fake).score(PROBLEM, cands("SOL-A 4", "SOL-B 5"), ledger=ledger)
    assert scores == [(pytest.approx(0.9002495),), (pytest.approx(1 / (1 + math.exp(2.8))),)]
    # one batched call: (Yes, No) for A, then (Yes, No) for B, so each No follows its Yes and reuses its prompt
    assert [r.continuation for r in fake.score_requests] == ["Yes", "No", "Yes", "No"]
    assert fake.score_requests[0].messages == fake.score_requests[1].messages
    assert fake.score_requests[2].messages[-2].content == "SOL-B 5"
    # every score request is charged to the verifier, nothing to the generator
    assert set(ledger.by_role()) == {Role.VERIFIER}
    verifier = ledger.total(Role.VERIFIER)
    assert verifier.calls == 4
    per_request = [e[1] for e in ledger.entries]
    assert verifier.prompt_tokens == sum(u.prompt_tokens for u in per_request)
    # the fake's prefix cache: the No request shares all of the Yes request's prompt words
    assert per_request[1].cached_prompt_tokens == per_request[1].prompt_tokens - 1


def test_follow_up_layout_continues_the_solving_conversation():
    """The problem's own messages (system prompt included), the candidate verbatim as the assistant turn, then the
    question: the prefix is what the generator computed, so a caching backend reuses it."""
    fake = ScriptedBackend(score_fn=lambda p, c: (-1.0,))
    PYesVerifier(fake).score(PROBLEM, cands("  x = {y}\n"), ledger=Ledger())
    msgs = fake.score_requests[0].messages
    assert msgs[:2] == PROBLEM.messages
    assert [(m.role, m.content) for m in msgs[2:]] == [
        ("assistant", "  x = {y}\n"), ("user", "Is this solution correct? Answer Yes or No.")]


def test_follow_up_reuses_the_generators_prompt_on_a_caching_backend():
    """The fake caches by common word prefix: after generating, the judge request shares the generation prompt
    and the sampled solution; only the question (9 words) and the role tags are new."""
    fake = ScriptedBackend(["so it is 4"], score_fn=lambda p, c: (-1.0,))
    (c,) = fake.generate([GenRequest(messages=PROBLEM.messages)])
    ledger = Ledger()
    PYesVerifier(fake).score(PROBLEM, cands(c.samples[0].text), ledger=ledger)
    yes = ledger.entries[0][1]
    # prompt words: "<system> Be brief." (3) "<user> What is 2 + 2?" (6) "<assistant> so it is 4" (5)
    # "<user> Is this solution correct? Answer Yes or No." (9) + "Yes" (1) = 24; cached: the first 9 (the prompt)
    assert (yes.prompt_tokens, yes.cached_prompt_tokens) == (24, 9)


def test_standalone_layout_holds_the_problem_and_solution_but_not_the_system_prompt():
    fake = ScriptedBackend(score_fn=lambda p, c: (-1.0,))
    judge = PYesVerifier(fake, layout=JudgeLayout.STANDALONE, system="You grade maths.")
    judge.score(PROBLEM, cands("x = {y}"), ledger=Ledger())
    msgs = fake.score_requests[0].messages
    assert [m.role for m in msgs] == ["system", "user"] and msgs[0].content == "You grade maths."
    user = msgs[1].content
    assert "What is 2 + 2?" in user and "x = {y}" in user and "Be brief." not in user
    assert user.endswith("Is this solution correct? Answer Yes or No.")


def test_multi_token_spellings_sum_and_variants_add_probability():
    """'Yes' is two fake tokens (-0.5, -0.5): log P = -1.0. With spellings Yes|yes and No: P(yes-ish) =
    e^-1 + e^-2 = 0.503215, P(No) = e^-1.5 = 0.223130 -> 0.503215 / 0.726345 = 0.692804."""
    def fn(prompt: str, cont: str) -> tuple[float, ...]:
        return {"Y es": (-0.5, -0.5), "yes": (-2.0,), "No": (-1.5,)}[cont]

    fake = ScriptedBackend(score_fn=fn)
    ledger = Ledger()
    (score,) = PYesVerifier(fake, yes=("Y es", "yes"), no=("No",)).score(PROBLEM, cands("s"), ledger=ledger)
    assert score == (pytest.approx(0.692804, abs=1e-6),)
    assert ledger.total(Role.VERIFIER).calls == 3


def test_no_candidates_no_calls():
    fake = ScriptedBackend(score_fn=lambda p, c: (-1.0,))
    ledger = Ledger()
    assert PYesVerifier(fake).score(PROBLEM, [], ledger=ledger) == []
    assert fake.score_requests == [] and ledger.entries == []


def test_bad_configuration_is_refused():
    fake = ScriptedBackend(score_fn=lambda p, c: (-1.0,))
    with pytest.raises(ValueError, match="{solution}"):
        PYesVerifier(fake, prompt="{problem} only")
    with pytest.raises(ValueError, match="both Yes and No"):
        PYesVerifier(fake, yes=("Yes",), no=("Yes",))
    with pytest.raises(ValueError, match="non-empty"):
        PYesVerifier(fake, yes=())
    with pytest.raises(ValueError, match="standalone"):
        PYesVerifier(fake, system="a judge")  # the follow-up layout keeps the problem's own messages
    with pytest.raises(ValueError):
        PYesVerifier(fake, layout="sideways")  # type: ignore[arg-type]
