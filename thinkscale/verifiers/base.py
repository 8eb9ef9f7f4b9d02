"""The Verifier protocol, the verifier registry, and the helpers every verifier shares.

A verifier scores a batch of candidates for one problem: ``score(problem, candidates, *, ledger)`` returns one tuple
per candidate, in order, of scores in [0, 1]: one score for an outcome verifier, one per step for a process
verifier (a PRM). Every model call a verifier makes is charged to ``ledger`` under ``Role.VERIFIER``, and it says
beforehand how many calls scoring a batch may take at most (``max_calls(candidates)``): that is what lets a run
keep a call budget with any verifier, a user's own object included (``BestOfN(verifier=MyVerifier())``). A verifier
that reads the generator's token logprobs says so with ``reads_logprobs = True`` (they are then requested).

String specs (``verifier=pyes``, ``verifier=prm`` with ``verifier_path=FILE``) are checked by
``check_verifier_spec`` when a strategy is built and turned into objects by ``resolve_verifier``, on the run's
backend, by the run context: the one resolver the CLI, the server and the eval harness share.

Verifiers that read ``Problem.reference`` (the answer key) are for evaluation only. They declare
``uses_reference = True``, cannot be built without ``eval_mode=True``, and ``build_verifier`` refuses them in
``Mode.SOLVE``; a strategy passes its verifier through ``require_solve_safe`` so none can choose answers with the key.

    from thinkscale.verifiers import build_verifier
    v = build_verifier("pyes", backend=backend)
    scores = v.score(problem, candidates, ledger=ledger)   # [(0.91,), (0.12,), ...]
"""

from __future__ import annotations

import enum
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol, runtime_checkable

from thinkscale.types import Candidate, Ledger, Problem


class VerifierError(RuntimeError):
    """A verifier could not score (a bad answer from a PRM server, a model that does not match a trained head)."""


class VerifierKind(enum.StrEnum):
    OUTCOME = "outcome"  # one score per candidate
    PROCESS = "process"  # one score per step


class Mode(enum.StrEnum):
    """Where a verifier is used: choosing answers (``solve``) or grading them afterwards (``eval``)."""

    SOLVE = "solve"
    EVAL = "eval"


@runtime_checkable
class Verifier(Protocol):
    name: ClassVar[str]
    kind: ClassVar[VerifierKind]
    uses_reference: ClassVar[bool]

    def score(self, problem: Problem, candidates: Sequence[Candidate], *,
              ledger: Ledger) -> list[tuple[float, ...]]: ...

    def max_calls(self, candidates: Sequence[Candidate]) -> int:
        """The most backend calls ``score(candidates)`` may charge (0 for a verifier that calls no model)."""
        ...


def reads_logprobs(verifier: Verifier) -> bool:
    """Whether ``verifier`` scores a chain from the generator's token logprobs (optional ``reads_logprobs``)."""
    return bool(getattr(verifier, "reads_logprobs", False))


@dataclass(frozen=True)
class VerifierInfo:
    """A registered verifier: ``path_option`` is the factory option a strategy's ``verifier_path`` knob fills (a
    trained head's file, a server's URL; None: it takes none) and ``path_required`` whether it must be given;
    ``needs_backend``: the factory takes the run's backend as ``backend=``."""

    name: str
    factory: Callable[..., Verifier]
    kind: VerifierKind
    uses_reference: bool
    summary: str
    path_option: str | None = None
    path_required: bool = False
    needs_backend: bool = False
    reads_logprobs: bool = False


REGISTRY: dict[str, VerifierInfo] = {}


def register(name: str, summary: str, *, factory: str | None = None, path_option: str | None = None,
             path_required: bool | None = None, needs_backend: bool = False) -> Callable[[type], type]:
    """Class decorator: register a verifier under ``name``; its ``kind`` and ``uses_reference`` are read from it.
    ``factory`` names a classmethod that builds it from options (e.g. ``"load"`` for a saved model), else the class
    itself is called. ``path_option``: the option ``verifier_path`` fills (required unless ``path_required=False``);
    ``needs_backend``: the factory takes ``backend=``."""

    def deco(cls: type) -> type:
        if name in REGISTRY:
            raise ValueError(f"verifier {name!r} registered twice")
        cls.name = name  # type: ignore[attr-defined]
        build = getattr(cls, factory) if factory else cls
        REGISTRY[name] = VerifierInfo(name, build, cls.kind, bool(cls.uses_reference), summary,  # type: ignore[attr-defined]
                                      path_option, path_option is not None if path_required is None else path_required,
                                      needs_backend, bool(getattr(cls, "reads_logprobs", False)))
        return cls

    return deco


def _load_all() -> None:
    # Importing the modules registers them; one place lists them all.
    from thinkscale.verifiers import confidence, llm_judge, orm, prm, task, trained_prm  # noqa: F401


def get_verifier(name: str) -> VerifierInfo:
    _load_all()
    try:
        return REGISTRY[name]
    except KeyError:
        raise ValueError(f"unknown verifier {name!r}; choose one of: {', '.join(sorted(REGISTRY))}") from None


