"""Budget forcing (s1): control how long a model thinks. Below a minimum number of thinking tokens, the end of
thinking is suppressed and "Wait" is appended so the model keeps thinking; at the maximum, thinking is cut off and the
answer is forced by appending "Final answer:".

Muennighoff et al., "s1: Simple test-time scaling", https://arxiv.org/abs/2501.19393

Works with any chat model through ``continue_final`` (the assistant turn is prefilled with the thinking so far and
continued). For a plain chat model, thinking ends when the model ends its turn (``think_end=""``) and the whole reply
is the thinking; for ``<think>``-style models set ``think_end="</think>"`` (and ``think_start="<think>\\n"`` when the
chat template does not open the block itself): the closing tag is a stop string, so the model cannot leave the
thinking phase unnoticed, and after it the answer is generated as a continuation.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import ClassVar

from thinkscale.answers.extract import extract_answer
from thinkscale.strategies.base import check_int, check_top_p, register
from thinkscale.strategies.events import event
from thinkscale.strategies.run import Run, require_continue_final
from thinkscale.types import Candidate, Event, GenRequest, Message, Result, Role, StopReason


@event("wait")
@dataclass(frozen=True)
class Wait(Event):
    """The model ended its thinking below the minimum: the end was suppressed and "Wait" appended."""

    thinking_tokens: int
    waits: int


@event("max_waits_reached")
@dataclass(frozen=True)
class MaxWaitsReached(Event):
    """The model ended its thinking below the minimum once more than ``max_waits`` allow: it is let go."""

    thinking_tokens: int
    waits: int


@event("force_answer")
@dataclass(frozen=True)
class ForceAnswer(Event):
    """Thinking was cut off and the answer forced; ``reason``: max_thinking_tokens or budget."""

    reason: str
    thinking_tokens: int


@event("answer")
@dataclass(frozen=True)
class AnswerPhase(Event):
    """The end of a budget-forcing run: the answer, thinking tokens, waits, and the answer's own tokens."""

    answer: str | None
    thinking_tokens: int
    waits: int
    answer_tokens: int | None


@dataclass
class _State:
    """A budget-forcing run in progress: the assistant turn so far and what thinking cost."""

    content: str
    segments: list[str] = field(default_factory=list)
    thinking: int = 0
    waits: int = 0
    finish: str | None = None
    stop: StopReason = "done"


@register("budget-forcing", "s1 budget forcing: 'Wait' below min thinking tokens, 'Final answer:' at the max",
          "https://arxiv.org/abs/2501.19393")
