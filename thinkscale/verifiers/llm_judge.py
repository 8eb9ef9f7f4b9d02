"""Generative verifier (GenRM-style self-verification): P(Yes) from one forward pass, no sampling.

Ask a model "Is this solution correct? Answer Yes or No." and read the log-probabilities of the two answers as the
first tokens of its reply: score = P(Yes) / (P(Yes) + P(No)) = sigmoid(log P(Yes) - log P(No)). The model may be the
generator itself (self-verification) or another backend.

Zhang et al., "Generative Verifiers: Reward Modeling as Next-Token Prediction", https://arxiv.org/abs/2408.15240

Layout (``JudgeLayout``). ``follow_up`` (the default) continues the solving conversation: the problem's own messages,
the candidate as the assistant's turn, then the question as a new user turn. Its prefix is exactly what the generator
computed, so on a prefix-caching backend a judge that is the generator itself computes only the question (~30 tokens
instead of the whole solution again). ``standalone`` puts the problem and the solution into one user message (the
usual layout for a separate judge model); every candidate's solution is then computed again.

Cost: two ``ScoreRequest`` per candidate (one per spelling listed in ``yes`` and ``no``), sent in one batched
``backend.score`` call. The "No" request shares the whole prompt with the "Yes" request, so on a prefix-caching
backend (llama.cpp) it computes two tokens (the last prompt token, whose logits give P(No), and "No"); across
candidates the problem statement is shared too. Every ``Scored.usage`` is charged to ``Role.VERIFIER``.

Spelling. A word can be several tokens (their logprobs are summed: the log-probability of the whole string), and
may come with or without a leading space. Measured on the catalog models with their chat templates (the reply starts
right after ``<|im_start|>assistant\n``) on four hand-made GSM8K-style solutions, right and wrong, ``"Yes"``/``"No"``
are single tokens and carry most of the mass, while ``" Yes"``/``" No"`` get log P ~ -8 to -10:

    model                 P(Yes)+P(No) follow_up / standalone   log P(" Yes")   log P("yes")
    smollm2-135m          0.74 / 0.48                           -8.0 .. -10.0   -4.3 .. -4.8
    qwen2.5-coder-0.5b    0.93 / 0.92                           -8.1 .. -8.2    -8.1 .. -8.8
    qwen2.5-coder-1.5b    0.97 / 0.92                           -7.7 .. -7.8    -8.8 .. -9.4

So the default is ``yes=("Yes",)``, ``no=("No",)``; listing more spellings (``yes=("Yes", " Yes", "yes")``) sums their
probabilities (log-sum-exp). (On those four examples none of the three models separated right from wrong: P(Yes)
moved by less than 0.1; small models are weak judges of their own work.)
"""

from __future__ import annotations

import enum
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import ClassVar

from thinkscale.backends.base import Backend
from thinkscale.types import Candidate, Ledger, Message, Problem, Role, ScoreRequest
from thinkscale.verifiers.base import VerifierKind, problem_text, register

DEFAULT_QUESTION = "Is this solution correct? Answer Yes or No."
DEFAULT_JUDGE_PROMPT = "Problem:\n{problem}\n\nProposed solution:\n{solution}\n\n" + DEFAULT_QUESTION


class JudgeLayout(enum.StrEnum):
    FOLLOW_UP = "follow_up"  # problem messages, the candidate as the assistant turn, then ``question``
    STANDALONE = "standalone"  # one user turn: ``prompt`` with {problem} and {solution} filled in


def logsumexp(values: Sequence[float]) -> float:
    m = max(values)
    if m == -math.inf:
        return -math.inf
    return m + math.log(math.fsum(math.exp(v - m) for v in values))


def p_yes(logp_yes: float, logp_no: float) -> float:
    """P(Yes) normalised against P(No): ``exp(y) / (exp(y) + exp(n))``, computed without overflow.

    >>> round(p_yes(-0.1, -2.3), 5)   # sigmoid(2.2)
    0.90025
    """
    d = logp_yes - logp_no
    if d >= 0:
        return 1.0 / (1.0 + math.exp(-d))
    e = math.exp(d)
    return e / (1.0 + e)


