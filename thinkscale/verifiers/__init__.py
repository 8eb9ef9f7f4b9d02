"""Verifiers: score candidates, one tuple of scores in [0, 1] per candidate (one per step for a PRM).

    from thinkscale.verifiers import build_verifier, select, Selection, aggregate_steps, StepAggregation
    pyes = build_verifier("pyes", backend=backend)                  # GenRM-style P(Yes), charged to Role.VERIFIER
    prm = build_verifier("prm", path="prm.json", backend=backend)   # trained here (thinkscale train prm)
    orm = build_verifier("orm", backend=backend)                    # trained here; the default model's is packaged
    scores = [aggregate_steps(s, StepAggregation.MIN) for s in prm.score(problem, cands, ledger=ledger)]
    choice = select([c.answer for c in cands], scores, Selection.ARGMAX, rng=rng)

Registered names (``verifier_names()``): pyes, confidence-mean, confidence-lowest-group, game24, reference (eval
mode only), prm-http, prm, orm. Modules load lazily: importing this package loads no model and no scikit-learn.
"""

from thinkscale.verifiers.aggregate import Choice, Selection, StepAggregation, aggregate_steps, select
from thinkscale.verifiers.base import (
    Mode,
    Verifier,
    VerifierError,
    VerifierKind,
    build_verifier,
    candidate_steps,
    get_verifier,
    require_solve_safe,
    split_steps,
    verifier_names,
)

__all__ = ["Choice", "Mode", "Selection", "StepAggregation", "Verifier", "VerifierError", "VerifierKind",
           "aggregate_steps", "build_verifier", "candidate_steps", "get_verifier", "require_solve_safe", "select",
           "split_steps", "verifier_names"]
