"""Generation for GRPO on the embedded llama.cpp backend, through TRL's own hook (``GRPOTrainer(rollout_func=...)``):
TRL keeps the RL loop (rewards, advantages, the clipped objective, logging); only sampling moves to the faster engine.

The backend runs the very GGUF the trainer dequantized, plus the policy's current LoRA adapter: before the first
rollout of each optimizer step the adapter is written as a llama.cpp adapter GGUF (a few MB) and applied
(``LlamaCppBackend.set_lora``), so the samples come from the policy being trained, not from a stale copy. TRL then
scores the returned token ids with the transformers model as it does its own samples.
"""

from __future__ import annotations

import hashlib
import itertools
from pathlib import Path
from typing import Any

from thinkscale.backends.llamacpp import LlamaCppBackend
from thinkscale.rl.export import Layout, write_lora_gguf
from thinkscale.types import GenRequest, Message


def _request(prompt: Any, **knobs: Any) -> GenRequest:
    """A chat prompt (a list of messages) is rendered by the backend's template; a string (an already rendered
    prompt, e.g. with a prefilled ``<think>``) is used as it is."""
    if isinstance(prompt, str):
        return GenRequest(prompt=prompt, **knobs)
    return GenRequest(messages=tuple(Message(m["role"], m["content"]) for m in prompt), **knobs)


class StepSeeds:
    """The sampling seeds of a run's rollout calls: a function of the run's seed, the optimizer step, the mode
    (``train``/``eval``) and how many calls this step and mode already made, never of how many calls this process
    made, so a resumed run samples what the run without the kill would have sampled, and a held-out evaluation
    never reuses a training rollout's seeds."""

    def __init__(self, seed: int) -> None:
        self.seed = seed
        self._last: tuple[int, str, int] | None = None  # (step, mode, call index) of the latest call

    def next(self, step: int, mode: str, n: int) -> list[int]:
        """The seeds of the next call's ``n`` requests."""
        last = self._last
        call = last[2] + 1 if last is not None and last[:2] == (step, mode) else 0
        self._last = (step, mode, call)
        return [int.from_bytes(hashlib.sha256(repr((self.seed, step, mode, call, j)).encode()).digest()[:4]) % 2**31
                for j in range(n)]


class LlamaCppRollout:
    """A TRL ``rollout_func``: prompts (each repeated once per completion it needs, as TRL's sampler hands them) in;
    prompt and completion token ids and the sampler's logprobs out, one row per prompt row."""

    def __init__(self, gguf: Path, work: Path, *, threads: int | None, seed: int, n_ctx: int = 8192) -> None:
        self.gguf, self.work, self.seed = gguf, work, seed
        self.backend = LlamaCppBackend(str(gguf), n_ctx=n_ctx, n_threads=threads)
        self.layout = Layout.read(gguf)  # read once: parsing the GGUF's vocabulary takes seconds
        self._synced: int | None = None
        self._seeds = StepSeeds(seed)

    def sync(self, trainer: Any) -> None:
        """Hand the policy's current adapter to llama.cpp (once per optimizer step)."""
        step = trainer.state.global_step
        if self._synced == step:
            return
        model = trainer.accelerator.unwrap_model(trainer.model)
        path = write_lora_gguf(self.layout, model, self.work / "rollout-lora.gguf")
        self.backend.set_lora(path)
        self._synced = step

    def __call__(self, prompts: list[Any], trainer: Any) -> dict[str, Any]:
        self.sync(trainer)
        args = trainer.args
        rows = [(key, len(list(group))) for key, group in itertools.groupby(prompts, key=repr)]
        firsts = list(itertools.accumulate([0] + [n for _, n in rows[:-1]]))
        seeds = self._seeds.next(trainer.state.global_step, "train" if trainer.model.training else "eval", len(rows))
        reqs = [_request(prompts[i], n=n, temperature=args.temperature,
                         top_p=args.top_p if args.top_p is not None else 1.0,
                         max_tokens=args.max_completion_length, logprobs=True, seed=seed)
                for i, (_, n), seed in zip(firsts, rows, seeds, strict=True)]
        out: dict[str, list[Any]] = {"prompt_ids": [], "completion_ids": [], "logprobs": []}
        for req, completion in zip(reqs, self.backend.generate(reqs), strict=True):
            prompt_ids = self.backend.tokenize(self.backend.render(req.messages, req.prompt))
            for s in completion.samples:
                if s.token_ids is None or s.logprobs is None:
                    raise RuntimeError("the llama.cpp backend returned no token ids or logprobs")
                out["prompt_ids"].append(list(prompt_ids))
                out["completion_ids"].append(list(s.token_ids))
                out["logprobs"].append(list(s.logprobs))
        return out

    def close(self) -> None:
        self.backend.close()
