"""What a GRPO run leaves behind while it runs (the step log, the held-out log, the reward plot) and when it ends (the
adapter, the merged GGUF and its metadata). The Trainer calls :class:`RunLog` back; lines are appended and flushed as
each step ends, so a kill loses at most the step in flight."""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from transformers import TrainerCallback

from thinkscale.rl.data import Split, system_prompt
from thinkscale.rl.export import merged_state, write_model
from thinkscale.rl.grpo import Settings, last_checkpoint
from thinkscale.verifiers.prm_train import file_sha256


def _clean(logs: dict[str, Any]) -> dict[str, Any]:
    return {k: (v if not isinstance(v, float) or math.isfinite(v) else None) for k, v in logs.items()
            if isinstance(v, (int, float, str)) or v is None}


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.exists() else []


class RunLog(TrainerCallback):  # type: ignore[misc]
    """metrics.jsonl (training steps), heldout.jsonl (evaluations), reward.png, and the caller's progress hook."""

    def __init__(self, out: Path, progress: Callable[[dict[str, Any]], None] | None) -> None:
        self.out, self.progress = out, progress
        self._t = time.perf_counter()

    def _append(self, name: str, record: dict[str, Any]) -> None:
        with open(self.out / name, "a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")
            f.flush()

    def record_eval(self, step: int, metrics: dict[str, Any]) -> None:
        record = {"step": step, **_clean({k.removeprefix("eval_"): v for k, v in metrics.items()})}
        self._append("heldout.jsonl", record)
        if self.progress is not None:
            self.progress({"heldout": True, **record})

    def on_log(self, args: Any, state: Any, control: Any, logs: dict[str, Any] | None = None, **_: Any) -> None:
        if not logs:
            return
        if any(k.startswith("eval_") for k in logs):
            self.record_eval(state.global_step, logs)
            return
        if "loss" not in logs and "reward" not in logs:
            return  # the end-of-training summary: not a step
        now = time.perf_counter()
        record = {"step": state.global_step, "seconds": round(now - self._t, 3), "max_steps": state.max_steps,
                  **_clean(logs)}
        self._t = now
        self._append("metrics.jsonl", record)
        if self.progress is not None:
            self.progress(record)

    def on_save(self, args: Any, state: Any, control: Any, **_: Any) -> None:
        plot_rewards(self.out)

    def close(self) -> None:
        plot_rewards(self.out)


def plot_rewards(out: Path) -> Path | None:
    """reward.png: each reward's batch mean per step (with a moving average) and the held-out mean rewards."""
    steps, held = read_jsonl(out / "metrics.jsonl"), read_jsonl(out / "heldout.jsonl")
    if not steps and not held:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = sorted({k for r in steps + held for k in r if k.startswith("rewards/") and k.endswith("/mean")})
    fig, ax = plt.subplots(figsize=(8, 4.5))
    for i, key in enumerate(keys):
        name = key.split("/")[1]
        xs = [r["step"] for r in steps if r.get(key) is not None]
        ys = [r[key] for r in steps if r.get(key) is not None]
        color = f"C{i}"
        if ys:
            ax.plot(xs, ys, ".", color=color, alpha=0.35, label=f"{name} (training batch)")
            w = max(1, min(10, len(ys) // 5))
            avg = [sum(ys[max(0, j - w + 1):j + 1]) / len(ys[max(0, j - w + 1):j + 1]) for j in range(len(ys))]
            ax.plot(xs, avg, "-", color=color, alpha=0.8, label=f"{name} (moving mean of {w})")
        hx = [r["step"] for r in held if r.get(key) is not None]
        if hx:
            ax.plot(hx, [r[key] for r in held if r.get(key) is not None], "o-", color=color, lw=2,
                    label=f"{name} (held-out problems)")
    ax.set_xlabel("step")
    ax.set_ylabel("mean reward")
    ax.set_ylim(-0.02, 1.02)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="upper left")
    fig.tight_layout()
    path = out / "reward.png"
    tmp = out / "reward.tmp.png"
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    tmp.replace(path)
    return path


def finish(trainer: Any, settings: Settings, split: Split, out: Path) -> Path:
    """Save the adapter, write the merged GGUF and model.json (its provenance and held-out rewards)."""
    trainer.save_model(str(out / "adapter"))
    base_gguf = _base_gguf(settings)
    path = write_model(base_gguf, merged_state(trainer.model), out / "model.gguf", settings.gguf_type)
    meta = {"base_model": settings.model, "base_gguf_sha256": file_sha256(base_gguf),
            "steps": trainer.state.global_step,
            "system": system_prompt(settings.system), "rewards": list(settings.rewards), "data": settings.data,
            "train_problems": [p.id for p in split.train], "heldout_problems": [p.id for p in split.heldout],
            "heldout": read_jsonl(out / "heldout.jsonl"), "gguf_type": settings.gguf_type,
            "think_start": settings.prefill, "think_end": "</think>" if "<think>" in settings.prefill or
            settings.system == "think" else "", "settings": settings.to_json(),
            "gguf_sha256": file_sha256(path)}
    (out / "model.json").write_text(json.dumps(meta, indent=2) + "\n")
    plot_rewards(out)
    return path


def _base_gguf(settings: Settings) -> Path:
    from thinkscale.models import resolve

    return Path(resolve(settings.model, progress=False))


def export_checkpoint(run: Path, step: int | None, out: Path | None, gguf_type: str) -> Path:
    """A run's adapter (``RUN/adapter``, or checkpoint ``step``; default the final adapter, else the newest
    checkpoint) merged into the run's base model and written as a GGUF. Step 0 is the base model itself, written
    the same way: the control that separates what training changed from what the export's quantization did."""
    from peft import PeftModel

    from thinkscale.rl.weights import TrainSetupError, load_gguf_model

    settings_path = run / "settings.json"
    if not settings_path.exists():
        raise TrainSetupError(f"{run} holds no train grpo run (no settings.json)")
    settings = Settings.from_json(json.loads(settings_path.read_text()))
    if step == 0:
        loaded = load_gguf_model(settings.model)
        return write_model(loaded.gguf, merged_state(loaded.model), out or run / "model-0.gguf", gguf_type)
    adapter, label = export_adapter(run, step)
    loaded = load_gguf_model(settings.model)
    model = PeftModel.from_pretrained(loaded.model, str(adapter))
    target = out or run / f"model-{label}.gguf"
    return write_model(loaded.gguf, merged_state(model), target, gguf_type)


def export_adapter(run: Path, step: int | None) -> tuple[Path, str]:
    """The adapter ``train export`` merges and its label for the default file name (``model-LABEL.gguf``):
    checkpoint ``step``, else the final adapter (``final``), else the newest finished checkpoint (its step). A
    checkpoint still being written beside a running training is neither chosen nor deleted."""
    from thinkscale.rl.weights import TrainSetupError

    if step is not None:
        adapter = run / "checkpoints" / f"checkpoint-{step}"
        if not (adapter / "trainer_state.json").exists():
            raise TrainSetupError(f"{run} has no complete checkpoint at step {step}")
        return adapter, str(step)
    if (run / "adapter").is_dir():
        return run / "adapter", "final"
    newest = last_checkpoint(run / "checkpoints", remove_unfinished=False)
    if newest is None:
        raise TrainSetupError(f"{run} has no adapter yet: no checkpoint has been written")
    return newest, newest.name.removeprefix("checkpoint-")
