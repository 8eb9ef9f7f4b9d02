"""Process reward models: a score in [0, 1] for every step of a (partial) solution.

Every PRM implements ``score_steps(problem, solutions, *, ledger)`` on already-split solutions (what beam search and
MCTS hold) and, through ``StepScoring``, the Verifier ``score(problem, candidates, *, ledger)``: a candidate's
``steps`` when a step-level strategy built it, else its text split on ``step_separator`` (blank lines by default).
Reduce the per-step scores with ``aggregate.StepAggregation`` (last / min / product / mean).

Two implementations: ``HttpPRM`` here (a PRM served elsewhere, e.g. on a GPU) and ``TrainedPRM``
(``thinkscale.verifiers.trained_prm``: a head trained here on the policy model's own hidden states).

HTTP protocol of ``HttpPRM`` (one POST per ``score`` call, JSON both ways)::

    POST <url>
    {"model": "qwen2.5-math-prm-7b",                  # only when HttpPRM(model=...) is set
     "problem": "Natalia sold clips to 48 ...",      # the user messages' text
     "candidates": [{"steps": ["step 1", "step 2"]}, {"steps": ["step 1"]}]}

    200 OK
    {"scores": [[0.93, 0.41], [0.88]],               # one list per candidate, one float in [0, 1] per step
     "usage": {"prompt_tokens": 812, "completion_tokens": 0}}   # optional; absent counts are unknown (None)

Any other status, a body that is not this shape, a count that does not match, or a score outside [0, 1] raises
``VerifierError`` naming the server and what was wrong; a connection error or timeout raises it too (no retries:
scoring is deterministic, so a failure is reported, not papered over).

Serving Qwen2.5-Math-PRM with vLLM: ``vllm serve Qwen/Qwen2.5-Math-PRM-7B`` exposes the model's reward head through
vLLM's pooling API (STEP pooling on the ``<extra_0>`` token, a softmax over two classes). A thin adapter in front of
it renders each candidate as the model card says (system "Please reason step by step, and put your final answer
within \\boxed{}.", the problem as the user turn, the steps joined and terminated by ``<extra_0>`` as the assistant
turn), posts them to vLLM, and returns the positive-class probability at each ``<extra_0>`` as that step's score.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import httpx

from thinkscale.types import Candidate, Ledger, Problem, Role, Usage
from thinkscale.verifiers.base import (
    DEFAULT_STEP_SEPARATOR,
    VerifierError,
    VerifierKind,
    candidate_steps,
    problem_text,
    register,
)


class StepScoring:
    """``score`` for a PRM: split each candidate into steps, then ``score_steps``."""

    step_separator: str

    def score_steps(self, problem: Problem, solutions: Sequence[Sequence[str]], *,
                    ledger: Ledger) -> list[tuple[float, ...]]:
        raise NotImplementedError

    def steps_of(self, candidates: Sequence[Candidate]) -> list[tuple[str, ...]]:
        return [candidate_steps(c, self.step_separator) for c in candidates]

    def score(self, problem: Problem, candidates: Sequence[Candidate], *,
              ledger: Ledger) -> list[tuple[float, ...]]:
        return self.score_steps(problem, [candidate_steps(c, self.step_separator) for c in candidates], ledger=ledger)


def _count(usage: Any, key: str) -> int | None:
    v = usage.get(key) if isinstance(usage, dict) else None
    return v if isinstance(v, int) and not isinstance(v, bool) and v >= 0 else None


@register("prm-http", "a process reward model behind an HTTP endpoint (e.g. Qwen2.5-Math-PRM on vLLM)",
          path_option="url")
@dataclass(frozen=True)
class HttpPRM(StepScoring):
    """Args:
        url: the endpoint to POST to (see the module docstring for the request and response).
        model: sent as ``"model"`` when set.
        api_key: sent as ``Authorization: Bearer <api_key>`` when set.
        timeout_s: per request.
        step_separator: regex that splits a candidate's text into steps when it has no ``steps``.

    Each call is charged to ``Role.VERIFIER`` with the server's reported token counts (None when it reports none).
    """

    kind: ClassVar[VerifierKind] = VerifierKind.PROCESS
    uses_reference: ClassVar[bool] = False

    url: str
    model: str | None = None
    api_key: str | None = None
    timeout_s: float = 60.0
    step_separator: str = DEFAULT_STEP_SEPARATOR

    def max_calls(self, candidates: Sequence[Candidate]) -> int:
        return 1 if candidates else 0  # one POST for the batch

    def __post_init__(self) -> None:
        if not self.url.startswith(("http://", "https://")):
            raise ValueError(f"url must start with http:// or https://, got {self.url!r}")
        if not self.timeout_s > 0:
            raise ValueError(f"timeout_s must be > 0, got {self.timeout_s!r}")

    def score_steps(self, problem: Problem, solutions: Sequence[Sequence[str]], *,
                    ledger: Ledger) -> list[tuple[float, ...]]:
        if not solutions:
            return []
        payload: dict[str, Any] = {"problem": problem_text(problem),
                                   "candidates": [{"steps": list(steps)} for steps in solutions]}
        if self.model is not None:
            payload["model"] = self.model
        headers = {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}
        t0 = time.perf_counter()
        try:
            response = httpx.post(self.url, json=payload, headers=headers, timeout=self.timeout_s)
        except httpx.HTTPError as e:
            raise VerifierError(f"PRM server {self.url}: request failed ({type(e).__name__}: {e})") from e
        seconds = time.perf_counter() - t0
        if response.status_code != 200:
            raise VerifierError(f"PRM server {self.url} answered HTTP {response.status_code}: "
                                f"{response.text[:200]!r}")
        try:
            body = response.json()
        except ValueError as e:
            raise VerifierError(f"PRM server {self.url} sent a body that is not JSON: {response.text[:200]!r}") from e
        usage = body.get("usage") if isinstance(body, dict) else None
        # Charge before validating: the server did the work even if its answer is unusable.
        ledger.charge(Role.VERIFIER, Usage(prompt_tokens=_count(usage, "prompt_tokens"),
                                           completion_tokens=_count(usage, "completion_tokens"),
                                           calls=1, seconds=seconds))
        return _parse_scores(body, solutions, self.url)


def _parse_scores(body: Any, solutions: Sequence[Sequence[str]], url: str) -> list[tuple[float, ...]]:
    scores = body.get("scores") if isinstance(body, dict) else None
    if not isinstance(scores, list):
        raise VerifierError(f"PRM server {url}: the response has no \"scores\" list: {str(body)[:200]!r}")
    if len(scores) != len(solutions):
        raise VerifierError(f"PRM server {url} returned {len(scores)} score lists for {len(solutions)} candidates")
    out = []
    for i, (row, steps) in enumerate(zip(scores, solutions, strict=True)):
        if not isinstance(row, list) or len(row) != len(steps):
            got = len(row) if isinstance(row, list) else type(row).__name__
            raise VerifierError(f"PRM server {url}: candidate {i} has {len(steps)} steps but got {got} scores")
        for s in row:
            if isinstance(s, bool) or not isinstance(s, (int, float)) or not 0.0 <= s <= 1.0:
                raise VerifierError(f"PRM server {url}: candidate {i} has score {s!r}; scores must be in [0, 1]")
        out.append(tuple(float(s) for s in row))
    return out
