"""Generative selection: show the model the distinct candidate answers, each with a short rationale, and ask which
one is right (list-wise, as in GenSelect). The prompt and the reading of the reply live here, once; the ``genselect``
strategy (``thinkscale.strategies.genselect``) calls the model with them, and ``bench/genselect_select.py`` on a
run's stored chains.

Toshniwal et al., "GenSelect: A Generative Approach to Best-of-N", https://arxiv.org/abs/2507.17797.

Each distinct normalised answer is one option, represented by its first chain in draw order; options are lettered
in the order of their vote counts (most first, ties by first appearance), so a reply the model cannot decide falls
on the plurality answer no more than a careless reader would. The rationale is the tail of the representative
chain (the last ``rationale_chars`` characters, cut at a line start where one is near): the final computation and
the answer, which is what decides correctness on short arithmetic chains.
"""

from __future__ import annotations

import enum
import re
import string
from collections.abc import Sequence
from dataclasses import dataclass

from thinkscale.answers.extract import normalize_answer
from thinkscale.types import Candidate, Message, Problem
from thinkscale.verifiers.base import problem_text

LETTERS = string.ascii_uppercase
MAX_OPTIONS = len(LETTERS)

INSTRUCTION = (
    "Below is a problem and {n} candidate solutions, each ending in a different final answer. Exactly one of them "
    "may be correct. Check each one's reasoning and arithmetic against the problem.")
QUESTION_DIRECT = "Which candidate's final answer is correct? Reply with its letter only."
QUESTION_REASON = ("Which candidate's final answer is correct? Check them briefly, then end with the line "
                   "\"The correct candidate is X\" where X is its letter.")
PREFILL = "The correct candidate is"


class Mode(enum.StrEnum):
    """``direct``: the reply is prefilled up to the letter (a few tokens); ``reason``: the model checks the
    candidates first, then names one (its last "candidate X" counts)."""

    DIRECT = "direct"
    REASON = "reason"


@dataclass(frozen=True)
class Option:
    """One distinct answer: its normalised form, the candidates that gave it (indices) and the one shown."""

    answer: str
    members: tuple[int, ...]

    @property
    def shown(self) -> int:
        return self.members[0]


def options(candidates: Sequence[Candidate], pool: Sequence[int] | None = None) -> list[Option]:
    """The distinct normalised answers among ``pool`` (default all candidates), most voted first (ties: first
    appearance); candidates with no answer are left out."""
    members: dict[str, list[int]] = {}
    for i in (range(len(candidates)) if pool is None else pool):
        key = None if candidates[i].answer is None else normalize_answer(candidates[i].answer)
        if key is not None:
            members.setdefault(key, []).append(i)
    order = sorted(members, key=lambda a: -len(members[a]))  # stable: first appearance breaks ties
    return [Option(a, tuple(members[a])) for a in order]


def rationale(text: str, chars: int) -> str:
    """The tail of a solution: its last ``chars`` characters, starting at a line start when one lies in the
    first quarter of that window (so a number is not cut in half), marked as cut."""
    text = text.strip()
    if len(text) <= chars:
        return text
    tail = text[-chars:]
    nl = tail.find("\n")
    if 0 <= nl < chars // 4:
        tail = tail[nl + 1:]
    return "... " + tail.lstrip()


def messages(problem: Problem, candidates: Sequence[Candidate], opts: Sequence[Option], mode: Mode,
             rationale_chars: int) -> tuple[Message, ...]:
    """The selection prompt: the problem's system messages, one user turn with the problem and the lettered
    options, and in ``direct`` mode the assistant's reply prefilled up to the letter."""
    if not 2 <= len(opts) <= MAX_OPTIONS:
        raise ValueError(f"generative selection needs 2 to {MAX_OPTIONS} distinct answers, got {len(opts)}")
    blocks = [f"Candidate {LETTERS[j]} (final answer: {o.answer}):\n"
              + rationale(candidates[o.shown].text, rationale_chars) for j, o in enumerate(opts)]
    question = QUESTION_DIRECT if mode is Mode.DIRECT else QUESTION_REASON
    user = (INSTRUCTION.format(n=len(opts)) + "\n\nProblem:\n" + problem_text(problem) + "\n\n" + "\n\n".join(blocks)
            + "\n\n" + question)
    out = (*(m for m in problem.messages if m.role == "system"), Message("user", user))
    return (*out, Message("assistant", PREFILL)) if mode is Mode.DIRECT else out


_NAMED = re.compile(r"[Cc]andidate(?:\s+is)?[\s:*(\[]*([A-Z])\b")  # "Candidate B", "candidate is **B**"
_BARE = re.compile(r"^[\s:*(\[]*([A-Z])\b")
_BOXED = re.compile(r"\\boxed\{\s*(?:\\text\{\s*)?(?:[Cc]andidate\s*)?([A-Z])\s*\}")  # \boxed{B}, \boxed{\text{B}}


_NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?")


def parse_choice(reply: str, answers: Sequence[str], mode: Mode) -> int | None:
    """The option (0-based) the reply names, or None when it names none. ``answers``: the options' normalised
    answers in letter order. ``direct``: the first letter after the prefill (``" B"``, ``" Candidate B"``,
    ``": (B)"``, a ``\\boxed{B}`` in the few tokens of the reply); ``reason``: the last "candidate X" (or
    "candidate is X", or ``\\boxed{X}``). Letters are upper case (a lower-case "a" is an article). A reply with no
    letter that states exactly one option's answer (small models often write " 32." instead of the letter) names
    that option."""
    valid = LETTERS[:len(answers)]
    if mode is Mode.DIRECT:
        m = _BARE.match(reply) or _NAMED.match(reply.strip()) or _BOXED.search(reply)
        letter = m.group(1) if m else None
    else:
        found = [(m.start(), m.group(1)) for rx in (_NAMED, _BOXED) for m in rx.finditer(reply) if m.group(1) in valid]
        letter = max(found)[1] if found else None
    if letter is not None and letter in valid:
        return valid.index(letter)
    stated = {normalize_answer(x.replace(",", "")) for x in _NUMBER.findall(reply)}
    named = [j for j, a in enumerate(answers) if a in stated]
    return named[0] if len(named) == 1 else None
