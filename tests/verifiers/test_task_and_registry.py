"""Exact task verifiers, the reference verifier's eval-only guard, and the registry."""

from __future__ import annotations

import pytest

from thinkscale.answers.task import Task
from thinkscale.backends.scripted import ScriptedBackend
from thinkscale.types import Candidate, Ledger, Problem
from thinkscale.verifiers import Mode, VerifierKind, build_verifier, get_verifier, require_solve_safe, verifier_names
from thinkscale.verifiers.base import VerifierError
from thinkscale.verifiers.llm_judge import PYesVerifier
from thinkscale.verifiers.task import Game24Verifier, ReferenceVerifier, game24_numbers


def c(text: str) -> Candidate:
    return Candidate(text=text, answer=None)


def test_game24_scores_the_final_expression_against_the_problems_numbers():
    p = Problem.from_text("4 9 10 13")
    ledger = Ledger()
    scores = Game24Verifier().score(p, [c("(10 - 4) * (13 - 9) = 24"), c("\\boxed{4 * 9 - 10 - 13}"),
                                        c("13 + 10 + 4 - 9 = 18"), c("no idea")], ledger=ledger)
    assert scores == [(1.0,), (0.0,), (0.0,), (0.0,)]  # 36 - 23 = 13, not 24
    assert ledger.entries == []


@pytest.mark.parametrize(("text", "numbers"), [
    ("1 1 4 6", (1, 1, 4, 6)),
    ("Use 4 9 10 13 to make 24.", (4, 9, 10, 13)),
    ("Numbers: 2, 3, 5, 12. Reach 24 with + - * /.", (2, 3, 5, 12)),
])
def test_game24_numbers(text, numbers):
    assert game24_numbers(Problem.from_text(text)) == numbers


def test_game24_numbers_missing_is_a_clear_error():
    with pytest.raises(VerifierError, match="four Game of 24 numbers"):
        game24_numbers(Problem.from_text("make 24 from 1 and 2"))


def test_reference_verifier_needs_eval_mode():
    with pytest.raises(ValueError, match="eval_mode=True"):
        ReferenceVerifier(Task.NUMERIC)
    with pytest.raises(ValueError, match="eval_mode=True"):
        ReferenceVerifier(Task.NUMERIC, eval_mode="yes")  # type: ignore[arg-type]
    v = ReferenceVerifier(Task.NUMERIC, eval_mode=True)
    p = Problem.from_text("2+2?", reference="4")
    assert v.score(p, [c("so \\boxed{4}"), c("#### 4.0"), c("5")], ledger=Ledger()) == [(1.0,), (1.0,), (0.0,)]
    with pytest.raises(VerifierError, match="no reference"):
        v.score(Problem.from_text("2+2?"), [c("4")], ledger=Ledger())


def test_reference_verifier_is_refused_on_the_solve_path():
    with pytest.raises(ValueError, match="can never choose answers"):
        build_verifier("reference", task=Task.NUMERIC)
    with pytest.raises(ValueError, match="can never choose answers"):
        build_verifier("reference", mode=Mode.SOLVE, task=Task.NUMERIC)
    v = build_verifier("reference", mode=Mode.EVAL, task=Task.NUMERIC)
    assert isinstance(v, ReferenceVerifier) and v.eval_mode
    with pytest.raises(ValueError, match="must not choose answers"):
        require_solve_safe(v)


def test_require_solve_safe_passes_verifiers_without_the_key_and_refuses_unknown_ones():
    g = Game24Verifier()
    assert require_solve_safe(g) is g

    class Mystery:  # says nothing about the reference: assume the worst
        def score(self, problem, candidates, *, ledger):
            return []

    with pytest.raises(ValueError):
        require_solve_safe(Mystery())  # type: ignore[arg-type]


def test_registry_builds_verifiers_by_name():
    assert set(verifier_names()) >= {"pyes", "confidence-mean", "confidence-lowest-group", "game24", "reference",
                                     "prm-http", "prm"}
    fake = ScriptedBackend(score_fn=lambda p, c: (-1.0,))
    v = build_verifier("pyes", backend=fake)
    assert isinstance(v, PYesVerifier) and v.name == "pyes"
    assert build_verifier("confidence-lowest-group", window=16).window == 16  # type: ignore[attr-defined]
    assert get_verifier("prm").kind is VerifierKind.PROCESS and get_verifier("pyes").kind is VerifierKind.OUTCOME
    assert get_verifier("reference").uses_reference and not get_verifier("pyes").uses_reference
    with pytest.raises(ValueError, match="unknown verifier 'pyess'; choose one of"):
        build_verifier("pyess")
