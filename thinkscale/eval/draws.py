"""A run's stored self-consistency draws, read back without a model: each problem's chains from the run's
self-consistency job at its largest budget (the lowest sample seed when there are several), with their stored grades,
and the conversation they answer (rebuilt from the run's dataset and system prompt, exactly as the harness sent it).

What starts from them: rescoring a run with another selector (``thinkscale.eval.select``) and fitting the outcome
verifier on a run's chains (``thinkscale.policy.orm_fit``).
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from thinkscale.eval.datasets import load_dataset
from thinkscale.eval.store import Store, open_existing
from thinkscale.types import Message

SAMPLER = "self-consistency"


def run_model(cfg: dict[str, Any], model: str | None, run: str | Path) -> str:
    """``model`` when the run has it (default: the run's first model); ValueError naming the run's models."""
    models = cfg["models"]
    model = model or models[0]
    if model not in models:
        raise ValueError(f"{run}: no model {model!r} in this run (it has {', '.join(models)})")
    return model


def sampler_spec(store: Store, model: str, sampler: str | None, run: str | Path) -> str:
    """The self-consistency spec whose chains to read: ``sampler``, or the run's only one (ValueError when it has
    several and none is named)."""
    specs = sorted({r["strategy"] for r in store.rows("SELECT DISTINCT strategy FROM jobs WHERE model = ? AND "
                                                       "strategy LIKE ?", (model, SAMPLER + "%"))})
    if sampler is None and len(specs) > 1:
        raise ValueError(f"{run}: several self-consistency configs ({specs}); name one with --sampler")
    return sampler or (specs[0] if specs else SAMPLER)


def draw_rows(store: Store, model: str, spec: str) -> list[sqlite3.Row]:
    """Every sample of ``spec``'s jobs of ``model`` at their largest budget and lowest seed, by problem and index:
    problem_id, seed, job_id, idx, text, answer, correct, completion_tokens, finish_reason."""
    return store.rows(
        "SELECT j.problem_id, j.seed, j.job_id, s.idx, s.text, s.answer, s.correct, s.completion_tokens, "
        "s.finish_reason FROM jobs j JOIN samples s USING (job_id) "
        "WHERE j.model = ? AND j.strategy = ? AND j.seed = (SELECT MIN(seed) FROM jobs WHERE model = ? AND "
        "strategy = ?) AND j.budget = (SELECT MAX(budget) FROM jobs k WHERE k.model = j.model AND "
        "k.strategy = j.strategy AND k.problem_id = j.problem_id AND k.seed = j.seed) "
        "ORDER BY j.problem_id, s.idx", (model, spec, model, spec))


def problem_messages(cfg: dict[str, Any]) -> dict[str, tuple[Message, ...]]:
    """Each problem's conversation as the run sent it (its dataset with the run's system prompt)."""
    ds = load_dataset(cfg["dataset"], task=cfg.get("task"), system=cfg.get("system"))
    return {p.id: p.problem.messages for p in ds.problems}


@dataclass(frozen=True)
class DrawRows:
    """A run's self-consistency draws as stored: the run's config, the model and spec read, the model's recorded
    identity (fingerprint, parameters), the samples (``draw_rows``) and the spec's units at the draws' seed."""

    cfg: dict[str, Any]
    model: str
    spec: str
    identity: dict[str, Any]
    rows: list[sqlite3.Row]
    units: list[sqlite3.Row]


def read_draws(run: str | Path, *, model: str | None = None, sampler: str | None = None) -> DrawRows:
    """``DrawRows`` of the run folder ``run`` (store opened read-only; StoreError when it holds no run)."""
    store = open_existing(run, read_only=True)
    try:
        cfg = store.config()
        model = run_model(cfg, model, run)
        spec = sampler_spec(store, model, sampler, run)
        rows = draw_rows(store, model, spec)
        units = store.rows("SELECT budget, problem_id, correct, completion_tokens, flops FROM units WHERE model = ? "
                           "AND strategy = ? AND seed = ?", (model, spec, rows[0]["seed"] if rows else 0))
        return DrawRows(cfg, model, spec, store.info().get("models", {}).get(model, {}), rows, units)
    finally:
        store.close()
