"""The policy file: what the ``auto`` controller does after its first wave, per difficulty bin and token budget.

JSON, validated with pydantic (unknown keys are errors; a bad file's error names the field)::

    {"format": "thinkscale-policy/1",
     "sampling":   {"wave_size": 4, "temperature": 0.7, "top_p": 0.95, "max_tokens": 512},
     "difficulty": {"score": "agreement", "edges": [0.125, 0.375], "bins": ["easy", "medium", "hard"],
                    "confidence_window": 2048},
     "budgets": [{"max_completion_tokens": 4096,
                  "choices": {"easy": {"action": {"kind": "stop"}, "accuracy": 0.93, "mean_tokens": 610.0,
                                       "n_problems": 120, "why": "..."}, "medium": ..., "hard": ...}}, ...],
     "table": [{"bin": "easy", "max_completion_tokens": 4096, "action": "stop", "accuracy": 0.93,
                "mean_tokens": 610.0, "n_problems": 120}, ...],           # every action the fit compared
     "objective": "...", "tolerance": 0.005,
     "fitted_on": {"runs": [...], "dataset": "gsm8k-train", "problems": 200, "model": "...", ...},
     "fitted_at": "2025-01-01T00:00:00Z"}

With ``"score": "verifier"`` the difficulty also names the verifier (``"verifier": "orm"``, optionally
``"verifier_path"``) whose probability that the first wave's first chain is right gives the score ``1 - p``; with
``sampling.first_wave: 1`` and ``greedy_first`` that is the greedy chain alone, judged before anything else is drawn.

``sampling`` pins how the first wave and every continuation are drawn: the same requests as the self-consistency
run the policy was fitted on, so auto's chains are that run's chains (and can be replayed from its store). With
``greedy_first: true`` the first wave's first chain is the greedy chain instead (the greedy strategy's request, served
from the run's greedy units on replay) and the sampled chains follow it: the mode of the model is its best single
chain on small models (qwen2.5-coder-0.5b on GSM8K: greedy 0.29, one sampled chain 0.22), and it votes too.

Actions (``kind``): ``stop`` (answer with the first wave's vote); ``sample`` (continue the same seeded draw in waves
of ``wave_size`` up to ``max_samples`` chains in all, stopping early once Adaptive-Consistency's posterior reaches
``threshold``; ``threshold: null`` samples to ``max_samples``; with ``give_up_after``, also stopping once that many
chains are drawn and the leader holds at most ``give_up_share`` of them: futility, see
``thinkscale.strategies.adaptive_sc.vote_is_futile``); ``strategy`` (run the strategy ``spec``, checked with
``build_strategy``, on what is left of the budget; its answer is auto's).

The budget row used for a run is the largest ``max_completion_tokens`` not above the run's token budget (the
smallest row when the budget is below all of them; the largest when there is no token budget).
"""

from __future__ import annotations

import json
import math
from importlib import resources
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from thinkscale.strategies.auto_features import DifficultyScore
from thinkscale.validation import format_validation_error

FORMAT: Literal["thinkscale-policy/1"] = "thinkscale-policy/1"
DEFAULT_POLICY_FILE = "default_policy.json"  # package data of thinkscale.strategies, fitted by `thinkscale fit-policy`


