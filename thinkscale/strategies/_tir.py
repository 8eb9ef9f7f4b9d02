"""Shared pieces of the code-executing strategies (``sc-tir``, ``pal``): prompt formats, finding the code block a
generation stopped at, what the model is shown of a run, the checks of their common knobs and the sandbox limits
they ask for. The runs themselves go through the run context (``Run.tool``: sandbox, ``Role.TOOL`` charge, event).

Prompt formats (``TirFormat``), chosen per model family by a knob, never by the model's name:

- ``coder`` (default; Qwen2.5-Coder and other instruction-tuned chat models that were not trained on a tool
  format): a system message explains the protocol: reason, write ```python blocks that print, read the
  ```output block that follows, end with ``\\boxed{}``. A system message the problem already has comes first.
- ``numina`` (NuminaMath-7B-TIR, DeepSeekMath-RL-style TIR models): the model's training format, no system message;
  the user message is the problem followed by "Please integrate natural language reasoning with programs to solve
  the problem above, and put your final answer within \\boxed{}.". These models write the ```output fence
  themselves, which is also a stop string.
- ``qwen-math`` (Qwen2.5-Math-Instruct's tool-integrated mode): the same instruction as the system message.

Generation stops at the end of a code block: the stop strings are ``"\\n```\\n"`` (a closing fence; an opening fence
is followed by ``python``) and ```` ```output ````. A backend returns the text without the stop string, so the fence
is put back before the output block is appended.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from thinkscale.strategies.base import check_int, check_top_p
from thinkscale.tools.sandbox import Limits, SandboxResult
from thinkscale.types import Message, Problem

DEFAULT_SANDBOX = (10.0, 512, 2)  # per code run: wall seconds, memory MB; warm sandbox workers
CODE_STOP = ("\n```\n", "```output")
CLOSE_FENCE = "\n```\n"
_PY_LANGS = ("python", "py", "python3")
_FENCE = re.compile(r"^[ \t]*```[ \t]*([A-Za-z0-9_+-]*)[ \t]*$")

NUMINA_INSTRUCTION = ("Please integrate natural language reasoning with programs to solve the problem above, and "
                      "put your final answer within \\boxed{}.")
CODER_SYSTEM = (
    "Solve the problem by combining step-by-step reasoning with Python code. Whenever you need to calculate, write a "
    "short Python program in a ```python code block that prints the result, and end the block with ```. The program "
    "is run and what it prints is shown to you in an ```output block; continue from there. numpy and sympy are "
    "installed. When you know the result, write the final answer as \\boxed{ANSWER}.")
PAL_SYSTEM = (
    "Write one Python program that solves the problem, in a single ```python code block. The program must compute "
    "the answer and print only the final answer (a number or an expression), nothing else. Write nothing after the "
    "code block.")


class TirFormat(enum.StrEnum):
    CODER = "coder"
    NUMINA = "numina"
    QWEN_MATH = "qwen-math"


def tir_messages(problem: Problem, fmt: TirFormat) -> tuple[Message, ...]:
    """The problem's messages in the tool-integrated format ``fmt`` (see the module docstring)."""
    msgs = list(problem.messages)
    if fmt is TirFormat.NUMINA:
        last_user = max(i for i, m in enumerate(msgs) if m.role == "user")
        msgs[last_user] = Message("user", msgs[last_user].content.rstrip() + "\n\n" + NUMINA_INSTRUCTION)
        return tuple(msgs)
    return with_system(msgs, CODER_SYSTEM if fmt is TirFormat.CODER else NUMINA_INSTRUCTION)


def with_system(msgs: Sequence[Message], instruction: str) -> tuple[Message, ...]:
    """``msgs`` with ``instruction`` as the system message, after the problem's own system text when it has one."""
    if msgs and msgs[0].role == "system":
        return (Message("system", msgs[0].content.rstrip() + "\n\n" + instruction),) + tuple(msgs[1:])
    return (Message("system", instruction),) + tuple(msgs)


@dataclass(frozen=True)
class Blocks:
    """The fenced blocks of a text: ``open_code`` is an unclosed python block at its end (None if there is
    none); ``last_closed`` is the last closed python block and ``tail`` what follows it."""

    open_code: str | None
    last_closed: str | None
    tail: str


