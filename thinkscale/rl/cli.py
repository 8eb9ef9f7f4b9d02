"""``thinkscale train grpo`` and ``thinkscale train export``: registered on the ``train`` group by ``register``.

    thinkscale train grpo --model qwen2.5-coder-0.5b --data gsm8k-train --steps 100 --out runs/rl/grpo-0.5b
    thinkscale train grpo --out runs/rl/grpo-0.5b --resume          # after a kill: from the newest checkpoint
    thinkscale train export runs/rl/grpo-0.5b --checkpoint 40       # a checkpoint's adapter, merged, as a GGUF
    thinkscale solve --model runs/rl/grpo-0.5b/model.gguf --system think "..."

Nothing here imports torch until a command runs.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from thinkscale.cliutil import fail


def _progress_bar(total: int) -> tuple[Any, Any]:
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    bar = Progress(TextColumn("[bold]grpo"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[info]}"),
                   TimeRemainingColumn(), console=Console(stderr=True), transient=False)
    task = bar.add_task("grpo", total=total, info="")
    state: dict[str, str] = {"train": "", "heldout": ""}

    def update(record: dict[str, Any]) -> None:
        rewards = " ".join(f"{k.split('/')[1]} {v:.2f}" for k, v in record.items()
                           if k.startswith("rewards/") and k.endswith("/mean") and v is not None)
        if record.get("heldout"):
            state["heldout"] = f"held-out: {rewards}"
        else:
            total_reward = record.get("reward", float("nan"))
            state["train"] = f"reward {total_reward:.2f} ({rewards}) {record['seconds']:.0f}s/step"
            bar.update(task, completed=record["step"], total=record.get("max_steps") or total)
        bar.update(task, info=" | ".join(s for s in (state["train"], state["heldout"]) if s))

    return bar, update


def _floats(text: str | None, what: str) -> tuple[float, ...] | None:
    if text is None:
        return None
    try:
        return tuple(float(x) for x in text.split(","))
    except ValueError:
        fail(f"{what} {text!r}: give comma-separated numbers, e.g. 1,0.25")


def grpo_command(
    out: Annotated[Path, typer.Option(help="Run folder: checkpoints, logs, the reward plot, the trained model.gguf.")],
    model: Annotated[str, typer.Option(help="Catalog name or .gguf path (dequantized into transformers).")]
    = "qwen2.5-coder-0.5b",
    data: Annotated[str, typer.Option(help="Training dataset: gsm8k-train, game24, or a .jsonl file (--task).")]
    = "gsm8k-train",
    task: Annotated[str | None, typer.Option(help="Answer task of a .jsonl dataset (numeric, math, integer, "
                                             "game24).")] = None,
    system: Annotated[str, typer.Option(help="System prompt: think (<think>...</think>, then \\boxed{}), boxed, "
                                       "or a text.")] = "think",
    prefill: Annotated[str | None, typer.Option(help="The reply's opening, after the generation prompt (default: "
                                               "'<think>' and a newline with --system think, else none).")]
    = None,
    problems: Annotated[int, typer.Option(help="Training problems (a seeded draw).")] = 256,
    problems_from: Annotated[Path | None, typer.Option(help="An eval run of self-consistency chains of --model on "
                                                       "--data: train on the problems where some but not all "
                                                       "chains were right (at most --problems).")] = None,
    heldout: Annotated[int, typer.Option(help="Held-out training problems for the reward curve (0: none).")] = 32,
    steps: Annotated[int, typer.Option(help="Optimizer steps.")] = 100,
    num_generations: Annotated[int | None, typer.Option(help="Completions per prompt (the GRPO group; CPU 4, "
                                                        "GPU 8).")] = None,
    prompts_per_step: Annotated[int | None, typer.Option(help="Prompts per step (CPU 1, GPU 8).")] = None,
    max_completion_tokens: Annotated[int | None, typer.Option(help="Completion cap (CPU 256, GPU 512).")] = None,
    temperature: Annotated[float | None, typer.Option(help="Sampling temperature (0.8).")] = None,
    learning_rate: Annotated[float | None, typer.Option(help="LoRA learning rate (CPU 5e-5, GPU 2e-5).")] = None,
    beta: Annotated[float | None, typer.Option(help="KL coefficient against the base model (0: none).")] = None,
    lora_rank: Annotated[int | None, typer.Option(help="LoRA rank (16).")] = None,
    rewards: Annotated[str, typer.Option(help="Comma-separated rewards: correct (the answer checker), format "
                                         "(<think> block then answer).")] = "correct,format",
    reward_weights: Annotated[str | None, typer.Option(help="Comma-separated weights, one per reward (1,0.25).")]
    = None,
    save_every: Annotated[int | None, typer.Option(help="Checkpoint every N steps (5).")] = None,
    eval_every: Annotated[int | None, typer.Option(help="Held-out rewards every N steps (10).")] = None,
    device: Annotated[str, typer.Option(help="cpu (fp32, transformers generation) or gpu (bf16, TRL's vLLM "
                                       "generation).")] = "cpu",
    generation: Annotated[str, typer.Option(help="CPU sampling engine: transformers, or llamacpp (the embedded "
                                           "backend with the policy's current LoRA adapter, through TRL's "
                                           "rollout_func).")] = "transformers",
    threads: Annotated[int | None, typer.Option(help="torch (and llama.cpp) threads (default: every core).")]
    = None,
    gguf_type: Annotated[str | None, typer.Option(help="Type of the written model.gguf: f32, f16, q8_0, q4_k_m, "
                                                  "q5_k_m, q6_k.")] = None,
    seed: Annotated[int, typer.Option(help="Seed of the problem draw, the data order and the sampling.")] = 0,
    resume: Annotated[bool, typer.Option(help="Go on with the run in --out from its newest checkpoint.")] = False,
) -> None:
    """Teach the model with GRPO (TRL) and a LoRA adapter: rewards from thinkscale's answer checkers; the trained
    model is written back as a GGUF for solve/eval/serve."""
    from thinkscale.rl.grpo import Settings

    names = tuple(r.strip() for r in rewards.split(",") if r.strip())
    weights = _floats(reward_weights, "--reward-weights")
    given = dict(model=model, data=data, task=task, system=system, problems=problems, heldout=heldout, steps=steps,
                 problems_from=None if problems_from is None else str(problems_from),
                 num_generations=num_generations, prompts_per_step=prompts_per_step,
                 max_completion_tokens=max_completion_tokens, temperature=temperature, learning_rate=learning_rate,
                 beta=beta, lora_rank=lora_rank, rewards=names, save_every=save_every, eval_every=eval_every,
                 threads=threads, gguf_type=gguf_type, seed=seed, generation=generation,
                 prefill=None if prefill is None else prefill.replace("\\n", "\n"))
    if weights is None:
        weights = tuple(1.0 if n == "correct" else 0.25 for n in names)
    try:
        settings = Settings.for_device(device, reward_weights=weights, **given)
    except (ValueError, TypeError) as e:
        fail(str(e))
    _run(settings, out, resume)


def _run(settings: Any, out: Path, resume: bool) -> None:
    import warnings

    from thinkscale.eval.store import StoreError
    from thinkscale.rl.grpo import prepare, train
    from thinkscale.rl.weights import TrainSetupError

    # peft says it "assumes the vocabulary was not modified" at every save (true: the GGUF folder has no config
    # file); transformers warns about its own deprecated attribute inside TRL. Neither is the user's to act on.
    warnings.filterwarnings("ignore", message="Could not find a config file", category=UserWarning)
    warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
    try:
        run = prepare(settings, out, resume=resume)
        bar, update = _progress_bar(run.settings.steps)
        with bar:
            path = train(run, progress=update)
    except (TrainSetupError, ValueError, StoreError, OSError) as e:  # a bad dataset, task, run or --out folder
        fail(str(e))
    sys.stdout.write(json.dumps({"model": str(path), "meta": str(out / "model.json"),
                                 "plot": str(out / "reward.png")}, indent=2) + "\n")


def export_command(
    run: Annotated[Path, typer.Argument(help="A train grpo run folder.")],
    checkpoint: Annotated[int | None, typer.Option(help="Step of the checkpoint to export (default: the final "
                                                   "adapter, else the newest checkpoint; 0: the base model, "
                                                   "no adapter).", min=0)] = None,
    out: Annotated[Path | None, typer.Option(help="GGUF to write (default RUN/model-N.gguf for checkpoint N, "
                                                  "RUN/model-final.gguf for the final adapter).")] = None,
    gguf_type: Annotated[str, typer.Option(help="f32, f16, q8_0, q4_k_m, q5_k_m or q6_k.")] = "q8_0",
) -> None:
    """Merge a run's adapter (final or a checkpoint's) into the base model and write it as a GGUF."""
    from thinkscale.rl.runlog import export_checkpoint
    from thinkscale.rl.weights import TrainSetupError

    try:
        path = export_checkpoint(run, checkpoint, out, gguf_type)
    except (TrainSetupError, ValueError, OSError) as e:
        fail(str(e))
    sys.stdout.write(str(path) + "\n")


def register(train_app: typer.Typer) -> None:
    """Add ``grpo`` and ``export`` to the ``train`` group."""
    train_app.command("grpo")(grpo_command)
    train_app.command("export")(export_command)
