"""A GRPO run folder: what a new run refuses, what a resume may change, which checkpoint it resumes from, and which log
lines it keeps. No model: these are the rules that make a kill lose nothing."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from thinkscale.rl.data import split_problems
from thinkscale.rl.grpo import Settings, check_resume, keep_lines_until, last_checkpoint, prepare_folder
from thinkscale.rl.runlog import export_adapter
from thinkscale.rl.weights import TrainSetupError


def _checkpoint(folder: Path, step: int, *, complete: bool = True) -> Path:
    ck = folder / "checkpoints" / f"checkpoint-{step}"
    ck.mkdir(parents=True)
    (ck / "adapter_model.safetensors").write_bytes(b"x")
    if complete:
        (ck / "trainer_state.json").write_text(json.dumps({"global_step": step}))
    return ck


def test_settings_are_checked() -> None:
    with pytest.raises(ValueError, match="num-generations must be >= 2"):
        Settings(num_generations=1)
    with pytest.raises(ValueError, match="2 rewards but 1 reward weights"):
        Settings(reward_weights=(1.0,))
    with pytest.raises(ValueError, match="unknown reward"):
        Settings(rewards=("nope",), reward_weights=(1.0,))
    with pytest.raises(ValueError, match="--device 'tpu'"):
        Settings(device="tpu")
    with pytest.raises(ValueError, match="--gguf-type 'q3': give one of f32, f16, q8_0, q4_k_m"):
        Settings(gguf_type="q3")  # refused before hours of training, not when the model is written
    gpu = Settings.for_device("gpu", steps=7)
    assert (gpu.device, gpu.num_generations, gpu.max_completion_tokens, gpu.steps) == ("gpu", 8, 512, 7)
    assert Settings.for_device("cpu", num_generations=None).num_generations == 4  # None = not given
    assert Settings.from_json(json.loads(json.dumps(gpu.to_json()))) == gpu


def test_a_new_run_refuses_a_used_folder(tmp_path: Path) -> None:
    s = Settings(steps=3)
    settings, ckpt = prepare_folder(tmp_path / "run", s, resume=False)
    assert settings == s and ckpt is None
    assert json.loads((tmp_path / "run" / "settings.json").read_text())["steps"] == 3
    with pytest.raises(TrainSetupError, match="already holds a run: pass --resume"):
        prepare_folder(tmp_path / "run", s, resume=False)
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("mine")
    with pytest.raises(TrainSetupError, match="not empty"):
        prepare_folder(tmp_path / "other", s, resume=False)
    with pytest.raises(TrainSetupError, match="holds no run"):
        prepare_folder(tmp_path / "other", s, resume=True)


def test_resume_may_only_grow_steps() -> None:
    saved = Settings(steps=10, threads=2)
    assert check_resume(saved, Settings(steps=20, threads=1)) == Settings(steps=20, threads=1)
    with pytest.raises(TrainSetupError, match=r"different settings \(learning_rate, lora_rank\)"):
        check_resume(saved, Settings(steps=10, lora_rank=8, learning_rate=1e-4))
    with pytest.raises(TrainSetupError, match="may only grow"):
        check_resume(saved, Settings(steps=5))


def test_resume_takes_the_newest_complete_checkpoint_and_drops_later_log_lines(tmp_path: Path) -> None:
    run = tmp_path / "run"
    prepare_folder(run, Settings(steps=10), resume=False)
    _checkpoint(run, 2)
    _checkpoint(run, 4)
    _checkpoint(run, 6, complete=False)  # killed while writing it
    (run / "metrics.jsonl").write_text("".join(json.dumps({"step": i, "reward": i / 10}) + "\n" for i in range(1, 6)))
    (run / "heldout.jsonl").write_text("".join(json.dumps({"step": i}) + "\n" for i in (0, 5)))
    settings, ckpt = prepare_folder(run, Settings(steps=12), resume=True)
    assert settings.steps == 12
    assert ckpt == run / "checkpoints" / "checkpoint-4"
    assert not (run / "checkpoints" / "checkpoint-6").exists()
    assert [json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines()] == [1, 2, 3, 4]
    assert [json.loads(line)["step"] for line in (run / "heldout.jsonl").read_text().splitlines()] == [0]


def test_no_checkpoint_yet(tmp_path: Path) -> None:
    assert last_checkpoint(tmp_path / "missing") is None
    _checkpoint(tmp_path, 1, complete=False)
    assert last_checkpoint(tmp_path / "checkpoints") is None
    keep_lines_until(tmp_path / "none.jsonl", 3)  # nothing to trim is fine
    assert not (tmp_path / "none.jsonl").exists()


def test_training_and_heldout_problems_are_disjoint_training_problems() -> None:
    split = split_problems("gsm8k-train", problems=40, heldout=10, seed=3, system="think")
    train, held = {p.id for p in split.train}, {p.id for p in split.heldout}
    assert len(train) == 40 and len(held) == 10 and not train & held
    assert split_problems("gsm8k-train", problems=40, heldout=10, seed=3, system="think") == split
    assert all("<think>" in p.problem.messages[0].content for p in split.train)
    with pytest.raises(ValueError, match="evaluation set"):
        split_problems("gsm8k", problems=4, heldout=0, seed=0, system="think")
    with pytest.raises(ValueError, match="more than the"):
        split_problems("gsm8k-train", problems=7000, heldout=1000, seed=0, system="think")


def test_problems_from_a_run_are_the_ones_the_model_sometimes_solves(tmp_path: Path) -> None:
    """An eval run's self-consistency chains (the scripted fake: problem 0 always right, 1 always wrong, the rest
    mixed) choose the training problems; held-out problems come from outside the run."""
    from thinkscale.eval.config import SweepConfig
    from thinkscale.eval.datasets import load_dataset
    from thinkscale.eval.runner import run_sweep
    from thinkscale.rl.data import split_from_run

    ds = load_dataset("gsm8k-train").subset(6, 0)
    responses = {}
    for i, p in enumerate(ds.problems):
        right, wrong = f"so \\boxed{{{p.reference}}}", f"so \\boxed{{{int(p.reference) + 1}}}"
        responses[p.problem.messages[-1].content] = [right] if i == 0 else [wrong] if i == 1 else [right, wrong]
    table = tmp_path / "table.json"
    table.write_text(json.dumps({"responses": responses}))
    run = tmp_path / "run"
    run_sweep(SweepConfig(dataset="gsm8k-train", limit=6, models=("fake",), backend=f"scripted:{table}",
                          strategies=("self-consistency",), budgets=(4,)), run)
    split = split_from_run("gsm8k-train", run, model="fake", problems=10, heldout=5, seed=0, system="think")
    assert {p.id for p in split.train} == {p.id for p in ds.problems[2:]}
    assert len(split.heldout) == 5 and not {p.id for p in split.heldout} & {p.id for p in ds.problems}
    assert len(split_from_run("gsm8k-train", run, model="fake", problems=2, heldout=0, seed=0,
                              system="think").train) == 2
    with pytest.raises(ValueError, match="not on --data 'game24'"):
        split_from_run("game24", run, model="fake", problems=2, heldout=0, seed=0, system="think")
    with pytest.raises(ValueError, match="no model 'other'"):
        split_from_run("gsm8k-train", run, model="other", problems=2, heldout=0, seed=0, system="think")


def test_rollout_seeds_follow_the_step_not_the_process() -> None:
    """A resumed run (a new process, its first call at step 5) samples with the seeds the uninterrupted run used at
    step 5; a step's second call and a held-out evaluation at the same step get seeds of their own."""
    from thinkscale.rl.rollout import StepSeeds

    uninterrupted = StepSeeds(0)
    seen = {step: uninterrupted.next(step, "train", 3) for step in range(6)}
    resumed = StepSeeds(0)
    assert resumed.next(5, "train", 3) == seen[5]
    second = resumed.next(5, "train", 3)
    held_out = resumed.next(5, "eval", 3)
    all_seeds = [s for seeds in (*seen.values(), second, held_out) for s in seeds]
    assert len(set(all_seeds)) == len(all_seeds)  # no two requests of the run share a seed
    assert all(0 <= s < 2**31 for s in all_seeds)
    assert StepSeeds(1).next(5, "train", 3) != seen[5]  # the run's seed matters


def test_export_takes_the_final_adapter_else_the_newest_finished_checkpoint_and_deletes_nothing(tmp_path: Path) -> None:
    """``train export`` beside a running training: checkpoint 6 is still being written, so the export takes 4 and
    leaves 6 alone (removing it would break the training writing it); the default file is named by what it holds."""
    run = tmp_path / "run"
    _checkpoint(run, 4)
    _checkpoint(run, 6, complete=False)
    assert export_adapter(run, None) == (run / "checkpoints" / "checkpoint-4", "4")
    assert (run / "checkpoints" / "checkpoint-6").is_dir()
    assert export_adapter(run, 4) == (run / "checkpoints" / "checkpoint-4", "4")
    with pytest.raises(TrainSetupError, match="no complete checkpoint at step 6"):
        export_adapter(run, 6)
    (run / "adapter").mkdir()
    assert export_adapter(run, None) == (run / "adapter", "final")
    with pytest.raises(TrainSetupError, match="no adapter yet"):
        export_adapter(tmp_path / "empty", None)
