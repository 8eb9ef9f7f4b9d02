"""What best-of-N and weighted self-consistency share: sample N chains, score them with a verifier named by a knob,
reduce step scores, select. One implementation, so the two differ only in their ``Selection``.

The verifier is named by a string knob (``pyes``, ``confidence-mean``, ``prm``, ...) and built with
``thinkscale.verifiers.build_verifier`` on the strategy's own backend; the options some verifiers need come from
the ``verifier_path`` knob (``prm``: the trained head's file; ``prm-http``: the server's URL), as in the step-level
searches (``strategies._steps``), which use the same ``check_verifier_knobs`` and ``make_verifier``.

Budget. Generation is charged to ``Role.GENERATOR`` and scoring to ``Role.VERIFIER``, on one ledger. A
completion-token budget limits the samples to what fits at ``max_tokens`` each (verifiers here generate nothing).
A call budget counts the verifier's calls too: ``scoring_calls`` says how many a verifier will charge for a set of
candidates, N is chosen so generation plus scoring fits, and when a PRM's step count (known only after generation)
makes scoring all of them too dear, only the first candidates that fit are scored and can be chosen.
"""

from __future__ import annotations

import dataclasses
import inspect
import math
import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

from thinkscale.backends.base import Backend
from thinkscale.strategies.base import candidates_from, charge, check_int, check_top_p, fits, new_seed, remaining_calls
from thinkscale.types import Budget, Candidate, GenRequest, Ledger, Problem, Result, Role
from thinkscale.verifiers.aggregate import Selection, StepAggregation, aggregate_steps, select
from thinkscale.verifiers.base import Verifier, build_verifier, candidate_steps, get_verifier, require_solve_safe
from thinkscale.verifiers.confidence import LowestGroupConfidence, MeanLogprobConfidence
from thinkscale.verifiers.llm_judge import PYesVerifier
from thinkscale.verifiers.prm import HttpPRM
from thinkscale.verifiers.task import Game24Verifier
from thinkscale.verifiers.trained_prm import TrainedPRM

# factory parameters the strategy fills itself
_PROVIDED = {"backend", "mode", "eval_mode"}
# the factory option ``verifier_path`` fills: a trained PRM's file (``prm``) or a PRM server's URL (``prm-http``)
_PATH_OPTIONS = ("path", "url")


def _path_option(verifier: str) -> tuple[str | None, bool]:
    """The option of ``verifier``'s factory that ``verifier_path`` fills (None: it takes none), and whether the
    factory requires it."""
    params = inspect.signature(get_verifier(verifier).factory).parameters
    for option in _PATH_OPTIONS:
        if option in params:
            return option, params[option].default is inspect.Parameter.empty
    return None, False


def check_verifier_knobs(verifier: str, verifier_path: str | None) -> None:
    """Refuse at construction what can never build: an unknown verifier, one that reads the answer key, a
    ``verifier_path`` the verifier does not take or one it needs that is missing, or a required option no knob
    sets."""
    info = get_verifier(verifier)  # ValueError listing the names
    if info.uses_reference:
        raise ValueError(f"verifier {verifier!r} reads the reference answer: it grades results in evaluation and "
                         "cannot choose answers or guide a search")
    option, required = _path_option(verifier)
    if verifier_path is not None and option is None:
        raise ValueError(f"verifier {verifier!r} takes no file or URL: drop verifier_path={verifier_path!r}")
    if verifier_path is None and required:
        raise ValueError(f"verifier {verifier!r} needs a {option}: set the verifier_path knob")
    for p in inspect.signature(info.factory).parameters.values():
        if (p.default is inspect.Parameter.empty and p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)
                and p.name not in _PROVIDED and p.name != option):
            raise ValueError(f"verifier {verifier!r} needs option {p.name!r}, which no strategy knob sets")


def make_verifier(verifier: str, verifier_path: str | None, backend: Backend) -> Verifier:
    """Build the verifier a knob names on the strategy's backend, refusing one that reads the answer key."""
    params = inspect.signature(get_verifier(verifier).factory).parameters
    kwargs: dict[str, Any] = {}
    option, _ = _path_option(verifier)
    if verifier_path is not None and option is not None:
        kwargs[option] = verifier_path
    if "backend" in params:
        kwargs["backend"] = backend
    return require_solve_safe(build_verifier(verifier, **kwargs))


# the confidence verifiers: they read the generator's token logprobs, which must be requested at generation
LOGPROB_VERIFIERS = (MeanLogprobConfidence, LowestGroupConfidence)


def reads_logprobs(verifier: str) -> bool:
    """Whether the verifier named ``verifier`` scores a chain from the generator's token logprobs."""
    return get_verifier(verifier).factory in LOGPROB_VERIFIERS


def needs_logprobs(verifier: Verifier) -> bool:
    """Confidence verifiers read the generator's token logprobs, which must be requested at generation."""
    return isinstance(verifier, LOGPROB_VERIFIERS)


def scoring_calls(verifier: Verifier, candidates: Sequence[Candidate]) -> int | None:
    """The calls ``verifier.score(candidates)`` will charge, exactly; None for a verifier this does not know."""
    if isinstance(verifier, (*LOGPROB_VERIFIERS, Game24Verifier)):
        return 0  # no model call
    if isinstance(verifier, PYesVerifier):
        return len(candidates) * (len(verifier.yes) + len(verifier.no))  # one ScoreRequest per spelling
    if isinstance(verifier, HttpPRM):
        return 1 if candidates else 0  # one POST
    if isinstance(verifier, TrainedPRM):
        return sum(len(candidate_steps(c, verifier.step_separator)) for c in candidates)  # one per step prefix
    return None


