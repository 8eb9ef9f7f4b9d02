"""``thinkscale fit-policy``: registered on the main app by ``register(app)``, which also adds ``train orm``
(``thinkscale.policy.orm_cli``) to the ``train`` group: fitting from eval runs belongs to this layer."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from thinkscale.cliutil import err, fail, os_reason, unwritable_file
from thinkscale.policy.orm_cli import register as register_orm
from thinkscale.verifiers.cli import app as train_app


def fit_policy_command(
    runs: Annotated[list[Path], typer.Argument(help="Eval run folder(s) with self-consistency at N chains, on a "
                                               "training set (gsm8k-train).")],
    out: Annotated[Path, typer.Option(help="Where to write the policy JSON.")],
    bins: Annotated[int, typer.Option(help="Difficulty bins (at most; fewer when scores take fewer values).")] = 3,
    wave_size: Annotated[int, typer.Option(help="Chains in auto's first wave (and each later wave).")] = 4,
    budgets: Annotated[str | None, typer.Option(help="Token budgets to fit, e.g. 2048,4096,8192 (default: wave x "
                                                "max_tokens x 1, 2, 4, at most N chains).")] = None,
    tolerance: Annotated[float, typer.Option(help="Accuracy within this of the best goes to the cheaper "
                                             "action.")] = 0.005,
    token_price: Annotated[float, typer.Option(help="Accuracy worth giving up per 1000 generated tokens: each bin "
                                               "gets the action with the best accuracy - price x tokens / 1000 (0: "
                                               "the most accurate).")] = 0.0,
    min_bin_problems: Annotated[int, typer.Option(help="Merge bins with fewer fitting problems.")] = 10,
    delegate: Annotated[bool, typer.Option(help="Also compare the runs' greedy / best-of-n / weighted-sc units as "
                                           "actions.")] = True,
    sampler: Annotated[str | None, typer.Option(help="The self-consistency spec to replay, when a run has "
                                                "several.")] = None,
    model: Annotated[str | None, typer.Option(help="The model to fit for, when a run has several.")] = None,
    allow_test_data: Annotated[bool, typer.Option(help="Fit on an evaluation set anyway (recorded in the "
                                                  "policy).")] = False,
    greedy_first: Annotated[bool, typer.Option(help="auto's first chain is the greedy chain (the runs need greedy "
                                               "units to replay it).")] = False,
    greedy_breaks_ties: Annotated[bool, typer.Option(help="With --greedy-first: a vote tied for the most votes "
                                                     "goes to the greedy chain's answer when it is among them "
                                                     "(else the seeded rng breaks it).")] = False,
    first_wave: Annotated[int | None, typer.Option(help="Chains in the first wave when not --wave-size (e.g. 1 with "
                                                   "--greedy-first --difficulty verifier: the greedy chain alone, "
                                                   "judged).")] = None,
    difficulty: Annotated[str, typer.Option(help="Difficulty score: agreement (of the first wave), or verifier "
                                            "(1 - the --verifier's probability that the first chain is "
                                            "right).")] = "agreement",
    verifier: Annotated[str | None, typer.Option(help="With --difficulty verifier: the outcome verifier auto asks "
                                                 "(e.g. orm).")] = None,
    verifier_path: Annotated[str | None, typer.Option(help="Its file (default: the packaged one).")] = None,
    score_cache: Annotated[Path | None, typer.Option(help="SQLite cache of the verifier's scores of the replayed "
                                                     "chains (a refit then loads no model).")] = None,
    cross_fit: Annotated[int, typer.Option(help="With a trained ORM: score the problems it was fitted on with heads "
                                           "refitted over this many folds without them (0: no).")] = 0,
    features: Annotated[Path | None, typer.Option(help="With --cross-fit: the feature cache of the ORM's training "
                                                  "chains.")] = None,
    threads: Annotated[int | None, typer.Option(help="llama.cpp threads when the verifier needs the model.")] = None,
) -> None:
    """Fit a policy for `--strategy auto` from eval runs: difficulty bins from the first wave (its agreement, or a
    verifier's judgement of its first chain), and per bin and token budget the action with the best accuracy (the
    cheaper one within --tolerance)."""
    from thinkscale.eval.store import StoreError
    from thinkscale.policy.fit import FitOptions, fit_policy
    from thinkscale.strategies.auto_features import DifficultyScore

    try:
        caps = None if budgets is None else tuple(int(x) for x in budgets.split(",") if x.strip())
    except ValueError:
        fail(f"--budgets must be comma-separated integers, got {budgets!r}")
    if caps is not None and (not caps or list(caps) != sorted(set(caps)) or caps[0] < 1):
        fail(f"--budgets must be strictly increasing positive integers, got {budgets!r}")
    unwritable = unwritable_file(out)
    if unwritable:
        fail(f"--out {out} {unwritable}")
    try:
        score = DifficultyScore(difficulty)
    except ValueError:
        fail(f"--difficulty must be one of {', '.join(d.value for d in DifficultyScore)}, got {difficulty!r}")
    if not token_price >= 0:
        fail(f"--token-price must be >= 0, got {token_price}")
    if (verifier is not None) != score.needs_verifier:
        fail("--verifier goes with --difficulty verifier, and --difficulty verifier needs --verifier")
    judge = None
    try:
        if verifier is not None:
            from thinkscale.policy.judges import replay_judge

            judge = replay_judge(runs[0], verifier, verifier_path, cache=score_cache, model=model,
                                 cross_fit=cross_fit, features=features, threads=threads)
        opts = FitOptions(n_bins=bins, wave_size=wave_size, budgets=caps, tolerance=tolerance, token_price=token_price,
                          min_bin_problems=min_bin_problems, delegate=delegate, allow_test_data=allow_test_data,
                          sampler=sampler, model=model, greedy_first=greedy_first,
                          greedy_breaks_ties=greedy_breaks_ties, first_wave=first_wave, difficulty=score,
                          verifier=verifier, verifier_path=verifier_path,
                          verifiers=judge.verifiers if judge else {},
                          verifier_scores=judge.description if judge else None)
        policy = fit_policy(runs, opts)
    except (StoreError, ValueError) as e:
        fail(str(e))
    finally:
        if judge is not None:
            judge.close()
    try:
        out.write_text(policy.to_json(), encoding="utf-8")
    except OSError as e:
        fail(f"--out {out}: cannot write ({os_reason(e)})", 1)
    f = policy.fitted_on
    err.print(f"fitted on {f.dataset} ({f.problems} problems, {f.instances} instances, {f.model}); bins "
              f"{policy.difficulty.bins} at edges {[round(e, 4) for e in policy.difficulty.edges]}", highlight=False)
    for row in policy.budgets:
        err.print(f"  {row.max_completion_tokens} tokens: " + "; ".join(
            f"{b}: {c.action.label} (acc {c.accuracy:.3f}, {c.mean_tokens:.0f} tok)" for b, c in row.choices.items()),
            highlight=False, soft_wrap=True)
    err.print(f"wrote {out}", highlight=False)


def register(app: typer.Typer) -> None:
    app.command("fit-policy")(fit_policy_command)
    register_orm(train_app)