@register("pyes", "P(Yes) of 'Is this solution correct?' from one forward pass (GenRM-style)", needs_backend=True)
@dataclass(frozen=True)
class PYesVerifier:
    """Args:
        backend: the judging model (needs ``capabilities.score``); may be the generator's own backend.
        layout: ``follow_up`` (default; reuses the generator's KV) or ``standalone`` (see the module docstring).
        question: the follow-up user turn (``follow_up``).
        prompt: the user turn of ``standalone``; ``{problem}`` and ``{solution}`` are replaced (no other braces
            are interpreted).
        system: system message of a ``standalone`` judge (``follow_up`` keeps the problem's own messages).
        yes, no: the reply spellings whose probabilities count as Yes / No (see the module docstring).

    >>> PYesVerifier(backend).score(problem, candidates, ledger=ledger)  # doctest: +SKIP
    [(0.83,), (0.41,)]
    """

    kind: ClassVar[VerifierKind] = VerifierKind.OUTCOME
    uses_reference: ClassVar[bool] = False

    backend: Backend = field(repr=False)
    layout: JudgeLayout = JudgeLayout.FOLLOW_UP
    question: str = DEFAULT_QUESTION
    prompt: str = DEFAULT_JUDGE_PROMPT
    system: str | None = None
    yes: tuple[str, ...] = ("Yes",)
    no: tuple[str, ...] = ("No",)

    def __post_init__(self) -> None:
        object.__setattr__(self, "layout", JudgeLayout(self.layout))
        for placeholder in ("{problem}", "{solution}"):
            if placeholder not in self.prompt:
                raise ValueError(f"the judge prompt must contain {placeholder}")
        if not self.question.strip():
            raise ValueError("the judge question is empty")
        if self.system is not None and self.layout is JudgeLayout.FOLLOW_UP:
            raise ValueError("system= applies to the standalone layout; follow_up keeps the problem's messages")
        object.__setattr__(self, "yes", tuple(self.yes))
        object.__setattr__(self, "no", tuple(self.no))
        if not self.yes or not self.no or any(not w for w in (*self.yes, *self.no)):
            raise ValueError("yes= and no= each need at least one non-empty spelling")
        if set(self.yes) & set(self.no):
            raise ValueError(f"a spelling cannot count as both Yes and No: {set(self.yes) & set(self.no)}")
        caps = getattr(self.backend, "capabilities", None)
        if caps is not None and not caps.score:
            raise NotImplementedError(f"{type(self.backend).__name__} cannot score continuations, which P(yes) "
                                      "needs; use the embedded llama.cpp backend as the judge")

    def messages(self, problem: Problem, candidate: Candidate) -> tuple[Message, ...]:
        """The judge's conversation for one candidate; the Yes/No reply is scored right after it."""
        if self.layout is JudgeLayout.FOLLOW_UP:
            # the candidate exactly as generated (not stripped), so its tokens match the generator's cached ones
            return (*problem.messages, Message("assistant", candidate.text), Message("user", self.question))
        user = self.prompt.replace("{problem}", problem_text(problem)).replace("{solution}", candidate.text.strip())
        return ((Message("system", self.system),) if self.system else ()) + (Message("user", user),)

    def max_calls(self, candidates: Sequence[Candidate]) -> int:
        return len(candidates) * (len(self.yes) + len(self.no))  # one ScoreRequest per spelling

    def score(self, problem: Problem, candidates: Sequence[Candidate], *,
              ledger: Ledger) -> list[tuple[float, ...]]:
        words = (*self.yes, *self.no)
        requests = [ScoreRequest(messages=self.messages(problem, c), continuation=w)
                    for c in candidates for w in words]
        scored = self.backend.score(requests) if requests else []
        for s in scored:
            ledger.charge(Role.VERIFIER, s.usage)
        out: list[tuple[float, ...]] = []
        for i in range(len(candidates)):
            row = scored[i * len(words):(i + 1) * len(words)]
            logp = [math.fsum(s.logprobs) for s in row]  # a multi-token spelling: log P of the whole string
            out.append((p_yes(logsumexp(logp[:len(self.yes)]), logsumexp(logp[len(self.yes):])),))
        return out
