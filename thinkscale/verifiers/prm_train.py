"""Train a PRM head here: Math-Shepherd step labels from the policy's own rollouts, hidden-state features, split by
problem, held-out AUROC. ``thinkscale train prm`` runs ``train_prm``.

Labels (Wang et al., Math-Shepherd, https://arxiv.org/abs/2312.08935). For each training problem the policy samples
``solutions_per_problem`` solutions, split into steps on blank lines. From the prefix "steps 1..i" of each, the policy
runs ``rollouts`` completions; the step's label is the fraction that reach the reference answer (the soft estimate;
"> 0" is the paper's hard estimate). A solution's last step needs no rollout: its label is whether the solution itself
is right. ``max_rollout_steps`` caps the labelled non-final steps per solution (a seeded choice) to bound the cost.

Features: ``backend.hidden_states`` at the end of each labelled prefix (see ``trained_prm``). The head is a logistic
regression fitted on the soft labels of the *training* problems only; the held-out problems (a seeded
``heldout_fraction`` of them) give the reported AUROC:

- ``heldout_auroc``: step score vs the hard label (label > 0) over all held-out labelled steps;
- ``heldout_final_auroc``: last-step score vs the solution's correctness (what best-of-N with ``last`` relies on).

Labelling writes one JSON line per problem (labels and features) to ``<out>.steps.jsonl`` as it goes; a rerun with
the same settings skips the problems already there, so a killed run resumes.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import random
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from thinkscale.answers.equivalence import grade
from thinkscale.answers.task import Task, Verdict
from thinkscale.backends.base import Backend
from thinkscale.types import GenRequest, Ledger, Message, Problem, Role, ScoreRequest, Usage
from thinkscale.verifiers.base import DEFAULT_STEP_SEPARATOR, split_steps
from thinkscale.verifiers.trained_prm import FeatureBackend, LogisticHead, TrainedPRM, auroc, finite_or_none

log = logging.getLogger(__name__)

SOLVE_SYSTEM = ("Solve the problem step by step. Separate the steps with a blank line, and write the final answer "
                "as \\boxed{ANSWER}.")
DATA_DIR_ENV = "THINKSCALE_DATA_DIR"
# The benchmark files shipped in the package (thinkscale/eval/data: gsm8k_train, gsm8k_test, math500, ...). Found
# without importing thinkscale.eval, which imports the sweep runner.
DEFAULT_DATA_DIR = Path(str(resources.files("thinkscale").joinpath("eval", "data")))


# ---------------------------------------------------------------------- data

def dataset_path(data: str | os.PathLike[str]) -> Path:
    """A JSONL file: ``data`` itself when it is a file, else ``<data dir>/<data>.jsonl`` for a dataset name such as
    ``gsm8k_train`` (data dir: ``$THINKSCALE_DATA_DIR``, default the datasets shipped in ``thinkscale/eval/data``)."""
    p = Path(data)
    if p.is_file():
        return p
    data_dir = Path(os.environ.get(DATA_DIR_ENV, DEFAULT_DATA_DIR))
    named = data_dir / f"{data}.jsonl"
    if named.is_file():
        return named
    raise FileNotFoundError(f"dataset {str(data)!r} not found: neither a file nor {named}; pass a JSONL path "
                            f"(rows with id, problem, answer) or set {DATA_DIR_ENV} to the folder holding "
                            f"{p.name if p.suffix else p.name + '.jsonl'}")


def load_rows(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    rows = []
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            row = json.loads(line)
            if not isinstance(row, dict) or not {"id", "problem", "answer"} <= row.keys():
                raise ValueError(f"{path}:{n}: a row needs id, problem and answer")
            rows.append(row)
    return rows


def seeded_subset(rows: Sequence[dict[str, Any]], n: int, seed: int) -> list[dict[str, Any]]:
    """``n`` rows chosen by ``random.Random(seed)`` (the same rows for the same seed, whatever runs on them)."""
    if n > len(rows):
        raise ValueError(f"asked for {n} problems but the file has {len(rows)}")
    return [rows[i] for i in random.Random(seed).sample(range(len(rows)), n)]


def row_problem(row: dict[str, Any], system: str | None = SOLVE_SYSTEM) -> Problem:
    return Problem.from_text(row["problem"], id=str(row["id"]), system=system, reference=str(row["answer"]))


def file_sha256(path: str | os.PathLike[str]) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


# ---------------------------------------------------------------------- labels

@dataclass(frozen=True)
class LabelConfig:
    """How steps are labelled. Cost per problem: ``solutions_per_problem`` samples, plus ``rollouts`` samples from
    each of at most ``max_rollout_steps`` non-final steps per solution, each up to ``max_tokens``."""

    # The defaults fit 200 GSM8K problems with qwen2.5-coder-0.5b in about an hour on a 2-core CPU (~600 sampled
    # tokens per problem at ~38 tokens/s batched); raise them where compute allows (Math-Shepherd: K = 8, all steps).
    solutions_per_problem: int = 1
    rollouts: int = 2
    max_rollout_steps: int | None = 1  # None: every non-final step
    max_steps: int = 12  # longer solutions have their tail merged into step max_steps
    temperature: float = 0.7
    top_p: float = 0.95
    max_tokens: int = 256
    task: Task = Task.NUMERIC
    step_separator: str = DEFAULT_STEP_SEPARATOR
    joiner: str = "\n\n"
    system: str | None = SOLVE_SYSTEM
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("solutions_per_problem", "rollouts", "max_steps", "max_tokens"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.max_rollout_steps is not None and self.max_rollout_steps < 0:
            raise ValueError(f"max_rollout_steps must be >= 0 or None, got {self.max_rollout_steps}")
        if not self.temperature > 0:
            raise ValueError(f"labelling needs temperature > 0 (rollouts must differ), got {self.temperature}")
        object.__setattr__(self, "task", Task(self.task))


@dataclass(frozen=True)
class LabelledStep:
    problem_id: str
    solution: int  # index of the sampled solution
    step: int  # 0-based step index
    n_steps: int
    prefix: str  # steps 0..step joined: the partial solution whose hidden state is the feature
    label: float  # fraction of rollouts reaching the reference; for the final step the solution's own correctness
    rollouts: int  # 0 for the final step (no rollout needed)
    correct: int
    final_correct: bool  # whether the sampled solution's own answer is right
    is_final: bool

    @property
    def hard_label(self) -> int:
        return int(self.label > 0)


def cap_steps(steps: Sequence[str], max_steps: int, joiner: str) -> tuple[str, ...]:
    if len(steps) <= max_steps:
        return tuple(steps)
    return (*steps[:max_steps - 1], joiner.join(steps[max_steps - 1:]))


def _seed(rng: random.Random) -> int:
    return rng.randrange(2**31 - 1)


def label_problem(problem: Problem, backend: Backend, cfg: LabelConfig, *, ledger: Ledger) -> list[LabelledStep]:
    """Sample solutions to ``problem`` and label their steps by rollouts (see the module docstring). Two batched
    ``generate`` calls (solutions, then every rollout), charged to ``Role.GENERATOR``. Deterministic per
    (seed, problem id), whatever order problems run in."""
    if problem.reference is None:
        raise ValueError(f"problem {problem.id!r} has no reference answer to label against")
    reference = problem.reference
    rng = random.Random(f"{cfg.seed}:{problem.id}")

    def right(text: str) -> bool:
        return grade(cfg.task, text, reference) is Verdict.EQUIVALENT

    (solved,) = backend.generate([GenRequest(
        messages=problem.messages, n=cfg.solutions_per_problem, temperature=cfg.temperature, top_p=cfg.top_p,
        max_tokens=cfg.max_tokens, seed=_seed(rng))])
    ledger.charge(Role.GENERATOR, solved.usage)
    plans = []
    for j, sample in enumerate(solved.samples):
        steps = cap_steps(split_steps(sample.text, cfg.step_separator), cfg.max_steps, cfg.joiner)
        if not steps:
            continue
        chosen = list(range(len(steps) - 1))
        if cfg.max_rollout_steps is not None and len(chosen) > cfg.max_rollout_steps:
            chosen = sorted(rng.sample(chosen, cfg.max_rollout_steps))
        plans.append((j, steps, right(sample.text), chosen))
    requests, keys = [], []
    for j, steps, _, chosen in plans:
        for i in chosen:
            prefix = cfg.joiner.join(steps[:i + 1])
            requests.append(GenRequest(
                messages=(*problem.messages, Message("assistant", prefix + cfg.joiner)), continue_final=True,
                n=cfg.rollouts, temperature=cfg.temperature, top_p=cfg.top_p, max_tokens=cfg.max_tokens,
                seed=_seed(rng)))
            keys.append((j, i, prefix, len(steps)))
    completions = backend.generate(requests) if requests else []
    for c in completions:
        ledger.charge(Role.GENERATOR, c.usage)
    out = []
    finals = {j: ok for j, _, ok, _ in plans}
    for (j, i, prefix, n), c in zip(keys, completions, strict=True):
        correct = sum(right(prefix + cfg.joiner + s.text) for s in c.samples)
        out.append(LabelledStep(problem.id, j, i, n, prefix, correct / len(c.samples), len(c.samples), correct,
                                finals[j], False))
    for j, steps, ok, _ in plans:
        out.append(LabelledStep(problem.id, j, len(steps) - 1, len(steps), cfg.joiner.join(steps), float(ok), 0,
                                int(ok), ok, True))
    out.sort(key=lambda s: (s.solution, s.step))
    return out


def step_features(problem: Problem, steps: Sequence[LabelledStep], backend: FeatureBackend, *,
                  ledger: Ledger) -> np.ndarray:
    """Hidden states at the end of each labelled prefix (the same requests ``TrainedPRM`` scores with), charged to
    ``Role.VERIFIER``: computing features is what the PRM costs at inference too."""
    if not steps:
        return np.zeros((0, 0), dtype=np.float32)
    hidden = backend.hidden_states([ScoreRequest(messages=problem.messages, continuation=s.prefix or " ")
                                    for s in steps])
    ledger.charge(Role.VERIFIER, hidden.usage)
    return np.asarray(hidden.vectors, dtype=np.float32)


# ---------------------------------------------------------------------- resumable labelling

class StepCache:
    """``<out>.steps.jsonl``: a header line with the settings, then one line per labelled problem, and after each run
    that labelled something a ``{"run": {...}}`` line with its wall time (for cost estimates across resumed runs)."""

    def __init__(self, path: Path, header: dict[str, Any]) -> None:
        self.path = path
        self.header = header
        self.done: dict[str, dict[str, Any]] = {}
        self.runs: list[dict[str, Any]] = []
        if path.is_file():
            with open(path, encoding="utf-8") as f:
                lines = [json.loads(line) for line in f if line.strip()]
            if lines and lines[0].get("header") != header:
                raise ValueError(f"{path} holds labels made with other settings ({lines[0].get('header')}); "
                                 "delete it or write the PRM to another --out")
            for rec in lines[1:]:
                if "run" in rec:
                    self.runs.append(rec["run"])
                else:
                    self.done[rec["problem_id"]] = rec
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps({"header": header}) + "\n")

    def add_run(self, run: dict[str, Any]) -> None:
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(json.dumps({"run": run}) + "\n")
        self.runs.append(run)

    def add(self, rec: dict[str, Any]) -> None:
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(json.dumps(rec) + "\n")
        self.done[rec["problem_id"]] = rec


def _usage_dict(u: Usage) -> dict[str, Any]:
    return u.to_dict()


def _add_usage(a: dict[str, Any] | None, b: dict[str, Any]) -> dict[str, Any]:
    return b if a is None else (Usage(**a) + Usage(**b)).to_dict()


# ---------------------------------------------------------------------- training

def _metrics(steps: Sequence[LabelledStep], probs: np.ndarray) -> dict[str, Any]:
    """AUROC vs hard labels over all steps, AUROC of final steps vs correctness, Brier score vs soft labels."""
    out: dict[str, Any] = {"steps": len(steps)}
    if not steps:
        return out
    hard = np.array([s.hard_label for s in steps])
    soft = np.array([s.label for s in steps])
    final = np.array([s.is_final for s in steps])
    out["auroc"] = finite_or_none(auroc(hard, probs)) if 0 < hard.sum() < len(hard) else None
    fc = np.array([s.final_correct for s in steps])[final]
    out["final_auroc"] = finite_or_none(auroc(fc, probs[final])) if 0 < fc.sum() < len(fc) else None
    out["brier"] = float(np.mean((probs - soft) ** 2))
    return out


def label_stats(steps: Sequence[LabelledStep]) -> dict[str, Any]:
    labels = np.array([s.label for s in steps]) if steps else np.zeros(0)
    finals = [s for s in steps if s.is_final]
    hist: dict[str, int] = {}
    for v in labels:
        key = f"{v:.3g}"
        hist[key] = hist.get(key, 0) + 1
    return {"steps": len(steps), "rollout_steps": sum(not s.is_final for s in steps), "final_steps": len(finals),
            "mean_label": float(labels.mean()) if len(labels) else None,
            "hard_positive_rate": float((labels > 0).mean()) if len(labels) else None,
            "solutions_correct_rate": (sum(s.final_correct for s in finals) / len(finals)) if finals else None,
            "label_histogram": dict(sorted(hist.items(), key=lambda kv: float(kv[0])))}


def _labelling_cost(cache: StepCache, ids: Sequence[str]) -> tuple[float, dict[str, Any]]:
    """Summed per-problem labelling seconds and usage by role of ``ids``' problems."""
    usage: dict[str, Any] = {}
    seconds = 0.0
    for pid in ids:
        rec = cache.done[pid]
        seconds += rec["seconds"]
        for role, u in rec["usage"].items():
            usage[role] = _add_usage(usage.get(role), u)
    return seconds, usage


