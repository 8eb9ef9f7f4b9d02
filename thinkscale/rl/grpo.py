"""``thinkscale train grpo``: GRPO (TRL's GRPOTrainer) with a peft LoRA adapter on a catalog GGUF model.

A run lives in one folder::

    DIR/settings.json       what was asked (a resume must ask the same; only --steps may grow)
    DIR/checkpoints/        TRL/transformers checkpoints every --save-every steps (adapter, optimizer, RNG, state)
    DIR/metrics.jsonl       every logged step: each reward's mean and spread, loss, KL, clipped ratio, step seconds
    DIR/heldout.jsonl       the held-out problems' mean rewards (before training and every --eval-every steps)
    DIR/reward.png          reward vs step (training batches and held-out problems), redrawn at every checkpoint
    DIR/adapter/            the final LoRA adapter (peft)
    DIR/model.gguf          the merged model, written back as a GGUF for the embedded backend
    DIR/model.json          what it is: base model and file hash, steps, system prompt, rewards, held-out rewards

A killed run resumes from its newest complete checkpoint with ``--resume`` (the data order, RNG and optimizer come
back with it; log lines after that checkpoint are dropped, since those steps run again). Nothing of the RL loop is
written here: generation, advantages and the clipped objective are TRL's.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from thinkscale.models import DEFAULT_MODEL
from thinkscale.rl.data import Split, hf_dataset, split_from_run, split_problems, system_prompt
from thinkscale.rl.export import KQUANTS, OUT_TYPES
from thinkscale.rl.rewards import reward_functions
from thinkscale.rl.weights import TrainSetupError, load_gguf_model, require_train_extra

log = logging.getLogger(__name__)

DEVICES = ("cpu", "gpu")
GGUF_TYPES = (*OUT_TYPES, *KQUANTS)  # checked before training: the model is written only at the end
GENERATIONS = ("transformers", "llamacpp")
# Settings a resumed run may change: how long it runs, and how it uses this machine.
RESUMABLE_CHANGES = frozenset({"steps", "threads"})


@dataclass(frozen=True)
class Settings:
    """One run's knobs. ``for_device`` fills the device's defaults (CPU: fp32, no gradient checkpointing, generation
    by transformers; GPU: bf16, TRL's vLLM generation colocated with training, gradient checkpointing)."""

    model: str = DEFAULT_MODEL
    data: str = "gsm8k-train"
    task: str | None = None
    system: str = "think"
    prefill: str = ""  # the reply's opening, written after the generation prompt (``<think>\n`` for --system think)
    problems: int = 256
    problems_from: str | None = None  # an eval run: train on the problems it shows the model sometimes solves
    heldout: int = 32
    steps: int = 100
    num_generations: int = 4
    prompts_per_step: int = 1
    max_completion_tokens: int = 256
    temperature: float = 0.8
    learning_rate: float = 5e-5
    beta: float = 0.0
    lora_rank: int = 16
    lora_alpha: int = 32
    rewards: tuple[str, ...] = ("correct", "format")
    reward_weights: tuple[float, ...] = (1.0, 0.25)
    save_every: int = 5
    eval_every: int = 10
    eval_generations: int = 2
    seed: int = 0
    device: str = "cpu"
    generation: str = "transformers"  # CPU: "llamacpp" samples on the embedded backend (rl/rollout.py)
    threads: int | None = None
    gguf_type: str = "q8_0"
    extra: dict[str, Any] = field(default_factory=dict)  # more GRPOConfig fields, by name (checked by GRPOConfig)

    def __post_init__(self) -> None:
        problems = [
            (self.device in DEVICES, f"--device {self.device!r}: give cpu or gpu"),
            (self.generation in GENERATIONS, f"--generation {self.generation!r}: give transformers or llamacpp"),
            (self.device == "cpu" or self.generation == "transformers",
             "--generation llamacpp is for --device cpu (the GPU path generates with TRL's vLLM)"),
            (self.steps >= 1, "--steps must be >= 1"),
            (self.num_generations >= 2, "--num-generations must be >= 2 (GRPO compares answers to one prompt)"),
            (self.prompts_per_step >= 1, "--prompts-per-step must be >= 1"),
            (self.max_completion_tokens >= 1, "--max-completion-tokens must be >= 1"),
            (self.lora_rank >= 1, "--lora-rank must be >= 1"),
            (self.save_every >= 1 and self.eval_every >= 1, "--save-every and --eval-every must be >= 1"),
            (self.eval_generations >= 1, "--eval-generations must be >= 1"),
            (self.temperature > 0, "--temperature must be > 0 (GRPO needs different answers to compare)"),
            (len(self.reward_weights) == len(self.rewards),
             f"{len(self.rewards)} rewards but {len(self.reward_weights)} reward weights"),
            (self.threads is None or self.threads >= 1, "--threads must be >= 1"),
            (self.gguf_type in GGUF_TYPES, f"--gguf-type {self.gguf_type!r}: give one of {', '.join(GGUF_TYPES)}"),
        ]
        for ok, message in problems:
            if not ok:
                raise ValueError(message)
        reward_functions(self.rewards)
        system_prompt(self.system)

    @classmethod
    def for_device(cls, device: str, **given: Any) -> Settings:
        """The device's defaults under what the user gave (``None`` = not given)."""
        defaults: dict[str, Any] = {"gpu": {"num_generations": 8, "prompts_per_step": 8, "max_completion_tokens": 512,
                                            "eval_generations": 4, "learning_rate": 2e-5}}.get(device, {})
        chosen = {**defaults, **{k: v for k, v in given.items() if v is not None}}
        if "prefill" not in chosen and chosen.get("system", cls.system) == "think":
            chosen["prefill"] = "<think>\n"
        return cls(device=device, **chosen)

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Settings:
        data = dict(data)
        data["rewards"] = tuple(data["rewards"])
        data["reward_weights"] = tuple(float(w) for w in data["reward_weights"])
        return cls(**data)


def check_resume(saved: Settings, asked: Settings) -> Settings:
    """The settings a resumed run goes on with: the saved ones, with ``--steps``/``--threads`` as asked now."""
    changed = sorted(k for k, v in asked.to_json().items() if v != saved.to_json()[k] and k not in RESUMABLE_CHANGES)
    if changed:
        raise TrainSetupError(f"--resume with different settings ({', '.join(changed)}): a resumed run must ask what "
                              "it was started with (only --steps and --threads may change); use a new --out")
    if asked.steps < saved.steps:
        raise TrainSetupError(f"--steps {asked.steps} is fewer than the run's {saved.steps}: --steps may only grow")
    return dataclasses.replace(saved, steps=asked.steps, threads=asked.threads)


def last_checkpoint(folder: Path, *, remove_unfinished: bool = True) -> Path | None:
    """The newest checkpoint that was written to the end (its trainer_state.json, written last, reads); unfinished
    ones left by a kill are removed (they hold no finished step), unless ``remove_unfinished`` is False: a reader
    beside a running training (scripts/stores.py save-rl) must not delete the checkpoint being written."""
    if not folder.is_dir():
        return None
    found = sorted((p for p in folder.glob("checkpoint-*") if p.name.split("-")[-1].isdigit()),
                   key=lambda p: int(p.name.split("-")[-1]))
    while found:
        newest = found.pop()
        try:
            json.loads((newest / "trainer_state.json").read_text())
            return newest
        except (OSError, ValueError):
            if remove_unfinished:
                log.warning("removing %s: a checkpoint the last run did not finish writing", newest)
                shutil.rmtree(newest, ignore_errors=True)
    return None


def keep_lines_until(path: Path, step: int) -> None:
    """Drop the log lines of steps after ``step`` (they run again on resume); atomic rewrite."""
    if not path.exists():
        return
    kept = [line for line in path.read_text().splitlines() if line.strip() and json.loads(line)["step"] <= step]
    _write_atomic(path, "".join(line + "\n" for line in kept))


def _write_atomic(path: Path, text: str) -> None:
    """Write beside ``path`` and rename: a kill leaves the old file or the new one, never half of one."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    tmp.replace(path)


def prepare_folder(out: Path, settings: Settings, resume: bool) -> tuple[Settings, Path | None]:
    """Check ``out`` against ``--resume``; write settings.json for a new run. Returns the run's settings and the
    checkpoint to resume from."""
    saved_path = out / "settings.json"
    if resume:
        if not saved_path.exists():
            raise TrainSetupError(f"--resume: {out} holds no run (no settings.json); start it without --resume")
        settings = check_resume(Settings.from_json(json.loads(saved_path.read_text())), settings)
        ckpt = last_checkpoint(out / "checkpoints")
        step = 0 if ckpt is None else json.loads((ckpt / "trainer_state.json").read_text())["global_step"]
        for name in ("metrics.jsonl", "heldout.jsonl"):
            keep_lines_until(out / name, step)
        return settings, ckpt
    if saved_path.exists():
        raise TrainSetupError(f"{out} already holds a run: pass --resume to go on with it, or give a new --out")
    if out.exists() and any(out.iterdir()):
        raise TrainSetupError(f"{out} is not empty: give a new or empty folder as --out")
    out.mkdir(parents=True, exist_ok=True)
    _write_atomic(saved_path, json.dumps(settings.to_json(), indent=2) + "\n")
    return settings, None


def grpo_config(settings: Settings, out: Path, has_heldout: bool) -> Any:
    from trl import GRPOConfig

    gpu = settings.device == "gpu"
    # held-out prompts go 8 at a time (the engine decodes their 8 x G completions together), not one by one
    eval_batch = settings.eval_generations * max(8, settings.prompts_per_step)
    kwargs: dict[str, Any] = dict(
        output_dir=str(out / "checkpoints"), max_steps=settings.steps, seed=settings.seed, data_seed=settings.seed,
        per_device_train_batch_size=settings.num_generations * settings.prompts_per_step,
        gradient_accumulation_steps=1, num_generations=settings.num_generations,
        max_completion_length=settings.max_completion_tokens, temperature=settings.temperature,
        learning_rate=settings.learning_rate, beta=settings.beta, reward_weights=list(settings.reward_weights),
        logging_steps=1, save_strategy="steps", save_steps=settings.save_every, save_total_limit=2,
        eval_strategy="steps" if has_heldout else "no", eval_steps=settings.eval_every,
        per_device_eval_batch_size=eval_batch, num_generations_eval=settings.eval_generations,
        report_to="none", disable_tqdm=True, use_cpu=not gpu, bf16=gpu, activation_checkpointing=gpu,
        use_vllm=gpu, vllm_mode="colocate", dataloader_num_workers=0, remove_unused_columns=False,
    )
    if gpu:  # the policy loads from base-hf/ (fp32 as dequantized); train it in bf16 beside vLLM
        kwargs["model_init_kwargs"] = {"dtype": "bfloat16"}
    kwargs.update(settings.extra)
    return GRPOConfig(**kwargs)


def lora_config(settings: Settings) -> Any:
    from peft import LoraConfig

    return LoraConfig(r=settings.lora_rank, lora_alpha=settings.lora_alpha, lora_dropout=0.0,
                      target_modules="all-linear", task_type="CAUSAL_LM")


@dataclass(frozen=True)
class Prepared:
    """A run ready to train: its settings (the saved ones on resume), the checkpoint to resume from, its problems."""

    out: Path
    settings: Settings
    checkpoint: Path | None
    split: Split


def prepare(settings: Settings, out: Path, *, resume: bool = False) -> Prepared:
    """Everything that can be wrong with the request, checked before a model loads or the folder is claimed: the
    extra, the problems (a bad dataset or --problems-from run leaves no settings.json behind), the folder."""
    require_train_extra()
    split = None if resume else problem_split(settings)  # a resumed run's problems follow its saved settings
    settings, ckpt = prepare_folder(out, settings, resume)
    return Prepared(out, settings, ckpt, split or problem_split(settings))


def train(run: Prepared, *, progress: Callable[[dict[str, Any]], None] | None = None) -> Path:
    """Run (or resume) GRPO; returns the written GGUF. ``progress`` gets each logged step's record."""
    import torch

    from thinkscale.rl.runlog import finish

    settings, split, out = run.settings, run.split, run.out
    if settings.threads is not None:
        torch.set_num_threads(settings.threads)
    trainer, runlog, rollout = _trainer(settings, out, split, progress)
    t0 = time.perf_counter()
    try:
        if run.checkpoint is None and split.heldout:
            trainer.evaluate()  # the held-out rewards before any step (step 0 of the curve; logged by the RunLog)
        trainer.train(resume_from_checkpoint=str(run.checkpoint) if run.checkpoint is not None else None)
    finally:
        if rollout is not None:
            rollout.close()
    runlog.close()
    log.info("trained %d steps in %.0f s", trainer.state.global_step, time.perf_counter() - t0)
    return finish(trainer, settings, split, out)


def problem_split(settings: Settings) -> Split:
    """The run's training and held-out problems: a seeded draw, or the ones an eval run shows the model sometimes
    solves (``--problems-from``)."""
    if settings.problems_from is not None:
        return split_from_run(settings.data, settings.problems_from, model=settings.model, problems=settings.problems,
                              heldout=settings.heldout, seed=settings.seed, system=settings.system, task=settings.task)
    return split_problems(settings.data, problems=settings.problems, heldout=settings.heldout, seed=settings.seed,
                          system=settings.system, task=settings.task)


def _trainer(settings: Settings, out: Path, split: Split, progress: Callable[[dict[str, Any]], None] | None
             ) -> tuple[Any, Any, Any]:
    from transformers.trainer_callback import PrinterCallback, ProgressCallback
    from trl import GRPOTrainer

    from thinkscale.rl.runlog import RunLog

    os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")  # rollout_func is "experimental" in TRL 1.16
    loaded = load_gguf_model(settings.model, dtype="float32")
    model = loaded.model
    if settings.device == "gpu":  # vLLM loads the policy from a transformers folder, then takes the trainer's weights
        base = out / "base-hf"
        if not (base / "config.json").exists():
            model.save_pretrained(str(base))
            loaded.tokenizer.save_pretrained(str(base))
        model = str(base)
    runlog = RunLog(out, progress)
    rewards: list[Any] = list(reward_functions(settings.rewards))
    rollout = None
    if settings.generation == "llamacpp":
        from thinkscale.rl.rollout import LlamaCppRollout

        rollout = LlamaCppRollout(loaded.gguf, out, threads=settings.threads, seed=settings.seed)
    trainer = GRPOTrainer(
        model=model, reward_funcs=rewards, args=grpo_config(settings, out, bool(split.heldout)),
        train_dataset=hf_dataset(split.train, prefill=settings.prefill, tokenizer=loaded.tokenizer),
        eval_dataset=hf_dataset(split.heldout, prefill=settings.prefill, tokenizer=loaded.tokenizer)
        if split.heldout else None,
        processing_class=loaded.tokenizer, peft_config=lora_config(settings), callbacks=[runlog],
        rollout_func=rollout)
    for cb in (PrinterCallback, ProgressCallback):
        trainer.remove_callback(cb)
    return trainer, runlog, rollout
