"""``thinkscale train orm``: fit the outcome verifier from eval runs (``thinkscale.policy.orm_fit``).

It sits beside ``train prm`` in the ``train`` group (``thinkscale.verifiers.cli``) but lives here, in the layer that may
use the eval harness: it draws its chains with the sweep harness and reads them from run stores, which the verifiers
layer may not import. ``register`` adds it to the group.

    thinkscale train orm --run runs/train-0.5b --out orm.json --curve bench/results/orm/learning_curve.json
    thinkscale train orm --model qwen2.5-coder-0.5b --data gsm8k-train --problems 200 --samples 8 --out orm.json
"""

from __future__ import annotations

import json
import shlex
import sys
from pathlib import Path
from typing import Annotated

import typer

from thinkscale.cliutil import fail


def _view_sets(views: str) -> list[tuple[str, ...]] | None:
    """``auto`` (None: every set, the best by CV), or one set such as ``chain+question``."""
    if views == "auto":
        return None
    return [tuple(v.strip() for v in views.split("+") if v.strip())]


def _check_data(data: str) -> None:
    """``--data`` names a shipped training set (chains are drawn on it); ValueError naming the choices."""
    from thinkscale.eval.datasets import dataset_names
    from thinkscale.policy.orm_fit import TEST_SETS

    train = [d for d in dataset_names() if d not in TEST_SETS]
    if data in TEST_SETS:
        raise ValueError(f"--data {data}: an evaluation set; the ORM is fitted on training problems only "
                         f"({', '.join(train)})")
    if data not in train:
        raise ValueError(f"--data {data!r}: unknown dataset; give one of {', '.join(train)}")


def train_orm_command(
    out: Annotated[Path, typer.Option(help="Where to write the trained ORM (JSON).")],
    model: Annotated[str, typer.Option(help="Policy model: samples the chains, and its hidden states are the "
                                       "features (catalog name or .gguf path).")] = "qwen2.5-coder-0.5b",
    data: Annotated[str, typer.Option(help="Training dataset to draw chains on (never an evaluation set).")]
    = "gsm8k-train",
    problems: Annotated[int, typer.Option(help="Training problems to draw chains on (a seeded subset).")] = 100,
    samples: Annotated[int, typer.Option(help="Chains per problem: drawn (self-consistency:n_samples=K), or the "
                                         "first K of each problem read from --run.")] = 16,
    run: Annotated[list[Path] | None, typer.Option(help="Run folder(s) that already hold self-consistency chains on "
                                                   "training problems: read instead of drawing (repeatable).")]
    = None,
    draw_to: Annotated[Path | None, typer.Option(help="Run folder to draw the chains into (default: runs/orm-DATA-"
                                                 "MODEL-pP-kK-sSEED); rerun to resume.")] = None,
    views: Annotated[str, typer.Option(help="Feature views: auto (fit every set, keep the best by CV AUROC on the "
                                       "training problems), or a set like chain+question (chain, steps, "
                                       "question).")] = "auto",
    heldout: Annotated[float, typer.Option(help="Fraction of problems held out for the reported AUROC.")] = 0.25,
    curve: Annotated[Path | None, typer.Option(help="Also write the learning curve (held-out AUROC vs training "
                                               "problems) to this JSON file.")] = None,
    cache: Annotated[Path | None, typer.Option(help="Feature cache (SQLite; default OUT.features.sqlite): reruns "
                                               "compute nothing twice.")] = None,
    seed: Annotated[int, typer.Option(help="Seed of the problem subset, the samples, the split and the folds.")] = 0,
    threads: Annotated[int | None, typer.Option(help="llama.cpp threads (default: every core).")] = None,
    n_ctx: Annotated[int, typer.Option(help="llama.cpp context of the feature pass (one chain at a time: a small KV "
                                       "cache keeps each one-token request cheap).")] = 4096,
    workers: Annotated[int, typer.Option(help="Sweep jobs in flight while drawing chains.")] = 2,
) -> None:
    """Train an outcome verifier: the policy's chains on training problems, graded by the answer checker; hidden-state
    features; a calibrated logistic head; held-out AUROC by problem; the learning curve."""
    from thinkscale.backends import load_backend
    from thinkscale.backends.base import BackendError
    from thinkscale.eval.store import StoreError
    from thinkscale.models import ModelError
    from thinkscale.policy.orm_fit import chains_from_run, draw_chains, train_orm, write_curve
    from thinkscale.verifiers.orm import View
    from thinkscale.verifiers.orm_train import VIEW_SETS, FeatureCache, FitConfig
    from thinkscale.verifiers.trained_prm import FeatureBackend

    try:
        cfg = FitConfig(heldout_fraction=heldout, seed=seed)
        sets = _view_sets(views)
        view_sets = VIEW_SETS if sets is None else [tuple(View(v) for v in s) for s in sets]
        if problems < 2 or samples < 1:
            raise ValueError("--problems must be >= 2 and --samples >= 1")
        if not run:
            _check_data(data)
    except ValueError as e:
        fail(str(e), 2)
    for path, what in ((out, "--out"), (curve, "--curve")):
        if path is not None and not path.resolve().parent.is_dir():
            fail(f"{what} {path}: its folder does not exist")
    try:
        folders = list(run or [])
        if not folders:
            folder = draw_to or Path("runs") / f"orm-{data}-{Path(model).stem}-p{problems}-k{samples}-s{seed}"
            draw_chains(folder, model=model, data=data, problems=problems, samples=samples, seed=seed,
                        workers=workers, threads=threads)
            folders = [folder]
        runs = [chains_from_run(f, model=None if run else model, max_chains=samples) for f in folders]
        backend = load_backend(runs[0].model if run else model, n_threads=threads, n_ctx=n_ctx)
    except (ValueError, StoreError, ModelError, BackendError) as e:
        fail(str(e), 1)
    if not isinstance(backend, FeatureBackend) or not backend.capabilities.hidden_states:
        backend.close()
        fail(f"{model}: this backend cannot return hidden states (the ORM's features); use a GGUF model", 1)
    features = FeatureCache(cache or out.with_name(out.name + ".features.sqlite"))

    def progress(done: int, total: int, seconds: float) -> None:
        typer.echo(f"features {done}/{total} ({seconds:.1f}s)", err=True)

    try:
        meta = train_orm(backend, runs, out, cache=features, views=view_sets, cfg=cfg,
                         progress=progress)
    except (ValueError, BackendError, OSError) as e:
        fail(str(e), 1)
    finally:
        features.close()
        backend.close()
    # the command that reproduces this head (every option that shapes it, spelled out)
    source = [*(a for f in folders for a in ("--run", str(f))), "--samples", str(samples)] if run else [
        "--model", model, "--data", data, "--problems", str(problems), "--samples", str(samples),
        "--draw-to", str(folders[0])]
    command = "thinkscale train orm " + shlex.join([*source, "--views", views, "--heldout", str(heldout), "--seed",
                                                    str(seed), "--out", str(out)])
    if curve is not None:
        write_curve(meta, curve, command)
    summary = {"out": str(out), "views": meta["feature"], "heldout_auroc": meta["heldout_auroc"],
               "heldout": meta["heldout"], "cv_auroc": meta["cv_auroc"], "fitted_on": {
                   k: v for k, v in meta["fitted_on"].items() if k != "split"},
               "learning_curve": [(p["problems"], p.get("heldout_auroc")) for p in meta["learning_curve"]]}
    sys.stdout.write(json.dumps(summary, indent=2) + "\n")


def register(train_app: typer.Typer) -> None:
    """Add ``orm`` to the ``train`` group."""
    train_app.command("orm")(train_orm_command)
