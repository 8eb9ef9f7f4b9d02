"""Training problems for ``thinkscale train grpo``: a shipped dataset (or a JSONL file) as chat prompts with their
references, a seeded draw of training problems and a disjoint draw of held-out problems (the reward curve's
evaluation set; both from the training split, never a test set)."""

from __future__ import annotations

import random
from dataclasses import dataclass
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


def split_problems(data: str, *, problems: int, heldout: int, seed: int, system: str,
                   task: str | None = None) -> Split:
    """``problems`` training and ``heldout`` evaluation problems, drawn without overlap with ``random.Random(seed)``.
    A shipped evaluation set (``gsm8k``, ``math500``, ...) is refused: train on the training split."""
    if data in DATASETS and data not in TRAINING_SETS:
        raise ValueError(f"dataset {data!r} is an evaluation set: train on {' or '.join(TRAINING_SETS)} (or a file)")
    if problems < 1 or heldout < 0:
        raise ValueError(f"--problems must be >= 1 and --heldout >= 0 (got {problems}, {heldout})")
    ds = load_dataset(data, task=task, system=system_prompt(system))
    if problems + heldout > len(ds):
        raise ValueError(f"{problems} training + {heldout} held-out problems is more than the {len(ds)} in {ds.name}")
    order = random.Random(seed).sample(range(len(ds)), problems + heldout)
    pick = ds.problems
    return Split(tuple(pick[i] for i in order[:problems]), tuple(pick[i] for i in order[problems:]), ds)


def as_rows(problems: tuple[EvalProblem, ...]) -> list[dict[str, Any]]:
    """TRL's conversational prompt format plus the columns the rewards read (``reference``, ``task``)."""
    return [{"prompt": [{"role": m.role, "content": m.content} for m in p.problem.messages],
             "reference": p.reference, "task": p.task.value, "id": p.id} for p in problems]


def hf_dataset(problems: tuple[EvalProblem, ...]) -> Any:
    from datasets import Dataset as HFDataset

    return HFDataset.from_list(as_rows(problems))
