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
) -> None:
    """Fit a policy for `--strategy auto` from eval runs: difficulty bins from the first wave's agreement, and per
    bin and token budget the action with the best accuracy (the cheaper one within --tolerance)."""
    from thinkscale.eval.store import StoreError
    from thinkscale.policy.fit import FitOptions, fit_policy

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
        policy = fit_policy(runs, FitOptions(n_bins=bins, wave_size=wave_size, budgets=caps, tolerance=tolerance,
                                             min_bin_problems=min_bin_problems, delegate=delegate,
                                             allow_test_data=allow_test_data, sampler=sampler, model=model,
                                             greedy_first=greedy_first,
                                             greedy_breaks_ties=greedy_breaks_ties))
    except (StoreError, ValueError) as e:
        fail(str(e))
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
