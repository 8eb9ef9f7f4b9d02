"""The rewards of ``thinkscale train grpo``: thinkscale's own answer checkers, and an optional format reward.

TRL's GRPOTrainer calls each reward with the batch's ``completions`` and every dataset column by name (``reference``,
``task``); it logs each one separately under its ``__name__`` (``rewards/correct/mean``, ``rewards/format/mean``) and
adds them up with ``reward_weights``. A reward never raises on a model's text: an answer it cannot read is simply not
right (0.0).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from typing import Any

from thinkscale.answers.equivalence import grade
from thinkscale.answers.extract import extract_for_task
from thinkscale.answers.task import Task, Verdict

# One reasoning block first, then an answer outside it: what budget forcing (think_end=</think>) and the server's
# hidden reasoning expect of a thinking model.
# The answer after the block is short: the reasoning belongs inside it. Without a length term the 0.5B learned (80
# steps, held-out format 0.05 -> 0.72) to write a plan inside <think> and solve after </think>, which leaves budget
# forcing nothing to cut and a server nothing to hide (bench/results/rl/grpo-0.5b-think-loose/README.md).
ANSWER_MAX_CHARS = 200
_THINK_FORM = re.compile(r"\A\s*<think>(?P<thought>(?:(?!</?think>).)+?)</think>(?P<answer>(?:(?!</?think>).)*)\Z",
                         re.S)

RewardFn = Callable[..., list[float | None]]  # TRL's type: None = no reward for that completion


def completion_text(completion: Any) -> str:
    """The text of one completion as TRL passes it: a string (plain prompts) or a list of chat messages."""
    if isinstance(completion, str):
        return completion
    if isinstance(completion, list) and all(isinstance(m, dict) for m in completion):
        return "".join(str(m.get("content") or "") for m in completion if m.get("role", "assistant") == "assistant")
    raise TypeError(f"a completion is a string or a list of chat messages, not {type(completion).__name__}")


def is_correct(text: str, reference: str, task: Task | str) -> bool:
    """The eval harness's verdict on a response: its extracted final answer equals the reference. A timeout of the
    symbolic checker counts as wrong, as in ``thinkscale eval``."""
    return grade(task, text, reference) is Verdict.EQUIVALENT


def _texts(completions: Sequence[Any], prefill: Sequence[str] | None) -> list[str]:
    """The replies as a reader sees them: the prompt's prefill (an opened ``<think>``) and the completion."""
    pre = list(prefill) if prefill is not None else [""] * len(completions)
    return [p + completion_text(c) for p, c in zip(pre, completions, strict=True)]


def correct(completions: Sequence[Any], reference: Sequence[str], task: Sequence[str],
            prefill: Sequence[str] | None = None, **_: Any) -> list[float | None]:
    """1.0 when the completion's final answer (the last ``\\boxed{}``, or the task's own extraction) is right."""
    return [float(is_correct(text, r, t))
            for text, r, t in zip(_texts(completions, prefill), reference, task, strict=True)]


def think_format(completions: Sequence[Any], task: Sequence[str], prefill: Sequence[str] | None = None, **_: Any
                 ) -> list[float | None]:
    """For ``<think>reasoning</think>`` followed by an answer the task's extractor reads (one non-empty reasoning
    block, no stray tags): 1.0 when the answer after the block is at most ``ANSWER_MAX_CHARS`` characters, else
    ``ANSWER_MAX_CHARS / its length``, so that moving the working into the block always pays (a pass/fail bound gave
    the base 0.5B 0 of 64 held-out completions: nothing to learn from). Anything else 0.0. A prefilled ``<think>``
    counts as the opening tag."""
    out: list[float | None] = []
    for text, t in zip(_texts(completions, prefill), task, strict=True):
        m = _THINK_FORM.match(text)
        if m is None or not m.group("thought").strip() or extract_for_task(m.group("answer"), t) is None:
            out.append(0.0)
            continue
        out.append(min(1.0, ANSWER_MAX_CHARS / len(m.group("answer").strip())))
    return out


think_format.__name__ = "format"

REWARDS: dict[str, RewardFn] = {"correct": correct, "format": think_format}


def reward_functions(names: Sequence[str]) -> list[RewardFn]:
    """The named rewards in order (``correct``, ``format``); an unknown or repeated name is an error."""
    if not names:
        raise ValueError("give at least one reward (correct, format)")
    if len(set(names)) != len(names):
        raise ValueError(f"a reward is named twice: {', '.join(names)}")
    unknown = [n for n in names if n not in REWARDS]
    if unknown:
        raise ValueError(f"unknown reward {unknown[0]!r}: give any of {', '.join(REWARDS)}")
    return [REWARDS[n] for n in names]
