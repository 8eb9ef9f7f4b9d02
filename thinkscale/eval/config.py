"""What a sweep is: one strict, frozen config, from command-line options or from a TOML sweep file.

    # sweep.toml                                     (thinkscale eval --config sweep.toml)
    dataset = "gsm8k"
    limit = 100
    seed = 0                                          # which problems (the subset draw)
    models = ["qwen2.5-coder-0.5b"]
    strategies = ["greedy", "self-consistency", "best-of-n:verifier=pyes"]
    budgets = [1, 2, 4, 8, 16]
    sample_seeds = [0]                                # each a unit dimension: (problem, strategy, budget, seed)
    max_tokens = 512                                  # per chain, for strategies with a max_tokens knob
    out = "runs/gsm8k-0.5b"                           # optional, relative to this file; --out wins
    share_samples = true                              # serve chains a finished job already drew (default)
    share_chains_from = ["../runs/gsm8k-0.5b-tir"]    # and chains other runs of the same model stored (relative
                                                      # to this file; --share-chains-from wins)
    deterministic = false                             # same command + seeds -> same stored answers (slower)
    # also: task (for a dataset file), system, backend ("llamacpp", "openai:URL", "scripted:FILE"), max_subsets

Unknown keys are errors, as are budgets that are not strictly increasing positive integers.
"""

from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from thinkscale.answers import Task
from thinkscale.validation import format_validation_error


class SweepConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    dataset: str = Field(min_length=1)
    task: Task | None = None  # only for a dataset file; shipped datasets know their task
    system: str | None = None  # replaces the dataset's system prompt
    # only problems of these difficulty levels (MATH-500's 1-5), before the seeded draw of ``limit``
    levels: tuple[Annotated[int, Field(ge=1)], ...] | None = None
    limit: Annotated[int, Field(ge=1)] | None = None
    seed: int = Field(default=0, ge=0)
    models: tuple[str, ...] = Field(min_length=1)
    backend: str = "llamacpp"  # llamacpp | openai:URL | scripted:FILE
    strategies: tuple[str, ...] = Field(min_length=1)
    budgets: tuple[Annotated[int, Field(ge=1)], ...] = (1, 2, 4, 8, 16)
    sample_seeds: tuple[Annotated[int, Field(ge=0)], ...] = (0,)
    max_tokens: int = Field(default=512, ge=1)
    max_subsets: int = Field(default=1000, ge=1)  # k-subsets averaged per reused budget (all when fewer)
    # a job's generate request is served from chains finished jobs already stored (thinkscale.eval.chains);
    # false: every job draws its own chains
    share_samples: bool = True
    # other runs' folders whose stores also serve chains (same model file only; thinkscale.eval.chains): a request
    # another run already drew is not generated again
    share_chains_from: tuple[str, ...] = ()
    # every backend call runs alone from an empty KV cache, so the stored answers are a function of the command and
    # its seeds (llama.cpp's numbers depend on batching: thinkscale.backends.llamacpp); costs batching and reuse
    deterministic: bool = False
    out: Path | None = None

    @field_validator("budgets")
    @classmethod
    def _increasing(cls, v: tuple[int, ...]) -> tuple[int, ...]:
        if not v:
            raise ValueError("give at least one budget")
        if list(v) != sorted(set(v)):
            raise ValueError(f"budgets must be strictly increasing, got {list(v)}")
        return v

    @field_validator("levels")
    @classmethod
    def _levels(cls, v: tuple[int, ...] | None) -> tuple[int, ...] | None:
        if v is not None and (not v or list(v) != sorted(set(v))):
            raise ValueError(f"levels must be a non-empty, strictly increasing list, got {list(v)}")
        return v

    @field_validator("models", "strategies", "sample_seeds", "share_chains_from")
    @classmethod
    def _unique(cls, v: tuple) -> tuple:  # type: ignore[type-arg]
        if len(set(v)) != len(v):
            raise ValueError(f"listed twice: {sorted({x for x in v if list(v).count(x) > 1})}")
        return v

    @field_validator("backend")
    @classmethod
    def _backend(cls, v: str) -> str:
        kind, _, arg = v.partition(":")
        if kind == "llamacpp" and not arg:
            return v
        if kind in ("openai", "scripted") and arg:
            return v
        raise ValueError(f"backend must be llamacpp, openai:URL or scripted:FILE, got {v!r}")


def load_sweep_file(path: str | Path) -> SweepConfig:
    p = Path(path)
    try:
        data = tomllib.loads(p.read_text(encoding="utf-8"))
    except OSError as e:
        raise ValueError(f"cannot read sweep file {p}: {e.strerror or e}") from None
    except tomllib.TOMLDecodeError as e:
        raise ValueError(f"{p}: not valid TOML: {e}") from None
    if isinstance(data.get("out"), str) and not Path(data["out"]).is_absolute():
        data["out"] = str(p.parent / data["out"])
    if isinstance(data.get("share_chains_from"), list):
        data["share_chains_from"] = [os.path.normpath(p.parent / x) if isinstance(x, str)
                                     and not Path(x).is_absolute() else x for x in data["share_chains_from"]]
    try:
        return SweepConfig(**data)
    except ValidationError as e:
        raise ValueError(format_validation_error(e, str(p))) from None
