"""Self-refine: draft a solution, have the model critique it, revise, and repeat until the critique judges the draft
correct, ``max_rounds`` revisions are done, the budget ends, or (``stop_at_repeat``) a revision repeats its draft.

Madaan et al., "Self-Refine: Iterative Refinement with Self-Feedback", https://arxiv.org/abs/2303.17651

Every call extends the previous conversation (problem, draft, critique request, critique, revision request,
revision, ...), so on a prefix-caching backend each call computes only the turns added since the last one.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, replace
from typing import ClassVar, Literal

from thinkscale.strategies.base import check_int, check_top_p, register
from thinkscale.strategies.events import event
from thinkscale.strategies.run import Run, candidates_from
from thinkscale.types import Candidate, Event, GenRequest, Message, Result, StopReason


@event("draft")
@dataclass(frozen=True)
class Draft(Event):
    """The first draft (round 0) of self-refine."""

    round: int
    completion_tokens: int | None
    finish_reason: str | None


@event("revise")
@dataclass(frozen=True)
class Revise(Draft):
    """A revision written after round ``round``'s critique."""


@event("critique")
@dataclass(frozen=True)
class Critique(Draft):
    """Round ``round``'s critique of the latest draft: its verdict (correct, incorrect, none) and its text."""

    verdict: str = "none"
    text: str = ""

DEFAULT_CRITIQUE = ("Check the solution above step by step, including every calculation. If it is completely correct, "
                    "end your reply with the line \"{correct}\". If anything is wrong, explain the mistake and end "
                    "your reply with the line \"{incorrect}\".")
DEFAULT_REFINE = ("Using that feedback, write a corrected, complete solution to the original problem, and give the "
                  "final answer in the same format as before.")


def judge_verdict(text: str, correct: str, incorrect: str) -> bool | None:
    """True if the last verdict marker in ``text`` is ``correct``, False if it is ``incorrect``, None if neither
    appears. Case-insensitive; a marker inside the other one ("correct" in "incorrect") does not count."""
    low, c, i = text.lower(), correct.lower(), incorrect.lower()

    def spans(marker: str) -> list[tuple[int, int]]:
        return [(m.start(), m.end()) for m in re.finditer(re.escape(marker), low)]

    cs, is_ = spans(c), spans(i)
    cs = [s for s in cs if not any(a <= s[0] and s[1] <= b for a, b in is_)]
    is_ = [s for s in is_ if not any(a <= s[0] and s[1] <= b for a, b in cs)]
    last_c = max((s[0] for s in cs), default=-1)
    last_i = max((s[0] for s in is_), default=-1)
    if last_c < 0 and last_i < 0:
        return None
    return last_c > last_i


@register("self-refine", "draft, self-critique and revise for up to R rounds; stops when the critique says correct",
          "https://arxiv.org/abs/2303.17651")