def scan_blocks(text: str) -> Blocks:
    lang: str | None = None
    body: list[str] = []
    last_closed: str | None = None
    tail_lines: list[str] = []
    for line in text.split("\n"):
        m = _FENCE.match(line)
        if lang is None:
            if m:
                lang, body = m.group(1).lower(), []
            tail_lines.append(line)
            continue
        if m and not m.group(1):
            if lang in _PY_LANGS:
                last_closed, tail_lines = "\n".join(body), []
            else:
                tail_lines.append(line)
            lang = None
            continue
        body.append(line)
        tail_lines.append(line)
    open_code = "\n".join(body) if lang in _PY_LANGS else None
    return Blocks(open_code=open_code, last_closed=last_closed, tail="\n".join(tail_lines))


def code_to_run(segment_text: str, full_text: str, finish_reason: str) -> tuple[str, str] | None:
    """The code a generation stopped to have run, and the text to keep with its fence closed; None when the
    generation did not stop at a code block (it answered, ran out of tokens, or hit end-of-text elsewhere).

    ``full_text`` is the assistant turn so far, ending with ``segment_text`` (this round's generation)."""
    if finish_reason != "stop":
        return None
    blocks = scan_blocks(full_text)
    if blocks.open_code is not None:
        # cut at the closing fence (the stop string), or the model ended its turn inside the block
        if not blocks.open_code.strip():
            return None
        return blocks.open_code, full_text + CLOSE_FENCE
    # stopped at "```output" right after a closed block written in this round
    if blocks.last_closed is not None and not blocks.tail.strip() and blocks.last_closed in segment_text \
            and blocks.last_closed.strip():
        return blocks.last_closed, full_text if full_text.endswith("\n") else full_text + "\n"
    return None


def format_output(r: SandboxResult, *, max_chars: int, timeout_seconds: float) -> str:
    """What the model is shown of a run: its stdout (cut to ``max_chars`` with a marker) and, when it failed,
    the last line of the traceback or the limit that stopped it."""
    out = r.stdout
    if len(out) > max_chars:
        out = out[:max_chars] + f"\n... (output cut: {len(r.stdout) - max_chars} more characters)"
    notes = []
    if r.timed_out:
        notes.append(f"TimeoutError: the program ran longer than {timeout_seconds:g} seconds and was stopped")
    elif r.killed_reason == "cpu":  # a busy loop meets the CPU limit (= the timeout here) as often as the clock
        notes.append("TimeoutError: the program used more CPU time than allowed and was stopped")
    elif r.killed_reason == "memory":
        notes.append("MemoryError: the program used more memory than allowed")
    elif r.killed_reason in ("file_size", "signal", "sandbox"):
        notes.append(f"the program was stopped ({r.killed_reason})")
    elif r.exit_code not in (0, None):
        last = next((ln for ln in reversed(r.stderr.splitlines()) if ln.strip()), "")
        notes.append(last or f"the program exited with status {r.exit_code}")
    return "\n".join(x for x in [out.rstrip("\n"), *notes] if x)


class CodeKnobs(Protocol):
    """The knobs the code-running strategies (``Pal``, ``ScTir``) share, read by ``check_code_knobs`` and
    ``sandbox_for``."""

    @property
    def n_samples(self) -> int: ...
    @property
    def top_p(self) -> float: ...
    @property
    def max_tokens(self) -> int: ...
    @property
    def code_timeout_seconds(self) -> float: ...
    @property
    def code_memory_mb(self) -> int: ...
    @property
    def sandbox_workers(self) -> int: ...


def check_code_knobs(knobs: CodeKnobs) -> None:
    """The knob checks ``Pal`` and ``ScTir`` share (called from ``__post_init__``); temperature rules differ."""
    check_int("n_samples", knobs.n_samples)
    check_top_p(knobs.top_p)
    check_int("max_tokens", knobs.max_tokens)
    timeout_seconds, memory_mb, workers = knobs.code_timeout_seconds, knobs.code_memory_mb, knobs.sandbox_workers
    if not timeout_seconds > 0 or timeout_seconds != timeout_seconds or timeout_seconds == float("inf"):
        raise ValueError(f"code_timeout_seconds must be a finite number > 0, got {timeout_seconds!r}")
    if memory_mb < 256:
        raise ValueError(f"code_memory_mb must be >= 256 (numpy and sympy are loaded), got {memory_mb!r}")
    check_int("sandbox_workers", workers)


def sandbox_limits(knobs: CodeKnobs) -> Limits:
    """The per-run limits the knobs ask for (wall and CPU seconds, address space); the rest are ``Limits``'s."""
    timeout_seconds = knobs.code_timeout_seconds
    return Limits(timeout_seconds=timeout_seconds, cpu_seconds=timeout_seconds, memory_bytes=knobs.code_memory_mb << 20)