def verifier_names() -> list[str]:
    _load_all()
    return sorted(REGISTRY)


def build_verifier(name: str, *, mode: Mode = Mode.SOLVE, **options: Any) -> Verifier:
    """Build the verifier registered as ``name`` with its options (e.g. ``backend=`` for ``pyes``).

    In ``Mode.SOLVE`` (the default) a verifier that reads the reference answer is refused; in ``Mode.EVAL`` it is
    built with ``eval_mode=True``."""
    info = get_verifier(name)
    mode = Mode(mode)
    if info.uses_reference:
        if mode is Mode.SOLVE:
            raise ValueError(f"verifier {name!r} reads the reference answer: it grades results (Mode.EVAL) and "
                             "can never choose answers at solve time")
        options = {**options, "eval_mode": True}
    return info.factory(**options)


def require_solve_safe(verifier: Verifier) -> Verifier:
    """What a strategy calls on the verifier it is given: refuse one that reads the reference answer, or that is no
    verifier (no ``score``, or no ``max_calls`` to keep a budget with)."""
    for method in ("score", "max_calls"):
        if not callable(getattr(verifier, method, None)):
            raise ValueError(f"{type(verifier).__name__} is not a verifier: it has no {method}() "
                             "(see thinkscale.verifiers.base.Verifier)")
    if getattr(verifier, "uses_reference", True):
        raise ValueError(f"{type(verifier).__name__} reads the reference answer (or does not say it does not): "
                         "it may grade results in eval mode but must not choose answers")
    return verifier


def check_verifier_spec(verifier: str, verifier_path: str | None) -> VerifierInfo:
    """Refuse at construction what can never build: an unknown verifier, one that reads the answer key, a
    ``verifier_path`` the verifier does not take or one it needs that is missing."""
    info = get_verifier(verifier)  # ValueError listing the names
    if info.uses_reference:
        raise ValueError(f"verifier {verifier!r} reads the reference answer: it grades results in evaluation and "
                         "cannot choose answers or guide a search")
    if verifier_path is not None and info.path_option is None:
        raise ValueError(f"verifier {verifier!r} takes no file or URL: drop verifier_path={verifier_path!r}")
    if verifier_path is None and info.path_required:
        raise ValueError(f"verifier {verifier!r} needs a {info.path_option}: set the verifier_path knob")
    return info


def resolve_verifier(verifier: str, verifier_path: str | None, backend: Any) -> Verifier:
    """The verifier a spec names, built on ``backend`` (the one place specs become objects)."""
    info = check_verifier_spec(verifier, verifier_path)
    options: dict[str, Any] = {}
    if info.path_option is not None and verifier_path is not None:
        options[info.path_option] = verifier_path
    if info.needs_backend:
        options["backend"] = backend
    return require_solve_safe(build_verifier(verifier, **options))


# ---------------------------------------------------------------------- problems and steps

DEFAULT_STEP_SEPARATOR = r"\n[ \t]*\n"  # a blank line (whitespace-only lines count as blank)


def problem_text(problem: Problem) -> str:
    """The problem statement as the user wrote it: the user messages (system prompts left out), blank-line joined."""
    return "\n\n".join(m.content for m in problem.messages if m.role == "user")


def split_steps(text: str, separator: str = DEFAULT_STEP_SEPARATOR) -> tuple[str, ...]:
    """Split a solution into steps on ``separator`` (a regex; default: blank lines). Steps are stripped and empty
    ones dropped, so ``"a\\n\\n\\n\\nb"`` is two steps. A text with no non-blank content has no steps."""
    return tuple(s.strip() for s in re.split(separator, text) if s.strip())


def candidate_steps(candidate: Candidate, separator: str = DEFAULT_STEP_SEPARATOR) -> tuple[str, ...]:
    """The candidate's own ``steps`` when a step-level strategy built it, else its text split on ``separator``.
    A candidate with an empty text still has one (empty) step, so a process verifier returns one score for it."""
    if candidate.steps:
        return candidate.steps
    return split_steps(candidate.text, separator) or ("",)


def step_prefixes(steps: Sequence[str], joiner: str = "\n\n") -> list[str]:
    """The partial solutions a process verifier scores: steps 1..i joined, for every i."""
    return [joiner.join(steps[: i + 1]) for i in range(len(steps))]


def check_scores(scores: Sequence[Sequence[float]], candidates: Sequence[Candidate], who: str) -> None:
    """Every verifier's output contract: one tuple per candidate, each score a number in [0, 1]."""
    if len(scores) != len(candidates):
        raise VerifierError(f"{who} returned {len(scores)} score tuples for {len(candidates)} candidates")
    for i, row in enumerate(scores):
        if not row:
            raise VerifierError(f"{who} returned no score for candidate {i}")
        for s in row:
            if not (isinstance(s, (int, float)) and 0.0 <= s <= 1.0):
                raise VerifierError(f"{who} returned score {s!r} for candidate {i}; scores must be in [0, 1]")