def heldout_split(ids: Sequence[str], heldout_fraction: float, seed: int) -> set[str]:
    """The held-out problems: a seeded shuffle's first ``heldout_fraction`` (at least one when there are two or
    more problems and the fraction is > 0, never all of them)."""
    shuffled = list(ids)
    random.Random(f"{seed}:split").shuffle(shuffled)
    n_held = round(heldout_fraction * len(ids)) if len(ids) > 1 else 0
    n_held = min(max(n_held, 1 if heldout_fraction > 0 and len(ids) > 1 else 0), len(ids) - 1)
    return set(shuffled[:n_held])


def _gather(cache: StepCache, ids: Sequence[str]) -> tuple[list[LabelledStep], np.ndarray]:
    """The labelled steps and their features of ``ids``' problems, in that order."""
    steps, feats = [], []
    for pid in ids:
        rec = cache.done[pid]
        steps += [LabelledStep(**s) for s in rec["steps"]]
        feats += rec["features"]
    return steps, np.asarray(feats, dtype=np.float32)


def train_prm(backend: FeatureBackend, rows: Sequence[dict[str, Any]], out: str | os.PathLike[str], *,
              cfg: LabelConfig = LabelConfig(), heldout_fraction: float = 0.25, c: float = 0.1,
              data: dict[str, Any] | None = None, workers: int = 1,
              progress: Callable[[int, int, str, float], None] | None = None) -> dict[str, Any]:
    """Label ``rows`` (id, problem, answer), fit the head on the training problems, evaluate on the held-out ones,
    save the PRM to ``out`` and return its metadata (which includes the metrics).

    ``workers`` problems are labelled concurrently (the backend must be thread-safe, as the embedded one is);
    results do not depend on it. ``progress(done, total, problem_id, seconds)`` is called after each newly labelled
    problem."""
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    if not 0 <= heldout_fraction < 1:
        raise ValueError(f"heldout_fraction must be in [0, 1), got {heldout_fraction}")
    if not rows:
        raise ValueError("no training problems")
    out = Path(out)
    info = backend.info()
    header = {"label_config": {**asdict(cfg), "task": str(cfg.task)}, "model_fingerprint": info.fingerprint}
    cache = StepCache(out.with_name(out.name + ".steps.jsonl"), header)
    t_start = time.perf_counter()
    problems = [row_problem(r, cfg.system) for r in rows]
    todo = [p for p in problems if p.id not in cache.done]
    lock = threading.Lock()
    done_before = len(problems) - len(todo)

    def label_one(problem: Problem) -> None:
        t0 = time.perf_counter()
        ledger = Ledger()
        steps = label_problem(problem, backend, cfg, ledger=ledger)
        feats = step_features(problem, steps, backend, ledger=ledger)
        seconds = time.perf_counter() - t0
        with lock:
            cache.add({"problem_id": problem.id, "steps": [asdict(s) for s in steps], "features": feats.tolist(),
                       "seconds": seconds, "usage": {str(r): _usage_dict(u) for r, u in ledger.by_role().items()}})
            if progress is not None:
                progress(len(cache.done), len(problems), problem.id, seconds)

    t_label = time.perf_counter()
    if workers == 1:
        for problem in todo:
            label_one(problem)
    else:
        # The embedded backend batches concurrent generate() calls together: several problems in flight keep
        # many sequences decoding at once, which is where a CPU gets its throughput.
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="prm-label") as pool:
            for future in [pool.submit(label_one, p) for p in todo]:
                future.result()
    label_wall = time.perf_counter() - t_label
    if todo:
        cache.add_run({"problems": len(todo), "wall_seconds": label_wall, "workers": workers})

    ids = [p.id for p in problems]
    held = heldout_split(ids, heldout_fraction, cfg.seed)
    train_steps, x_train = _gather(cache, [i for i in ids if i not in held])
    held_steps, x_held = _gather(cache, [i for i in ids if i in held])
    if not train_steps:
        raise ValueError("no labelled steps in the training problems (every sample was empty)")
    head = LogisticHead.fit(x_train, np.array([s.label for s in train_steps]), c=c, seed=cfg.seed)
    metrics = {"train": _metrics(train_steps, head.predict(x_train)),
               "heldout": _metrics(held_steps, head.predict(x_held) if len(held_steps) else np.zeros(0))}
    seconds, usage = _labelling_cost(cache, ids)
    meta = {
        "model": {"name": info.name, "fingerprint": info.fingerprint, "n_params": info.n_params},
        "feature": "final hidden state (after output norm) at the last token of the step prefix",
        "feature_dim": head.dim,
        "data": {**(data or {}), "problems": len(ids)},
        "split": {"by": "problem", "seed": cfg.seed, "heldout_fraction": heldout_fraction,
                  "train_problems": sorted(set(ids) - held), "heldout_problems": sorted(held),
                  "train_steps": len(train_steps), "heldout_steps": len(held_steps)},
        "label_config": header["label_config"],
        "label_stats": {"all": label_stats(train_steps + held_steps), "train": label_stats(train_steps),
                        "heldout": label_stats(held_steps)},
        "head": {"kind": "logistic", "c": c, "soft_labels": True},
        "metrics": metrics,
        "heldout_auroc": metrics["heldout"].get("auroc"),
        "labelling_cost": {"seconds": seconds, "by_role": usage},  # seconds: summed per-problem latency
        "labelled_this_run": {"problems": len(todo), "wall_seconds": label_wall, "workers": workers,
                              "problems_before": done_before},
        # every run that labelled problems (with its --workers): wall seconds per problem across resumed runs
        "labelling_runs": cache.runs,
        "wall_seconds_this_run": time.perf_counter() - t_start,
    }
    TrainedPRM(backend=backend, head=head, metadata=meta, step_separator=cfg.step_separator,
               joiner=cfg.joiner).save(out)
    return meta
