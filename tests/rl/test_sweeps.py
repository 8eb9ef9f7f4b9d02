"""The committed sweep files of the RL results (docs/results/rl) load, and the thinking model's budget-forcing sweep
uses the very system prompt the model is trained with (a drifted copy would evaluate it off its training prompt)."""

from __future__ import annotations

from pathlib import Path

from thinkscale.eval.config import load_sweep_file
from thinkscale.eval.runner import plan_strategy
from thinkscale.prompts import THINK_SYSTEM
from thinkscale.strategies.base import budget_scale, build_strategy

RL = Path(__file__).resolve().parents[2] / "docs" / "results" / "rl"


def test_the_budget_forcing_sweep_runs_the_thinking_model_on_its_training_prompt() -> None:
    cfg = load_sweep_file(RL / "sweep-think-0.5b-bf.toml")
    assert cfg.system == THINK_SYSTEM
    assert cfg.models == ("runs/rl/grpo-0.5b-think/model.gguf",)
    (spec,) = cfg.strategies
    plan = plan_strategy(spec, cfg)
    for bf in (build_strategy(spec), plan.build(2), build_strategy(plan.spec_at(2))):  # as the eval builds it
        assert (bf.think_start, bf.think_end) == ("<think>\n", "</think>")  # the training prefill
    # three thinking budgets: k x max_tokens thinking tokens
    assert [k * budget_scale("budget-forcing", cfg.max_tokens) for k in cfg.budgets] == [128, 256, 384]


def test_the_grpo_comparison_sweep_loads() -> None:
    cfg = load_sweep_file(RL / "sweep-grpo-0.5b.toml")
    assert cfg.models == ("runs/rl/grpo-0.5b-boxed/model.gguf",) and cfg.budgets == (1, 8)


def test_the_grpo_control_sweep_is_the_comparison_sweep_on_the_exported_base() -> None:
    trained = load_sweep_file(RL / "sweep-grpo-0.5b.toml")
    base = load_sweep_file(RL / "sweep-grpo-0.5b-base.toml")
    assert base.models == ("runs/rl/grpo-0.5b-boxed/model-0.gguf",)
    assert base.model_copy(update={"models": trained.models}) == trained  # nothing else differs



def test_the_thinking_comparison_sweep_runs_model_and_control_on_the_training_prompt() -> None:
    """The trained thinking model and the base through the same export, each with the training system prompt and the
    reply opened with the training prefill, greedy and self-consistency up to 8 chains."""
    cfg = load_sweep_file(RL / "sweep-think-0.5b.toml")
    assert cfg.system == THINK_SYSTEM
    assert cfg.models == ("runs/rl/grpo-0.5b-think/model.gguf", "runs/rl/grpo-0.5b-think/model-0.gguf")
    assert cfg.budgets == (1, 8)
    greedy, sc = (plan_strategy(spec, cfg) for spec in cfg.strategies)
    assert (greedy.name, sc.name) == ("greedy", "self-consistency")
    assert greedy.build(1).prefill == "<think>\n"
    assert sc.build(8).prefill == "<think>\n" and sc.build(8).n_samples == 8
