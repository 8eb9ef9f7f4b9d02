"""A process reward model trained here: a logistic-regression head on the policy model's own hidden states.

The feature of step ``i`` of a solution is the model's final hidden state (``backend.hidden_states``: after the output
norm, the LM head's input) at the last token of the partial solution "steps 1..i" written as the assistant's reply to
the problem. The head maps it to P(a completion from here reaches the right answer) (Math-Shepherd labels, see
``thinkscale.verifiers.prm_train``). Scoring a batch costs one ``hidden_states`` call (prefixes of one solution share
their KV, so a solution's steps cost about its length), charged to ``Role.VERIFIER``.

The file is JSON (no pickle: loading a PRM runs no code): the head's numbers and the metadata of how it was made:
model fingerprint, data, label statistics, feature dimension, the train/held-out split by problem, held-out AUROC.
The head only fits the model whose hidden states it was trained on: ``load`` refuses a backend with another
fingerprint.

    prm = TrainedPRM.load("prm.json", backend)
    prm.score(problem, candidates, ledger=ledger)   # [(0.71, 0.64, 0.80), (0.32, 0.15), ...] one per step

Wang et al., "Math-Shepherd: Verify and Reinforce LLMs Step-by-step without Human Annotations",
https://arxiv.org/abs/2312.08935
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Protocol, runtime_checkable

import numpy as np

from thinkscale.backends.base import Backend, HiddenStates
from thinkscale.types import Candidate, Ledger, Problem, Role, ScoreRequest
from thinkscale.verifiers.base import (
    DEFAULT_STEP_SEPARATOR,
    VerifierError,
    VerifierKind,
    register,
    step_prefixes,
)
from thinkscale.verifiers.prm import StepScoring

FORMAT = "thinkscale-prm/1"


@runtime_checkable
class FeatureBackend(Backend, Protocol):
    """A backend that can also return hidden states (``capabilities.hidden_states``)."""

    def hidden_states(self, requests: Sequence[ScoreRequest]) -> HiddenStates: ...


def auroc(labels: Sequence[int] | np.ndarray, scores: Sequence[float] | np.ndarray) -> float:
    """Area under the ROC curve: P(score of a random positive > score of a random negative), ties counting 1/2
    (the Mann-Whitney U statistic over n_pos * n_neg, with average ranks for tied scores)."""
    y = np.asarray(labels).astype(bool)
    s = np.asarray(scores, dtype=np.float64)
    if y.shape != s.shape or y.ndim != 1:
        raise ValueError(f"labels and scores must be 1-D and the same length, got {y.shape} and {s.shape}")
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    if n_pos == 0 or n_neg == 0:
        raise ValueError(f"AUROC needs both classes; got {n_pos} positive and {n_neg} negative")
    order = np.argsort(s, kind="mergesort")
    ranks = np.empty(len(s), dtype=np.float64)
    sorted_s = s[order]
    i = 0
    while i < len(s):  # average rank (1-based) over each run of equal scores
        j = i
        while j + 1 < len(s) and sorted_s[j + 1] == sorted_s[i]:
            j += 1
        ranks[order[i:j + 1]] = (i + j) / 2 + 1
        i = j + 1
    u = ranks[y].sum() - n_pos * (n_pos + 1) / 2
    return float(u / (n_pos * n_neg))


@dataclass(frozen=True)
class LogisticHead:
    """``sigmoid(((x - mean) / scale) @ coef + intercept)``. Fitted with scikit-learn, applied with numpy."""

    mean: np.ndarray
    scale: np.ndarray
    coef: np.ndarray
    intercept: float
    c: float = 1.0

    @property
    def dim(self) -> int:
        return int(self.coef.shape[0])

    def predict(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, dtype=np.float64)
        if x.ndim != 2 or x.shape[1] != self.dim:
            raise VerifierError(f"the head takes {self.dim} features per row, got shape {x.shape}")
        z = ((x - self.mean) / self.scale) @ self.coef + self.intercept
        return 1.0 / (1.0 + np.exp(-np.clip(z, -500, 500)))

    @classmethod
    def fit(cls, x: np.ndarray, soft_labels: np.ndarray, *, c: float = 1.0, seed: int = 0) -> LogisticHead:
        """Fit on soft labels in [0, 1] (the fraction of rollouts that reached the answer): each step appears once as
        a positive with weight p and once as a negative with weight 1 - p, which is exactly the cross-entropy
        against the soft target. Features are standardised first; ``c`` is the inverse L2 strength."""
        from sklearn.linear_model import LogisticRegression

        x = np.asarray(x, dtype=np.float64)
        p = np.asarray(soft_labels, dtype=np.float64)
        if x.ndim != 2 or len(x) != len(p) or len(p) == 0:
            raise ValueError(f"need one feature row per label, got {x.shape} and {p.shape}")
        if np.any((p < 0) | (p > 1)):
            raise ValueError("soft labels must be in [0, 1]")
        if p.max() == 0 or p.min() == 1:
            raise ValueError(f"all {len(p)} labelled steps have label {p[0]:g}: a head cannot learn from one class; "
                             "use more problems or more rollouts")
        mean = x.mean(axis=0)
        scale = x.std(axis=0)
        scale[scale == 0] = 1.0
        xs = (x - mean) / scale
        model = LogisticRegression(C=c, max_iter=5000, random_state=seed)
        if np.all((p == 0) | (p == 1)):  # hard labels (an ORM's): the same objective without doubling the rows
            model.fit(xs, p.astype(int))
        else:
            model.fit(np.vstack([xs, xs]), np.r_[np.ones(len(p)), np.zeros(len(p))], sample_weight=np.r_[p, 1 - p])
        return cls(mean, scale, model.coef_[0].astype(np.float64), float(model.intercept_[0]), c)

    def to_dict(self) -> dict[str, Any]:
        return {"kind": "logistic", "c": self.c, "intercept": self.intercept, "mean": self.mean.tolist(),
                "scale": self.scale.tolist(), "coef": self.coef.tolist()}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> LogisticHead:
        if d.get("kind") != "logistic":
            raise VerifierError(f"unknown head kind {d.get('kind')!r}")
        mean, scale, coef = (np.asarray(d[k], dtype=np.float64) for k in ("mean", "scale", "coef"))
        if not mean.shape == scale.shape == coef.shape or mean.ndim != 1:
            raise VerifierError("corrupt head: mean, scale and coef differ in shape")
        return cls(mean, scale, coef, float(d["intercept"]), float(d.get("c", 1.0)))


@register("prm", "a PRM head trained here on the policy model's hidden states (thinkscale train prm)",
          factory="load", path_option="path", needs_backend=True)
@dataclass(frozen=True)
class TrainedPRM(StepScoring):
    """Args:
        backend: computes the hidden states; must be the model the head was trained on (same fingerprint).
        head: the fitted head.
        metadata: how it was made (see ``prm_train.train_prm``); saved with it.
        step_separator: regex that splits a candidate's text into steps when it has no ``steps``.
        joiner: how steps are joined into the partial solution whose hidden state is read (as in training).
    """

    kind: ClassVar[VerifierKind] = VerifierKind.PROCESS
    uses_reference: ClassVar[bool] = False

    backend: FeatureBackend = field(repr=False)
    head: LogisticHead = field(repr=False)
    metadata: dict[str, Any] = field(default_factory=dict, repr=False)
    step_separator: str = DEFAULT_STEP_SEPARATOR
    joiner: str = "\n\n"

    def max_calls(self, candidates: Sequence[Candidate]) -> int:
        return sum(len(s) for s in self.steps_of(candidates))  # one hidden-state request per step prefix

    def requests(self, problem: Problem, steps: Sequence[str]) -> list[ScoreRequest]:
        """The hidden-state requests of a solution's step prefixes (the problem's messages, then steps 1..i)."""
        return [ScoreRequest(messages=problem.messages, continuation=p or " ")
                for p in step_prefixes(steps, self.joiner)]

    def score_steps(self, problem: Problem, solutions: Sequence[Sequence[str]], *,
                    ledger: Ledger) -> list[tuple[float, ...]]:
        requests = [r for steps in solutions for r in self.requests(problem, steps)]
        if not requests:
            return [() for _ in solutions]
        hidden = self.backend.hidden_states(requests)
        ledger.charge(Role.VERIFIER, hidden.usage)
        probs = self.head.predict(hidden.vectors)
        out, i = [], 0
        for steps in solutions:
            out.append(tuple(float(p) for p in probs[i:i + len(steps)]))
            i += len(steps)
        return out

    # ------------------------------------------------------------------ files

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the head and its metadata as JSON (atomically: a crash never leaves half a file)."""
        write_head_file(path, {"format": FORMAT, "step_separator": self.step_separator, "joiner": self.joiner,
                               "metadata": self.metadata, "head": self.head.to_dict()})

    @staticmethod
    def read(path: str | os.PathLike[str]) -> dict[str, Any]:
        """The saved file as a dict (metadata and head), without a backend: for reports."""
        return read_head_file(path, FORMAT, "PRM", f"thinkscale train prm --out {path}")

    @classmethod
    def load(cls, path: str | os.PathLike[str], backend: FeatureBackend, *, check_model: bool = True) -> TrainedPRM:
        """Load a saved PRM onto ``backend``. Refuses (VerifierError) a backend whose model fingerprint differs from
        the one the head was trained on, unless ``check_model=False``."""
        payload = cls.read(path)
        head = LogisticHead.from_dict(payload["head"])
        meta = payload.get("metadata", {})
        check_head_backend(meta, backend, path, per="step", check_model=check_model)
        return cls(backend=backend, head=head, metadata=meta, step_separator=payload["step_separator"],
                   joiner=payload["joiner"])