@dataclass(frozen=True)
class VerifiedSampling:
    """The knobs and the run of best-of-N and weighted self-consistency, which differ only in ``selection``.

    Args:
        n_samples: chains to sample (one batched call). The budget knob.
        verifier: a registered verifier name (``pyes``, ``confidence-mean``, ``confidence-lowest-group``, ``prm``,
            ``prm-http``, ``game24``); built on the generator's own backend. ``reference`` is refused.
        verifier_path: the saved head of a ``prm`` verifier, or the URL of ``prm-http``.
        step_aggregation: how a PRM's per-step scores become one (``last``, ``min``, ``product``, ``mean``).
        temperature, top_p, max_tokens: sampling knobs; ``max_tokens`` per chain.
    """

    name: ClassVar[str]
    prefix_consistent: ClassVar[bool] = True
    budget_knob: ClassVar[str] = "n_samples"
    # how the scored candidates' answers are chosen: set by each subclass
    selection: ClassVar[Selection]

    n_samples: int = 8
    verifier: str = "pyes"
    verifier_path: str | None = None
    step_aggregation: StepAggregation = StepAggregation.LAST
    temperature: float = 0.7
    top_p: float = 0.95
    max_tokens: int = 512

    def __post_init__(self) -> None:
        check_int("n_samples", self.n_samples)
        if not math.isfinite(self.temperature) or self.temperature <= 0:
            raise ValueError(f"temperature must be a finite number > 0 (sampling N chains at 0 gives N copies), "
                             f"got {self.temperature!r}")
        check_top_p(self.top_p)
        check_int("max_tokens", self.max_tokens)
        object.__setattr__(self, "step_aggregation", StepAggregation(self.step_aggregation))
        check_verifier_knobs(self.verifier, self.verifier_path)

    def run(self, problem: Problem, backend: Backend, budget: Budget, *, rng: random.Random) -> Result:
        return run_scored(self, problem, backend, budget, rng=rng)


def run_scored(strategy: VerifiedSampling, problem: Problem, backend: Backend, budget: Budget, *,
               rng: random.Random) -> Result:
    """Sample, score, select with ``strategy``'s knobs and its ``selection``."""
    selection = strategy.selection
    name = strategy.name
    ledger = Ledger()
    trace: list[dict[str, Any]] = []
    verifier = make_verifier(strategy.verifier, strategy.verifier_path, backend)
    # What scoring n candidates costs in calls at the least, before they exist (a one-step stand-in: a PRM's calls
    # grow with the step count, checked again after generation).
    probe = Candidate(text="x", answer=None)
    if scoring_calls(verifier, [probe]) is None and budget.max_calls is not None:
        raise ValueError(f"{name}: verifier {strategy.verifier!r} does not say how many backend calls it makes, so "
                         "a max_calls budget cannot be kept; use a token or seconds budget")

    def stop(reason: str, cands: Sequence[Candidate] = ()) -> Result:
        trace.append({"event": "stop", "reason": reason})
        return Result(None, None, tuple(cands), ledger, "budget", name, tuple(trace))

    n = strategy.n_samples
    rem = budget.remaining_completion_tokens(ledger)
    if rem is not None:
        n = min(n, max(0, rem) // strategy.max_tokens)
    left = remaining_calls(budget, ledger)
    while left is not None and n > 0 and 1 + (scoring_calls(verifier, [probe] * n) or 0) > left:
        n -= 1  # 1 generate call + scoring must fit
    if n == 0 or not fits(budget, ledger, completion_tokens=n * strategy.max_tokens, calls=1):
        return stop("budget allows no sample")
    req = GenRequest(messages=problem.messages, n=n, temperature=strategy.temperature, top_p=strategy.top_p,
                     max_tokens=strategy.max_tokens, seed=new_seed(rng), logprobs=needs_logprobs(verifier))
    completions = backend.generate([req])
    charge(ledger, Role.GENERATOR, completions)
    cands = candidates_from(completions[0])
    trace.append({"event": "generate", "n": n, "seed": req.seed, "logprobs": req.logprobs,
                  "usage": completions[0].usage.to_dict()})

    # Score the longest prefix of candidates whose scoring fits (all of them unless a PRM's steps make it too dear).
    k = len(cands)
    left = remaining_calls(budget, ledger)
    while k > 0 and left is not None and (scoring_calls(verifier, cands[:k]) or 0) > left:
        k -= 1
    if k == 0 or not fits(budget, ledger, completion_tokens=0, calls=scoring_calls(verifier, cands[:k]) or 0):
        return stop("budget leaves nothing to score with", cands)
    before = ledger.total(Role.VERIFIER)
    raw = verifier.score(problem, cands[:k], ledger=ledger)
    spent = ledger.total(Role.VERIFIER)
    scores = [aggregate_steps(r, strategy.step_aggregation) for r in raw]
    cands = [dataclasses.replace(c, scores=tuple(r)) for c, r in zip(cands[:k], raw, strict=True)] + cands[k:]
    trace.append({"event": "score", "verifier": strategy.verifier, "scored": k, "scores": scores,
                  "step_aggregation": str(strategy.step_aggregation),
                  "calls": spent.calls - before.calls})
    choice = select([c.answer for c in cands[:k]], scores, selection, rng=rng)
    trace.append({"event": "select", "selection": str(selection), "tally": choice.tally, "winner": choice.answer,
                  "index": choice.index, "tie_broken_by_rng": choice.tie})
    chosen = cands[choice.index] if choice.index is not None else None
    short = n < strategy.n_samples or k < len(cands)
    return Result(answer=chosen.answer if chosen else None, chosen=chosen, candidates=tuple(cands), ledger=ledger,
                  stop_reason="budget" if short else "done", strategy=name, trace=tuple(trace))
