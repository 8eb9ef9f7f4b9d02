"""``thinkscale train``: train verifiers on this machine.

    thinkscale train prm --model qwen2.5-coder-0.5b --data gsm8k_train --problems 200 --rollouts 2 --out prm.json

The defaults (1 solution per problem, 1 labelled step per solution, 2 rollouts, 256 tokens) fit 200 problems with the
default model in about an hour on a 2-core CPU; every knob scales the cost linearly.

Labels go to ``<out>.steps.jsonl`` as they are made, so an interrupted run continues where it stopped when rerun
with the same settings. Errors are one line on stderr (``error: ...``) with exit status 1 (2 for bad options).
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path
from typing import Annotated

import typer

from thinkscale.cliutil import fail, os_reason, unwritable_file

app = typer.Typer(help="Train verifiers (a process reward model head on the policy's own hidden states).",
                  no_args_is_help=True)


@app.command("prm")
def prm(
    out: Annotated[Path, typer.Option(help="Where to write the trained PRM (JSON).")],
    model: Annotated[str, typer.Option(help="Policy model whose hidden states are the features: catalog name "
                                       "or .gguf path.")] = "qwen2.5-coder-0.5b",
    data: Annotated[str, typer.Option(help="Training data: a dataset name in $THINKSCALE_DATA_DIR "
                                      "(default: thinkscale/eval/data) or a JSONL path with id, problem, answer.")]
    = "gsm8k_train",
    problems: Annotated[int, typer.Option(help="Training problems (a seeded subset of the file).")] = 200,
    rollouts: Annotated[int, typer.Option(help="Completions per labelled step (Math-Shepherd K).")] = 2,
    solutions: Annotated[int, typer.Option(help="Sampled solutions per problem.")] = 1,
    rollout_steps: Annotated[int, typer.Option(help="Labelled non-final steps per solution (at most).")] = 1,
    max_tokens: Annotated[int, typer.Option(help="Completion tokens per solution and per rollout.")] = 256,
    temperature: Annotated[float, typer.Option(help="Sampling temperature of solutions and rollouts.")] = 0.7,
    heldout: Annotated[float, typer.Option(help="Fraction of problems held out for the AUROC.")] = 0.25,
    c: Annotated[float, typer.Option("--c", help="Inverse L2 strength of the logistic head.")] = 0.1,
    seed: Annotated[int, typer.Option(help="Seed of the subset, the samples and the split.")] = 0,
    n_ctx: Annotated[int, typer.Option(min=0, help="llama.cpp context (KV cells shared by parallel rollouts; 0: "
                                       "the model's own).")] = 16384,
    workers: Annotated[int, typer.Option(help="Problems labelled concurrently (their samples decode in one "
                                         "batch).")] = 8,
) -> None:
    """Train a PRM head: Math-Shepherd rollout labels, hidden-state features, held-out AUROC by problem."""
    from thinkscale.backends import load_backend
    from thinkscale.backends.base import BackendError
    from thinkscale.models import ModelError
    from thinkscale.verifiers.prm_train import (
        LabelConfig,
        dataset_path,
        file_sha256,
        load_rows,
        seeded_subset,
        train_prm,
    )
    from thinkscale.verifiers.trained_prm import FeatureBackend

    try:
        cfg = LabelConfig(solutions_per_problem=solutions, rollouts=rollouts, max_rollout_steps=rollout_steps,
                          max_tokens=max_tokens, temperature=temperature, seed=seed)
        if problems < 1:
            raise ValueError(f"--problems must be >= 1, got {problems}")
        if workers < 1:
            raise ValueError(f"--workers must be >= 1, got {workers}")
        if not (math.isfinite(heldout) and 0 <= heldout < 1):
            raise ValueError(f"--heldout must be a fraction in [0, 1), got {heldout}")
        if not (math.isfinite(c) and c > 0):
            raise ValueError(f"--c must be a finite number > 0, got {c}")
        unwritable = unwritable_file(out)  # checked now, not after hours of labelling
        if unwritable:
            raise ValueError(f"--out {out} {unwritable}")
        path = dataset_path(data)
        rows = seeded_subset(load_rows(path), problems, seed)
    except ValueError as e:
        fail(str(e), 2)
    except OSError as e:  # FileNotFoundError carries its own sentence; others get the system's reason
        fail(str(e) if isinstance(e, FileNotFoundError) and not e.filename else f"--data {data}: {os_reason(e)}", 2)
    try:
        backend = load_backend(model, n_ctx=n_ctx)
    except (ModelError, BackendError) as e:
        fail(str(e), 1)
    if not isinstance(backend, FeatureBackend) or not backend.capabilities.hidden_states:
        fail(f"{model}: this backend cannot return hidden states (the PRM's features); use a GGUF model", 1)

    def progress(done: int, total: int, pid: str, seconds: float) -> None:
        typer.echo(f"labelled {done}/{total} {pid} ({seconds:.1f}s)", err=True)

    try:
        meta = train_prm(backend, rows, out, cfg=cfg, heldout_fraction=heldout, c=c, progress=progress, workers=workers,
                         data={"path": str(path), "sha256": file_sha256(path), "subset_seed": seed})
    except (ValueError, BackendError) as e:
        fail(str(e), 1)
    finally:
        backend.close()
    summary = {"out": str(out), "heldout_auroc": meta["heldout_auroc"], "metrics": meta["metrics"],
               "label_stats": meta["label_stats"]["all"], "labelling_cost": meta["labelling_cost"]}
    sys.stdout.write(json.dumps(summary, indent=2) + "\n")