# ---------------------------------------------------------------------- head files (the PRM's and the ORM's)

def write_head_file(path: str | os.PathLike[str], payload: dict[str, Any]) -> None:
    """Write a trained head's JSON file atomically (a crash never leaves half a file)."""
    path = Path(path)
    tmp = path.with_name(path.name + ".partial")
    tmp.write_text(json.dumps(payload, indent=1, allow_nan=False) + "\n")
    tmp.replace(path)


def read_head_file(path: str | os.PathLike[str], fmt: str, what: str, train_command: str) -> dict[str, Any]:
    """A trained head's JSON file as a dict, refused (VerifierError) unless it is a ``fmt`` file. JSON only: loading
    a head runs no code."""
    path = Path(path)
    if not path.is_file():
        raise VerifierError(f"no trained {what} at {path}: train one with `{train_command}`")
    try:
        payload = json.loads(path.read_text())
    except ValueError as e:
        raise VerifierError(f"{path} is not a thinkscale {what} file (not JSON: {e})") from e
    if not isinstance(payload, dict) or payload.get("format") != fmt:
        raise VerifierError(f"{path} is not a {fmt} file")
    return payload


def check_head_backend(meta: dict[str, Any], backend: Any, path: str | os.PathLike[str], *, per: str,
                       states: int = 1, check_model: bool = True) -> None:
    """Refuse (VerifierError) a backend other than the one whose hidden states the head was fitted on: another
    model fingerprint (unless ``check_model=False``), or another hidden-state width (a feature row is ``states``
    hidden states side by side)."""
    if check_model:
        want = meta.get("model", {}).get("fingerprint")
        have = backend.info().fingerprint
        if want != have:
            raise VerifierError(f"{path} was trained on the hidden states of model {want!r}, but the backend runs "
                                f"{have!r}; load it with that model (features do not transfer between models)")
    dim = meta.get("feature_dim")
    n_embd = getattr(backend, "n_embd", None)
    if dim is not None and n_embd is not None and int(dim) != states * int(n_embd):
        raise VerifierError(f"{path} expects {dim} features per {per}, the backend gives {states} x {n_embd}")


def finite_or_none(x: float | None) -> float | None:
    """JSON has no NaN: undefined metrics are stored as null."""
    return None if x is None or not math.isfinite(x) else float(x)
