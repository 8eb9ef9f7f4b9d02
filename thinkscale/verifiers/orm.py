"""An outcome reward model trained here: a calibrated logistic head on the policy model's own hidden states.

A candidate's feature row is the model's final hidden state (``backend.hidden_states``: after the output norm, the LM
head's input) read at the end of one or more *views* of the candidate, side by side (``FeatureSpec``):

- ``chain``: the solution as the assistant's reply to the problem, read at its last token;
- ``steps``: the mean of the hidden states at the end of each step of the solution (its text up to each blank line,
  and the whole text; at most ``max_steps`` of them, evenly spread): a pooled view of the whole chain;
- ``question``: the same conversation followed by a verification question as the next user turn and the first words
  of the reply (``"Check the solution above. Is its final answer correct?"``, then ``"The final answer is"``),
  read at the last of those words, where the model is about to say "correct" or "incorrect".

The head maps the row to P(the candidate's final answer is right); it was fitted on chains the policy sampled on
GSM8K *train* problems, graded by the answer checker, split by problem, and calibrated (``thinkscale.verifiers.
orm_train``). Scoring a batch costs one ``hidden_states`` call with one request per view per candidate (per step for
``steps``), charged to ``Role.VERIFIER``. The requests of one candidate share its prefix, and on the generator's own
backend the chain's tokens are usually still in the KV cache, so each view computes only its own few tokens (the
question view ~25, a step end ~1).

The file is JSON (no pickle: loading it runs no code), like the trained PRM's: the head, the feature spec, and how it
was made (model fingerprint, data and its sha256, problems, chains, split, held-out AUROC, the learning curve). It
loads only on the model it was fitted on. The default model's head ships with the package (``orm_default.json``),
so ``weighted-sc:verifier=orm`` needs no path; ``verifier_path`` names another file.

    orm = TrainedORM.load(None, backend)          # the packaged head; refuses another model
    orm.score(problem, candidates, ledger=ledger)  # [(0.81,), (0.07,), ...]

Cobbe et al., "Training Verifiers to Solve Math Word Problems" (outcome verifiers), https://arxiv.org/abs/2110.14168
"""

from __future__ import annotations

import enum
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from thinkscale.types import Candidate, Ledger, Message, Problem, Role, ScoreRequest
from thinkscale.verifiers.base import DEFAULT_STEP_SEPARATOR, VerifierError, VerifierKind, register
from thinkscale.verifiers.trained_prm import (
    FeatureBackend,
    LogisticHead,
    check_head_backend,
    read_head_file,
    write_head_file,
)

FORMAT = "thinkscale-orm/1"
DEFAULT_FILE = "orm_default.json"
DEFAULT_QUESTION = "Check the solution above. Is its final answer correct?"
DEFAULT_LEAD = "The final answer is"


class View(enum.StrEnum):
    CHAIN = "chain"  # the last token of the solution
    STEPS = "steps"  # the mean over the step ends of the solution
    QUESTION = "question"  # the last token of the verification question's reply lead


def step_ends(text: str, separator: str = DEFAULT_STEP_SEPARATOR, max_steps: int = 16) -> list[int]:
    """Where the solution's steps end: before each separator (a blank line) and at the end of the text, skipping
    ends with no text before them; at most ``max_steps``, evenly spread and always with the last. The prefixes are
    cut from the text as generated (not re-joined), so their tokens match the solution's."""
    # each end is where the text before a separator stops (trailing blanks dropped: a run of blank lines is one end)
    ends = sorted({len(text[:m.start()].rstrip()) for m in re.finditer(separator, text)} - {0} | {len(text)})
    if len(ends) > max_steps:
        ends = [ends[round(i * (len(ends) - 1) / (max_steps - 1))] for i in range(max_steps)]
    return ends


