"""Training problems for ``thinkscale train grpo``: a shipped dataset (or a JSONL file) as chat prompts with their
references, a seeded draw of training problems and a disjoint draw of held-out problems (the reward curve's
evaluation set; both from the training split, never a test set)."""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from thinkscale.eval.datasets import DATASETS, Dataset, EvalProblem, load_dataset
from thinkscale.prompts import MATH_SYSTEM, THINK_SYSTEM

SYSTEMS = {"think": THINK_SYSTEM, "boxed": MATH_SYSTEM}
# Shipped datasets a policy may be trained on: the test sets are for evaluation only.
TRAINING_SETS = ("gsm8k-train", "game24")


@dataclass(frozen=True)
class Split:
    train: tuple[EvalProblem, ...]
    heldout: tuple[EvalProblem, ...]
    dataset: Dataset


def system_prompt(name_or_text: str) -> str:
    """``think`` / ``boxed`` (the shipped prompts), or the text of a system prompt."""
    text = SYSTEMS.get(name_or_text, name_or_text)
    if not text.strip():
        raise ValueError("the system prompt is empty: give think, boxed or a text")
    return text


def _check_training_set(data: str) -> None:
    if data in DATASETS and data not in TRAINING_SETS:
        raise ValueError(f"dataset {data!r} is an evaluation set: train on {' or '.join(TRAINING_SETS)} (or a file)")


def split_problems(data: str, *, problems: int, heldout: int, seed: int, system: str,
                   task: str | None = None) -> Split:
    """``problems`` training and ``heldout`` evaluation problems, drawn without overlap with ``random.Random(seed)``.
    A shipped evaluation set (``gsm8k``, ``math500``, ...) is refused: train on the training split."""
    _check_training_set(data)
    if problems < 1 or heldout < 0:
        raise ValueError(f"--problems must be >= 1 and --heldout >= 0 (got {problems}, {heldout})")
    ds = load_dataset(data, task=task, system=system_prompt(system))
    if problems + heldout > len(ds):
        raise ValueError(f"{problems} training + {heldout} held-out problems is more than the {len(ds)} in {ds.name}")
    order = random.Random(seed).sample(range(len(ds)), problems + heldout)
    pick = ds.problems
    return Split(tuple(pick[i] for i in order[:problems]), tuple(pick[i] for i in order[problems:]), ds)


def solve_rates(run: str | Path, model: str) -> tuple[str, dict[str, float]]:
    """The share of right chains per problem in an eval run's self-consistency draws of ``model`` (``thinkscale eval
    --strategy self-consistency`` on training problems), and the run's dataset."""
    from thinkscale.eval.draws import read_draws

    stored = read_draws(run, model=model)
    right: dict[str, list[bool]] = {}
    for r in stored.rows:
        right.setdefault(r["problem_id"], []).append(bool(r["correct"]))
    if not right:
        raise ValueError(f"{run}: no self-consistency chains of {model}")
    return str(stored.cfg["dataset"]), {pid: sum(v) / len(v) for pid, v in right.items()}


def split_from_run(data: str, run: str | Path, *, model: str, problems: int, heldout: int, seed: int, system: str,
                   task: str | None = None) -> Split:
    """Training problems the model *sometimes* solves: those of an eval run where some but not all of its chains
    were right (a group that is all right or all wrong teaches GRPO nothing), at most ``problems`` of them (a seeded
    draw); held-out problems drawn from the rest of the dataset, none of them in the run."""
    _check_training_set(data)
    dataset, rates = solve_rates(run, Path(model).stem if model.endswith(".gguf") else model)
    if dataset != data:
        raise ValueError(f"{run} holds chains on {dataset!r}, not on --data {data!r}")
    ds = load_dataset(data, task=task, system=system_prompt(system))
    mixed = [p for p in ds.problems if 0.0 < rates.get(p.id, 0.0) < 1.0]
    if not mixed:
        raise ValueError(f"{run}: no problem where some but not all chains were right")
    rng = random.Random(seed)
    train = sorted(rng.sample(range(len(mixed)), min(problems, len(mixed))))
    rest = [p for p in ds.problems if p.id not in rates]
    if heldout > len(rest):
        raise ValueError(f"{heldout} held-out problems is more than the {len(rest)} of {ds.name} outside {run}")
    held = rng.sample(range(len(rest)), heldout)
    return Split(tuple(mixed[i] for i in train), tuple(rest[i] for i in held), ds)


def as_rows(problems: tuple[EvalProblem, ...], *, prefill: str = "", tokenizer: Any = None) -> list[dict[str, Any]]:
    """TRL's conversational prompt format plus the columns the rewards read (``reference``, ``task``, ``prefill``).

    With a ``prefill`` (``<think>\n``: the reply starts inside the reasoning block, as R1-style templates open it)
    the prompt is the chat template's text with the prefill after the generation prompt, a plain string: TRL's own
    generation always opens a fresh assistant turn for chat prompts, so the opened turn is written out here."""
    rows = []
    for p in problems:
        messages = [{"role": m.role, "content": m.content} for m in p.problem.messages]
        prompt: Any = messages
        if prefill:
            if tokenizer is None:
                raise ValueError("a prefilled prompt needs the tokenizer's chat template")
            prompt = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True) + prefill
        rows.append({"prompt": prompt, "reference": p.reference, "task": p.task.value, "id": p.id,
                     "prefill": prefill})
    return rows


def hf_dataset(problems: tuple[EvalProblem, ...], *, prefill: str = "", tokenizer: Any = None) -> Any:
    from datasets import Dataset as HFDataset

    return HFDataset.from_list(as_rows(problems, prefill=prefill, tokenizer=tokenizer))