@dataclass(frozen=True)
class BudgetForcing:
    """Args:
        max_thinking_tokens: thinking is cut off here and the answer forced. The budget knob.
        min_thinking_tokens: while fewer were generated, an end of thinking is replaced by ``wait`` (at most
            ``max_waits`` times), so the model re-examines its work.
        answer_max_tokens: completion tokens of the answer after thinking.
        wait: the text appended to continue thinking (s1's "Wait").
        answer_prefix: appended (after ``think_end``) to force the answer at the maximum.
        think_start, think_end: the thinking delimiters of ``<think>``-style models ("" for plain chat models).
        after_think: the text after ``think_end`` before the answer (and before ``answer_prefix``), as the model
            writes it: "\n" for a model that writes ``</think>`` then a newline. The prompt must end on the model's
            own tokens: the trained thinking 0.5B writes ``>\n`` as one token, and a prompt ending on ``>`` alone
            made it end its turn with no answer (every answer empty, docs/results/rl/README.md).
        temperature, top_p: sampling (s1 decodes greedily: temperature 0).

    Thinking tokens are the completion tokens the backend reports for the thinking calls; the inserted ``wait``
    and ``answer_prefix`` are prompt text, not generated. Budget: each thinking call asks for at most what is left of
    ``max_thinking_tokens`` and of the completion-token budget after reserving ``answer_max_tokens`` and one call for
    the answer, so the answer always fits; a thinking phase cut short by the Budget (not by the knob) forces the
    answer early and stops with ``stop_reason="budget"``.

    >>> execute(BudgetForcing(min_thinking_tokens=256, max_thinking_tokens=1024),  # doctest: +SKIP
    ...         problem, backend, Budget(max_completion_tokens=2048), rng=random.Random(0))
    """

    budget_knob: ClassVar[str] = "max_thinking_tokens"
    budget_in_tokens: ClassVar[bool] = True  # a sweep's budget k: k chains' worth of thinking tokens

    max_thinking_tokens: int = 1024
    min_thinking_tokens: int = 0
    answer_max_tokens: int = 64
    max_waits: int = 4
    wait: str = "Wait"
    answer_prefix: str = "Final answer:"
    think_start: str = ""
    think_end: str = ""
    after_think: str = "\n"
    temperature: float = 0.0
    top_p: float = 1.0

    def __post_init__(self) -> None:
        for knob, low in (("max_thinking_tokens", 1), ("min_thinking_tokens", 0), ("answer_max_tokens", 1),
                          ("max_waits", 0)):
            check_int(knob, getattr(self, knob), low=low)
        if self.min_thinking_tokens > self.max_thinking_tokens:
            raise ValueError(f"min_thinking_tokens ({self.min_thinking_tokens}) is above max_thinking_tokens "
                             f"({self.max_thinking_tokens})")
        if not self.wait.strip():
            raise ValueError("wait must be non-empty text (s1 appends \"Wait\")")
        if not self.answer_prefix.strip():
            raise ValueError("answer_prefix must be non-empty text (e.g. \"Final answer:\")")
        if not math.isfinite(self.temperature) or self.temperature < 0:
            raise ValueError(f"temperature must be a finite number >= 0, got {self.temperature!r}")
        check_top_p(self.top_p)

    def _generate(self, ctx: Run, st: _State, max_tokens: int, stop_strings: tuple[str, ...]) -> tuple[str, int]:
        messages = ctx.problem.messages
        if st.content:
            messages = (*messages, Message("assistant", st.content))
        req = GenRequest(messages=messages, continue_final=bool(st.content), n=1, temperature=self.temperature,
                         top_p=self.top_p, max_tokens=max_tokens, stop=stop_strings, seed=ctx.seed())
        sample = ctx.generate([req])[0].samples[0]
        if sample.completion_tokens is None:
            raise ValueError("budget forcing counts thinking tokens: the backend must report completion tokens")
        st.finish = sample.finish_reason
        return sample.text, sample.completion_tokens

    def _thinking_cap(self, ctx: Run, st: _State) -> int | None:
        """Tokens the next thinking call may generate, keeping the answer's tokens and call in reserve; None when
        the budget leaves no room for another thinking call."""
        room = self.max_thinking_tokens - st.thinking
        rem = ctx.remaining_tokens()
        cap = room if rem is None else min(room, rem - self.answer_max_tokens)
        if cap < 1 or not ctx.fits(completion_tokens=cap + self.answer_max_tokens, calls=2):
            return None
        return cap

    def _think(self, ctx: Run, st: _State) -> str | None:
        """The thinking phase; returns why the answer must be forced (None: the model ended its thinking)."""
        while True:
            if st.thinking >= self.max_thinking_tokens:
                return "max_thinking_tokens"
            cap = self._thinking_cap(ctx, st)
            if cap is None:
                st.stop = "budget"
                return "budget"
            text, n = self._generate(ctx, st, cap, (self.think_end,) if self.think_end else ())
            st.thinking += n
            st.segments.append(text)
            st.content += text
            if st.finish == "length":
                if st.thinking >= self.max_thinking_tokens:
                    return "max_thinking_tokens"
                st.stop = "budget"
                return "budget"
            if st.thinking < self.min_thinking_tokens and st.waits < self.max_waits:
                if self._thinking_cap(ctx, st) is None:
                    st.stop = "budget"
                    ctx.stop("budget", f"the budget ends thinking below the minimum ({st.thinking} tokens)")
                    return None
                # the model tried to stop thinking too early: suppress that and make it continue
                st.content += ("" if not st.content or st.content[-1].isspace() else "\n") + self.wait
                st.waits += 1
                ctx.note(Wait(st.thinking, st.waits))
                continue
            if st.thinking < self.min_thinking_tokens:
                ctx.note(MaxWaitsReached(st.thinking, st.waits))
            return None

    def run(self, ctx: Run) -> Result:
        require_continue_final(ctx, "budget forcing")  # every "Wait" and every forced answer continues the turn
        if not ctx.fits(completion_tokens=1 + self.answer_max_tokens, calls=2):
            ctx.stop("budget", "budget cannot pay for one thinking token and the answer")
            return ctx.result((), stop_reason="budget")
        st = _State(self.think_start)
        forced = self._think(ctx, st)
        if forced is not None:
            if self.think_end:
                st.content += self.think_end + self.after_think + self.answer_prefix
            else:  # a plain chat model: the prefix on a paragraph of its own
                st.content += ("" if not st.content or st.content[-1].isspace() else "\n\n") + self.answer_prefix
            answer_head: str | None = self.answer_prefix
            ctx.note(ForceAnswer(forced, st.thinking))
        elif self.think_end:
            st.content += self.think_end + self.after_think
            answer_head = ""
        else:
            answer_head = None  # a plain chat model ended its turn: the reply is complete, its answer is in it
        answer_text = ""
        answer_section = st.content
        if answer_head is not None:
            if ctx.fits(completion_tokens=self.answer_max_tokens, calls=1):
                answer_text, _ = self._generate(ctx, st, self.answer_max_tokens, ())
                st.content += answer_text
                answer_section = answer_head + answer_text
            else:  # only the clock can get here (tokens and calls were reserved): answer from the thinking
                st.stop = "budget"
                ctx.stop("budget", "time ran out before the answer; answer read from the thinking")
        answer = extract_answer(answer_section)
        total = ctx.spent(Role.GENERATOR).completion_tokens
        ctx.note(AnswerPhase(answer, st.thinking, st.waits, None if total is None else total - st.thinking))
        steps = tuple(st.segments) + ((answer_text,) if answer_head is not None else ())
        cand = Candidate(text=st.content[len(self.think_start):], answer=answer, steps=steps, completion_tokens=total,
                         finish_reason=st.finish)  # type: ignore[arg-type]
        return ctx.result((cand,), chosen_index=0, answer=answer, stop_reason=st.stop)