@dataclass(frozen=True)
class SelfRefine:
    """Args:
        max_rounds: critique-and-revise rounds after the first draft (0 = just the draft). The budget knob.
        max_tokens: completion tokens per draft or revision; critique_max_tokens: per critique.
        temperature, top_p: sampling knobs of every call (seeded from ``rng``).
        critique_prompt: the user turn asking for a critique; ``{correct}`` and ``{incorrect}`` are replaced by the
            verdict markers. refine_prompt: the user turn asking for the revision.
        verdict_correct, verdict_incorrect: the markers a critique ends with; the last one in the critique decides
            (none at all counts as "not judged correct", so the draft is revised).
        stop_at_repeat: stop once a revision repeats the draft before it word for word (a fixed point: the model
            was shown the same conversation again and wrote the same text). Off by default (the runs measured in
            docs/results/strategies ran without it); there, on qwen2.5-coder-0.5b at 6 rounds, 199 of 271 revisions
            were such copies, and stopping at the first one changed no final answer and saved 46% of the tokens.

    Budget: the draft needs ``max_tokens`` and one call; each round needs ``critique_max_tokens + max_tokens`` and
    two calls, checked (worst case) before the round starts, so a round is never cut in half. The answer is that of
    the latest draft that has one (a revision cut off before its answer does not erase the previous answer).

    >>> execute(SelfRefine(max_rounds=2), problem, backend,  # doctest: +SKIP
    ...         Budget(max_completion_tokens=3000), rng=random.Random(0))
    """

    budget_knob: ClassVar[str] = "max_rounds"

    max_rounds: int = 3
    max_tokens: int = 512
    critique_max_tokens: int = 256
    temperature: float = 0.7
    top_p: float = 0.95
    critique_prompt: str = DEFAULT_CRITIQUE
    refine_prompt: str = DEFAULT_REFINE
    verdict_correct: str = "VERDICT: CORRECT"
    verdict_incorrect: str = "VERDICT: INCORRECT"
    stop_at_repeat: bool = False

    def __post_init__(self) -> None:
        check_int("max_rounds", self.max_rounds, low=0)
        check_int("max_tokens", self.max_tokens)
        check_int("critique_max_tokens", self.critique_max_tokens)
        if not math.isfinite(self.temperature) or self.temperature < 0:
            raise ValueError(f"temperature must be a finite number >= 0, got {self.temperature!r}")
        check_top_p(self.top_p)
        if not self.verdict_correct.strip() or not self.verdict_incorrect.strip():
            raise ValueError("verdict_correct and verdict_incorrect must be non-empty")
        if self.verdict_correct.lower() == self.verdict_incorrect.lower():
            raise ValueError(f"verdict_correct and verdict_incorrect are the same ({self.verdict_correct!r})")
        for placeholder in ("{correct}", "{incorrect}"):
            if placeholder not in self.critique_prompt:
                raise ValueError(f"critique_prompt must contain {placeholder}, so the model knows the verdict markers")
        if not self.refine_prompt.strip():
            raise ValueError("refine_prompt is empty")
        if not isinstance(self.stop_at_repeat, bool):
            raise ValueError(f"stop_at_repeat must be true or false, got {self.stop_at_repeat!r}")

    def _call(self, ctx: Run, messages: list[Message], max_tokens: int, turn: Literal["draft", "critique", "revise"],
              round_: int) -> Candidate:
        req = GenRequest(messages=tuple(messages), n=1, temperature=self.temperature, top_p=self.top_p,
                         max_tokens=max_tokens, seed=ctx.seed())
        (cand,) = candidates_from(ctx.generate([req], tag=turn)[0])
        if turn != "critique":  # a critique is noted with its verdict
            ctx.note((Draft if turn == "draft" else Revise)(round_, cand.completion_tokens, cand.finish_reason))
        return cand

    def run(self, ctx: Run) -> Result:
        drafts: list[Candidate] = []
        conversation = list(ctx.problem.messages)
        critique_turn = self.critique_prompt.replace("{correct}", self.verdict_correct).replace(
            "{incorrect}", self.verdict_incorrect)
        stop: StopReason = "done"
        if not ctx.fits(completion_tokens=self.max_tokens, calls=1):
            ctx.stop("budget", "budget allows no draft")
            return ctx.result((), stop_reason="budget")
        drafts.append(self._call(ctx, conversation, self.max_tokens, "draft", 0))
        conversation.append(Message("assistant", drafts[-1].text))
        for round_ in range(1, self.max_rounds + 1):
            if not ctx.fits(completion_tokens=self.critique_max_tokens + self.max_tokens, calls=2):
                stop = "budget"
                ctx.stop("budget", f"budget cannot pay for round {round_}")
                break
            conversation.append(Message("user", critique_turn))
            critique = self._call(ctx, conversation, self.critique_max_tokens, "critique", round_)
            conversation.append(Message("assistant", critique.text))
            verdict = judge_verdict(critique.text, self.verdict_correct, self.verdict_incorrect)
            ctx.note(Critique(round_, critique.completion_tokens, critique.finish_reason,
                              {True: "correct", False: "incorrect", None: "none"}[verdict], critique.text))
            drafts[-1] = replace(drafts[-1], scores=(1.0 if verdict else 0.0,))
            if verdict:
                ctx.stop("judged_correct", f"critique of round {round_} judged the draft correct")
                break
            conversation.append(Message("user", self.refine_prompt))
            revision = self._call(ctx, conversation, self.max_tokens, "revise", round_)
            drafts.append(replace(revision, parent=len(drafts) - 1))
            conversation.append(Message("assistant", revision.text))
            if self.stop_at_repeat and revision.text == drafts[-2].text:
                ctx.stop("fixed_point", f"the revision of round {round_} repeats the draft before it word for word")
                break
        chosen = next((i for i in reversed(range(len(drafts))) if drafts[i].answer is not None), None)
        return ctx.result(drafts, chosen_index=chosen, stop_reason=stop)