@dataclass(frozen=True)
class FeatureSpec:
    """Which hidden states make a candidate's feature row (see the module docstring). Saved with the head: scoring
    builds exactly the requests training read."""

    views: tuple[View, ...] = (View.CHAIN, View.QUESTION)
    question: str = DEFAULT_QUESTION
    lead: str = DEFAULT_LEAD
    max_steps: int = 16

    def __post_init__(self) -> None:
        views = tuple(View(v) for v in self.views)
        if not views or len(set(views)) != len(views):
            raise ValueError(f"views must be one or more distinct views, got {list(self.views)}")
        if not self.question.strip() or not self.lead.strip():
            raise ValueError("the verification question and its reply lead must be non-empty")
        if self.max_steps < 2:
            raise ValueError(f"max_steps must be >= 2, got {self.max_steps}")
        object.__setattr__(self, "views", views)

    def view_requests(self, view: View, messages: Sequence[Message], text: str) -> list[ScoreRequest]:
        """The hidden-state requests of one view of a solution ``text`` to the problem ``messages`` (several for
        ``steps``, whose vectors are averaged; its last is the ``chain`` request)."""
        if view is View.CHAIN:
            return [ScoreRequest(messages=tuple(messages), continuation=text or " ")]
        if view is View.STEPS:
            return [ScoreRequest(messages=tuple(messages), continuation=text[:e] or " ")
                    for e in step_ends(text, max_steps=self.max_steps)]
        # the solution exactly as generated (not stripped), so its tokens match the generator's cached ones
        return [ScoreRequest(messages=(*messages, Message("assistant", text), Message("user", self.question)),
                             continuation=self.lead)]

    def requests(self, messages: Sequence[Message], text: str) -> list[ScoreRequest]:
        """Every request of a candidate, view by view (``rows`` turns their vectors into its feature row)."""
        return [r for v in self.views for r in self.view_requests(v, messages, text)]

    def rows(self, vectors: np.ndarray, texts: Sequence[str]) -> np.ndarray:
        """The hidden states of ``requests`` for each text, in order, as one feature row per text: each view's
        vector (the mean for ``steps``), side by side in ``views`` order."""
        vectors = np.asarray(vectors, dtype=np.float32)
        counts = [len(self.view_requests(v, (), t)) for t in texts for v in self.views]
        if vectors.shape[0] != sum(counts):
            raise VerifierError(f"expected {sum(counts)} hidden states, got {vectors.shape[0]}")
        bounds = np.cumsum([0, *counts])
        pooled = [vectors[bounds[i]:bounds[i + 1]].mean(axis=0) for i in range(len(counts))]
        return np.asarray(pooled, dtype=np.float32).reshape(len(texts), -1)

    def to_dict(self) -> dict[str, Any]:
        return {"views": [str(v) for v in self.views], "question": self.question, "lead": self.lead,
                "max_steps": self.max_steps}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> FeatureSpec:
        return cls(tuple(View(v) for v in d["views"]), d["question"], d["lead"], int(d.get("max_steps", 16)))

    def describe(self) -> str:
        parts = {View.CHAIN: "the last token of the solution (the assistant's reply)",
                 View.STEPS: f"the end of each blank-line step of the solution (at most {self.max_steps}), averaged",
                 View.QUESTION: f"the last token of {self.lead!r} replying to the next user turn {self.question!r}"}
        return ("final hidden state (after the output norm) at " + "; and at ".join(parts[v] for v in self.views)
                + "; concatenated in that order")


def default_path() -> Path:
    """The head shipped with the package (fitted on the default model)."""
    return Path(str(resources.files("thinkscale.verifiers").joinpath(DEFAULT_FILE)))


@register("orm", "an outcome head trained here on the policy model's hidden states (thinkscale train orm); the "
          "default model's head ships with the package", factory="load", path_option="path", path_required=False,
          needs_backend=True)
@dataclass(frozen=True)
class TrainedORM:
    """Args:
        backend: computes the hidden states; must be the model the head was fitted on (same fingerprint).
        head: the fitted, calibrated head.
        spec: the views whose hidden states make a feature row (as in training).
        metadata: how it was made (see ``orm_train.fit_orm``); saved with it.
    """

    kind: ClassVar[VerifierKind] = VerifierKind.OUTCOME
    uses_reference: ClassVar[bool] = False

    backend: FeatureBackend = field(repr=False)
    head: LogisticHead = field(repr=False)
    spec: FeatureSpec = FeatureSpec()
    metadata: dict[str, Any] = field(default_factory=dict, repr=False)

    def max_calls(self, candidates: Sequence[Candidate]) -> int:
        return sum(len(self.spec.requests((), c.text)) for c in candidates)  # one per hidden-state request

    def features(self, problem: Problem, candidates: Sequence[Candidate], *, ledger: Ledger) -> np.ndarray:
        """One feature row per candidate (one batched ``hidden_states`` call, charged to ``Role.VERIFIER``)."""
        requests = [r for c in candidates for r in self.spec.requests(problem.messages, c.text)]
        hidden = self.backend.hidden_states(requests)
        ledger.charge(Role.VERIFIER, hidden.usage)
        return self.spec.rows(hidden.vectors, [c.text for c in candidates])

    def score(self, problem: Problem, candidates: Sequence[Candidate], *, ledger: Ledger) -> list[tuple[float, ...]]:
        if not candidates:
            return []
        probs = self.head.predict(self.features(problem, candidates, ledger=ledger))
        return [(float(p),) for p in probs]

    # ------------------------------------------------------------------ files

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the head, its feature spec and its metadata as JSON (atomically)."""
        write_head_file(path, {"format": FORMAT, "features": self.spec.to_dict(), "metadata": self.metadata,
                               "head": self.head.to_dict()})

    @staticmethod
    def read(path: str | os.PathLike[str] | None = None) -> dict[str, Any]:
        """The saved file (default: the packaged one) as a dict, without a backend: for reports."""
        path = default_path() if path is None else Path(path)
        return read_head_file(path, FORMAT, "ORM", f"thinkscale train orm --out {path}")

    @classmethod
    def load(cls, path: str | os.PathLike[str] | None = None, *, backend: FeatureBackend,
             check_model: bool = True) -> TrainedORM:
        """Load a saved ORM (default: the packaged head) onto ``backend``. Refuses (VerifierError) a backend whose
        model fingerprint differs from the one the head was fitted on, unless ``check_model=False``, and a backend
        that cannot return hidden states."""
        where = default_path() if path is None else Path(path)
        payload = cls.read(where)
        spec = FeatureSpec.from_dict(payload["features"])
        meta = payload.get("metadata", {})
        caps = getattr(backend, "capabilities", None)
        if caps is not None and not caps.hidden_states:
            raise VerifierError(f"{type(backend).__name__} cannot return hidden states, which the ORM's features are; "
                                "use the embedded llama.cpp backend")
        check_head_backend(meta, backend, where, per="candidate", states=len(spec.views), check_model=check_model)
        return cls(backend=backend, head=LogisticHead.from_dict(payload["head"]), spec=spec, metadata=meta)