class PolicyError(ValueError):
    """A policy file is missing, unreadable or invalid; the message names the file and the field."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class StopAction(_Strict):
    kind: Literal["stop"] = "stop"

    @property
    def label(self) -> str:
        return "stop"


class SampleAction(_Strict):
    kind: Literal["sample"] = "sample"
    max_samples: int = Field(ge=1)
    threshold: float | None = Field(default=None, gt=0.5, lt=1.0)
    give_up_after: int | None = Field(default=None, ge=1)
    give_up_share: float = Field(default=0.34, gt=0.0, lt=1.0)

    @property
    def label(self) -> str:
        return f"sample:max_samples={self.max_samples}" + (
            "" if self.threshold is None else f",threshold={self.threshold:g}") + (
            "" if self.give_up_after is None else f",give_up_after={self.give_up_after},"
            f"give_up_share={self.give_up_share:g}")


class StrategyAction(_Strict):
    kind: Literal["strategy"] = "strategy"
    spec: str = Field(min_length=1)

    @field_validator("spec")
    @classmethod
    def _buildable(cls, v: str) -> str:
        from thinkscale.strategies.base import build_strategy, parse_spec

        name, _ = parse_spec(v)
        if name == "auto":
            raise ValueError("a policy cannot run auto inside auto")
        build_strategy(v)  # ValueError naming the strategy or knob
        return v

    @property
    def label(self) -> str:
        return f"strategy:{self.spec}"


Action = Annotated[StopAction | SampleAction | StrategyAction, Field(discriminator="kind")]


class Sampling(_Strict):
    wave_size: int = Field(ge=1)
    temperature: float = Field(gt=0, allow_inf_nan=False)
    top_p: float = Field(gt=0, le=1)
    max_tokens: int = Field(ge=1)
    # the first wave's first chain is the greedy chain (the greedy strategy's very request), the rest sampled
    greedy_first: bool = False
    # a tie for the most votes that the greedy chain's answer is in goes to it (else the rng breaks it)
    greedy_breaks_ties: bool = False
    # chains in the first wave (None: wave_size); continuations come in waves of wave_size
    first_wave: int | None = Field(default=None, ge=1)

    @model_validator(mode="after")
    def _tie_needs_greedy(self) -> Sampling:
        if self.greedy_breaks_ties and not self.greedy_first:
            raise ValueError("greedy_breaks_ties needs greedy_first: without it no chain is the greedy one")
        return self

    @property
    def first(self) -> int:
        """Chains in the first wave."""
        return self.wave_size if self.first_wave is None else self.first_wave


class Difficulty(_Strict):
    score: DifficultyScore
    edges: list[float]
    bins: list[str] = Field(min_length=1)
    confidence_window: int = Field(default=2048, ge=1)
    # score "verifier": the verifier that scores the wave's first chain (a spec as the strategies' verifier knob
    # takes it, e.g. "orm"; verifier_path: its file, none = the packaged one) and what it was (its metadata's
    # fitted_on, for the record)
    verifier: str | None = None
    verifier_path: str | None = None

    @model_validator(mode="after")
    def _shape(self) -> Difficulty:
        if self.score is DifficultyScore.VERIFIER and not self.verifier:
            raise ValueError("score 'verifier' needs verifier (e.g. \"orm\"): the verifier that scores the first chain")
        if self.score is not DifficultyScore.VERIFIER and (self.verifier or self.verifier_path):
            raise ValueError(f"verifier is only read by score 'verifier', not {self.score.value!r}")
        if self.verifier:
            from thinkscale.verifiers.base import VerifierKind, check_verifier_spec

            if check_verifier_spec(self.verifier, self.verifier_path).kind is not VerifierKind.OUTCOME:
                raise ValueError(f"verifier {self.verifier!r} scores steps; the difficulty score needs an outcome "
                                 "verifier (one probability per chain, e.g. orm)")
        if not all(math.isfinite(e) for e in self.edges) or self.edges != sorted(set(self.edges)):
            raise ValueError(f"edges must be finite and strictly increasing, got {self.edges}")
        if len(self.bins) != len(self.edges) + 1:
            raise ValueError(f"{len(self.edges)} edges need {len(self.edges) + 1} bins, got {len(self.bins)}")
        if len(set(self.bins)) != len(self.bins):
            raise ValueError(f"bin names repeat: {self.bins}")
        return self

    def bin_of(self, score: float) -> str:
        from thinkscale.strategies.auto_features import bin_index

        return self.bins[bin_index(score, self.edges)]


class Choice(_Strict):
    action: Action
    accuracy: float = Field(ge=0, le=1)
    mean_tokens: float = Field(ge=0)
    n_problems: int = Field(ge=0)
    why: str = ""


class BudgetRow(_Strict):
    max_completion_tokens: int = Field(ge=1)
    choices: dict[str, Choice]


class TableEntry(_Strict):
    bin: str
    max_completion_tokens: int = Field(ge=1)
    action: str
    accuracy: float = Field(ge=0, le=1)
    mean_tokens: float = Field(ge=0)
    n_problems: int = Field(ge=0)


class FittedOn(_Strict):
    runs: list[str]
    dataset: str
    dataset_sha256: str | None = None
    problems: int = Field(ge=0)
    instances: int = Field(ge=0)  # (problem, sample seed) pairs
    test_data: bool = False  # fitted on an evaluation set (only with --allow-test-data)
    model: str
    model_fingerprint: str | None = None
    sampler: str  # the self-consistency spec whose samples were replayed
    samples_per_problem: int = Field(ge=1)
    verifier_scores: str | None = None  # difficulty "verifier": what scored the fitting chains (e.g. cross-fitted)


class Policy(_Strict):
    format: Literal["thinkscale-policy/1"]
    sampling: Sampling
    difficulty: Difficulty
    budgets: list[BudgetRow] = Field(min_length=1)
    table: list[TableEntry] = []
    objective: str = ""
    tolerance: float = Field(default=0.0, ge=0, le=1)
    token_price: float = Field(default=0.0, ge=0, allow_inf_nan=False)  # accuracy per 1000 tokens the fit gave up
    fitted_on: FittedOn
    fitted_at: str

    @model_validator(mode="after")
    def _consistent(self) -> Policy:
        caps = [r.max_completion_tokens for r in self.budgets]
        if caps != sorted(set(caps)):
            raise ValueError(f"budgets: max_completion_tokens must be strictly increasing, got {caps}")
        want = set(self.difficulty.bins)
        for i, row in enumerate(self.budgets):
            if set(row.choices) != want:
                raise ValueError(f"budgets.{i}.choices: needs exactly the bins {self.difficulty.bins}, got "
                                 f"{sorted(row.choices)}")
            for b, c in row.choices.items():
                if isinstance(c.action, SampleAction) and c.action.max_samples < self.sampling.first:
                    raise ValueError(f"budgets.{i}.choices.{b}.action.max_samples: {c.action.max_samples} is "
                                     f"below the first wave's {self.sampling.first} chains")
        return self

    def row_for(self, max_completion_tokens: int | None) -> BudgetRow:
        """The budget row a run with this token budget uses (see the module doc)."""
        if max_completion_tokens is None:
            return self.budgets[-1]
        fitting = [r for r in self.budgets if r.max_completion_tokens <= max_completion_tokens]
        return fitting[-1] if fitting else self.budgets[0]

    def to_json(self) -> str:
        return self.model_dump_json(indent=2) + "\n"


def parse_policy(text: str, source: str) -> Policy:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise PolicyError(f"policy {source}: not valid JSON ({e.msg}, line {e.lineno})") from None
    if isinstance(data, dict) and data.get("format") != FORMAT:
        raise PolicyError(f"policy {source}: format: expected {FORMAT!r}, got {data.get('format')!r}")
    try:
        return Policy.model_validate(data)
    except ValidationError as e:
        raise PolicyError(format_validation_error(e, f"policy {source}")) from None


def default_policy_text() -> str:
    """The packaged default policy's JSON; PolicyError when none is shipped."""
    ref = resources.files("thinkscale.strategies").joinpath(DEFAULT_POLICY_FILE)
    if not ref.is_file():
        raise PolicyError(
            f"no default policy is shipped with this thinkscale (thinkscale/strategies/{DEFAULT_POLICY_FILE} is "
            "missing): fit one on training-set runs with `thinkscale fit-policy RUN_DIR --out policy.json` and "
            "pass it with --policy policy.json (or auto:policy=policy.json)")
    return ref.read_text(encoding="utf-8")


def load_policy(path: str | Path | None = None) -> Policy:
    """The policy at ``path``, or the packaged default when ``path`` is None. PolicyError (a ValueError) names the
    file and the field when it cannot be used."""
    if path is None:
        return parse_policy(default_policy_text(), f"(packaged default {DEFAULT_POLICY_FILE})")
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as e:
        raise PolicyError(f"policy {p}: cannot read it ({e.strerror or e})") from None
    return parse_policy(text, str(p))
