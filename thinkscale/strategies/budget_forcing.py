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
import random
from dataclasses import dataclass
from typing import Any, ClassVar

from thinkscale.answers.extract import extract_answer
from thinkscale.backends.base import Backend
from thinkscale.strategies.base import charge, check_int, check_top_p, fits, new_seed, register
from thinkscale.types import Budget, Candidate, GenRequest, Ledger, Message, Problem, Result, Role, StopReason


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
        temperature, top_p: sampling (s1 decodes greedily: temperature 0).

    Thinking tokens are the completion tokens the backend reports for the thinking calls; the inserted ``wait``
    and ``answer_prefix`` are prompt text, not generated. Budget: each thinking call asks for at most what is left of
    ``max_thinking_tokens`` and of the completion-token budget after reserving ``answer_max_tokens`` and one call for
    the answer, so the answer always fits; a thinking phase cut short by the Budget (not by the knob) forces the
    answer early and stops with ``stop_reason="budget"``.

    >>> BudgetForcing(min_thinking_tokens=256, max_thinking_tokens=1024).run(  # doctest: +SKIP
    ...     problem, backend, Budget(max_completion_tokens=2048), rng=random.Random(0))
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

    def run(self, problem: Problem, backend: Backend, budget: Budget, *, rng: random.Random) -> Result:
        if not backend.capabilities.continue_final:
            # every "Wait" and every forced answer continues the assistant turn: refuse before spending anything
            raise NotImplementedError(f"budget forcing continues the model's own turn (continue_final), which "
                                      f"{type(backend).__name__} cannot do; use the embedded llama.cpp backend")
        ledger = Ledger()
        trace: list[dict[str, Any]] = []
        content = self.think_start  # the assistant turn so far
        segments: list[str] = []
        thinking = waits = 0
        stop: StopReason = "done"
        finish = None

        def generate(max_tokens: int, stop_strings: tuple[str, ...]) -> tuple[str, int, str]:
            messages = problem.messages
            if content:
                messages = (*messages, Message("assistant", content))
            req = GenRequest(messages=messages, continue_final=bool(content), n=1, temperature=self.temperature,
                             top_p=self.top_p, max_tokens=max_tokens, stop=stop_strings, seed=new_seed(rng))
            completions = backend.generate([req])
            charge(ledger, Role.GENERATOR, completions)
            sample = completions[0].samples[0]
            if sample.completion_tokens is None:
                raise ValueError("budget forcing counts thinking tokens: the backend must report completion tokens")
            trace.append({"event": "call", "max_tokens": max_tokens, "seed": req.seed,
                          "completion_tokens": sample.completion_tokens, "finish_reason": sample.finish_reason,
                          "usage": completions[0].usage.to_dict()})
            return sample.text, sample.completion_tokens, sample.finish_reason

        if not fits(budget, ledger, completion_tokens=1 + self.answer_max_tokens, calls=2):
            trace.append({"event": "stop", "reason": "budget cannot pay for one thinking token and the answer"})
            return Result(None, None, (), ledger, "budget", "budget-forcing", tuple(trace))
        def thinking_cap() -> int | None:
            """Tokens the next thinking call may generate, keeping the answer's tokens and call in reserve;
            None when the budget leaves no room for another thinking call."""
            room = self.max_thinking_tokens - thinking
            rem = budget.remaining_completion_tokens(ledger)
            cap = room if rem is None else min(room, rem - self.answer_max_tokens)
            if cap < 1 or not fits(budget, ledger, completion_tokens=cap + self.answer_max_tokens, calls=2):
                return None
            return cap

        forced = None  # why the answer is forced: "max_thinking_tokens" or "budget"
        while True:
            if thinking >= self.max_thinking_tokens:
                forced = "max_thinking_tokens"
                break
            cap = thinking_cap()
            if cap is None:
                forced, stop = "budget", "budget"
                break
            text, n, finish = generate(cap, (self.think_end,) if self.think_end else ())
            thinking += n
            segments.append(text)
            content += text
            if finish == "length":
                if thinking >= self.max_thinking_tokens:
                    forced = "max_thinking_tokens"
                else:
                    forced, stop = "budget", "budget"
                break
            if thinking < self.min_thinking_tokens and waits < self.max_waits:
                if thinking_cap() is None:
                    stop = "budget"
                    trace.append({"event": "stop", "reason": "the budget ends thinking below the minimum",
                                  "thinking_tokens": thinking})
                    break
                # the model tried to stop thinking too early: suppress that and make it continue
                content += ("" if not content or content[-1].isspace() else "\n") + self.wait
                waits += 1
                trace.append({"event": "wait", "thinking_tokens": thinking, "waits": waits})
                continue
            if thinking < self.min_thinking_tokens:
                trace.append({"event": "max_waits_reached", "thinking_tokens": thinking, "waits": waits})
            break

        if forced is not None:
            content += self.think_end + ("" if not content or content[-1].isspace() else "\n\n") + self.answer_prefix
            answer_head = self.answer_prefix
            trace.append({"event": "force_answer", "reason": forced, "thinking_tokens": thinking})
        elif self.think_end:
            content += self.think_end
            answer_head = ""
        else:
            answer_head = None  # a plain chat model ended its turn: the reply is complete, its answer is in it
        answer_text = ""
        if answer_head is not None:
            if fits(budget, ledger, completion_tokens=self.answer_max_tokens, calls=1):
                answer_text, n, finish = generate(self.answer_max_tokens, ())
                content += answer_text
                answer_section: str = answer_head + answer_text
            else:  # only the clock can get here (tokens and calls were reserved): answer from the thinking
                stop = "budget"
                answer_section = content
                trace.append({"event": "stop", "reason": "time ran out before the answer; answer read from "
                                                         "the thinking"})
        else:
            answer_section = content
        answer = extract_answer(answer_section)
        total = ledger.total(Role.GENERATOR).completion_tokens
        trace.append({"event": "answer", "answer": answer, "thinking_tokens": thinking, "waits": waits,
                      "answer_tokens": None if total is None else total - thinking})
        steps = tuple(segments) + ((answer_text,) if answer_head is not None else ())
        cand = Candidate(text=content[len(self.think_start):], answer=answer, steps=steps, completion_tokens=total,
                         finish_reason=finish)  # type: ignore[arg-type]
        return Result(answer=answer, chosen=cand, candidates=(cand,), ledger=ledger, stop_reason=stop,
                      strategy="budget-forcing", trace=tuple(trace))
