"""A tiny real sweep: smollm2-135m on 2 GSM8K problems, 16 tokens per chain (seconds on 2 idle cores). It checks
that the harness stores what llama.cpp measured, not that the model is any good."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from thinkscale.eval.config import SweepConfig
from thinkscale.eval.runner import run_sweep

pytestmark = pytest.mark.model


def test_tiny_real_sweep_stores_measured_usage(smollm2_path: str, tmp_path: Path) -> None:
    from thinkscale.backends.llamacpp import LlamaCppBackend

    cfg = SweepConfig(dataset="gsm8k", limit=2, models=["smollm2-135m"], strategies=["greedy", "self-consistency"],
                      budgets=[1, 2], max_tokens=16)
    out = tmp_path / "run"
    s = run_sweep(cfg, out, backend_factory=lambda model: LlamaCppBackend(smollm2_path, n_ctx=2048))
    assert (s.jobs_run, s.jobs_total) == (4, 4)
    assert s.backend_seconds > 0 and s.overhead_fraction is not None
    with sqlite3.connect(out / "results.sqlite") as db:
        rows = db.execute("SELECT strategy, budget, completion_tokens, prompt_tokens, cached_prompt_tokens, flops, "
                          "estimated_cost FROM units ORDER BY 1, 2").fetchall()
        samples = db.execute("SELECT completion_tokens, finish_reason FROM samples").fetchall()
    assert [(r[0], r[1]) for r in rows] == [("greedy", 1), ("greedy", 1), ("self-consistency", 1),
                                            ("self-consistency", 1), ("self-consistency", 2), ("self-consistency", 2)]
    for _, _, completion, prompt, cached, flops, _ in rows:
        assert 0 < completion <= 32 and prompt > 20 and 0 <= cached < prompt and flops > 0
    assert len(samples) == 2 + 2 * 2 and all(0 < t <= 16 for t, _ in samples)


def test_a_deterministic_sweep_stores_the_same_answers_twice(smollm2_path: str, tmp_path: Path) -> None:
    """Two runs of one sweep on 2 workers (jobs interleave differently each time) with deterministic = true: every
    stored sample text and answer is the same, and the store's identity says the run was deterministic."""
    import json

    from thinkscale.backends.llamacpp import LlamaCppBackend

    cfg = SweepConfig(dataset="gsm8k", limit=2, models=["smollm2-135m"], strategies=["greedy", "self-consistency"],
                      budgets=[2], max_tokens=16, deterministic=True)
    texts = []
    for i in range(2):
        out = tmp_path / f"run{i}"
        run_sweep(cfg, out, workers=2, backend_factory=lambda model: LlamaCppBackend(
            smollm2_path, n_ctx=4096, deterministic=True))
        with sqlite3.connect(out / "results.sqlite") as db:
            texts.append(db.execute("SELECT j.strategy, j.problem_id, s.idx, s.text, s.answer FROM samples s "
                                    "JOIN jobs j USING (job_id) ORDER BY 1, 2, 3").fetchall())
            config = json.loads(db.execute("SELECT value FROM meta WHERE key = 'config'").fetchone()[0])
        assert config["deterministic"] is True
    assert len(texts[0]) == 2 * (1 + 2) and texts[0] == texts[1]
