"""PNG plots of an Analysis (matplotlib, Agg: no display needed). Each function writes one file and returns its path.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.axes import Axes  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from thinkscale.eval.analysis import Analysis, ConfigRow  # noqa: E402

DPI = 110


def _save(fig: Figure, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=DPI, bbox_inches="tight")  # "tight": a legend placed outside the axes is kept
    plt.close(fig)
    return path


# More legend entries than this go right of the axes: inside, they would cover the points.
LEGEND_INSIDE_MAX = 6


def _fraction_axes(ax: Axes, *, xlabel: str, log_base: float = 10) -> None:
    """The x and y axes every accuracy-like panel has: a log x axis, y from 0 to 1 with a margin, a light grid."""
    ax.set_xscale("log", base=log_base)
    ax.set_xlabel(xlabel)
    ax.set_ylim(-0.02, 1.02)
    ax.grid(alpha=0.3)


def _finish(fig: Figure, ax: Axes, path: Path, *, title: str, xlabel: str, ylabel: str = "accuracy",
            log_base: float = 10) -> Path:
    """Label, title and legend a single-panel plot on ``_fraction_axes`` and write it to ``path``."""
    _fraction_axes(ax, xlabel=xlabel, log_base=log_base)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    if len(ax.get_legend_handles_labels()[1]) > LEGEND_INSIDE_MAX:
        w, h = fig.get_size_inches()
        fig.set_size_inches(w + 4.5, h)  # room for the legend beside the axes, which keep their width
        ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    else:
        ax.legend(fontsize=8)
    return _save(fig, path)


def _series(a: Analysis) -> dict[tuple[str, str], list]:  # type: ignore[type-arg]
    out: dict[tuple[str, str], list] = {}  # type: ignore[type-arg]
    for r in a.rows:
        out.setdefault((r.model, r.strategy), []).append(r)
    return {k: sorted(v, key=lambda r: r.budget) for k, v in out.items()}


def _name(a: Analysis, model: str, strategy: str, rows: list[ConfigRow] | None = None) -> str:
    """A line's legend label; with ``rows``, a config short of its model's problems says on how many it stands."""
    name = strategy if len(a.models) == 1 else f"{model} {strategy}"
    short = [r.accuracy.n for r in rows or [] if not a.complete(r)]
    return name + (f" (n={min(short)} of {a.model_problems[model]})" if short else "")


FRONTIER_STYLES = ("--", ":", "-.", (0, (5, 1, 1, 1, 1, 1)))


def accuracy_vs_tokens(a: Analysis, path: Path) -> Path:
    """Accuracy (95% bootstrap interval) against mean generated tokens per problem, log x; one line per strategy
    config (points at its budgets), and each model's Pareto frontier as a dashed step line."""
    fig, ax = plt.subplots(figsize=(8, 5))
    for (model, strat), rs in _series(a).items():
        pts = [r for r in rs if r.costs["completion_tokens"] is not None]
        if not pts:
            continue
        x = [r.costs["completion_tokens"] for r in pts]
        y = [r.accuracy.mean for r in pts]
        err = [[r.accuracy.mean - r.accuracy.low for r in pts], [r.accuracy.high - r.accuracy.mean for r in pts]]
        ax.errorbar(x, y, yerr=err, marker="o", capsize=3, label=_name(a, model, strat, pts))
        below = False  # a point close (in log x) to the previous one gets its label on the other side
        for i, r in enumerate(pts):
            below = i > 0 and not below and x[i] < x[i - 1] * 1.15
            ax.annotate(str(r.budget), (x[i], y[i]), textcoords="offset points", xytext=(4, -11 if below else 4),
                        fontsize=7)
    for i, (model, front) in enumerate(sorted(a.frontier.items())):
        if front:  # one black line per model, told apart by its dashes
            name = "Pareto frontier" + ("" if len(a.models) == 1 else f" {model}")
            ax.step([p.cost for p in front], [p.accuracy for p in front], where="post", color="black",
                    linestyle=FRONTIER_STYLES[i % len(FRONTIER_STYLES)], linewidth=1, alpha=0.7, label=name)
    return _finish(fig, ax, path, title=f"{a.dataset}: accuracy vs generated tokens (numbers: budget)",
                   xlabel="generated tokens per problem (mean)")


def pass_and_maj_at_k(a: Analysis, path: Path) -> Path | None:
    """pass@k (unbiased estimator) and maj@k against k, for every strategy whose samples were reused."""
    if not a.pass_at_k:
        return None
    fig, ax = plt.subplots(figsize=(8, 5))
    for (model, strat), curve in a.pass_at_k.items():
        ks = sorted(curve)
        line = ax.plot(ks, [curve[k] for k in ks], marker="o", label=f"pass@k {_name(a, model, strat)}")[0]
        maj = a.maj_at_k.get((model, strat), {})
        if maj:
            mk = sorted(maj)
            ax.plot(mk, [maj[k] for k in mk], marker="s", linestyle="--", color=line.get_color(),
                    label=f"selected@k {_name(a, model, strat)}")
    return _finish(fig, ax, path, title=f"{a.dataset}: coverage (pass@k) vs selection (maj@k / best-of-k)",
                   xlabel="k (samples)", ylabel="fraction of problems", log_base=2)


def _bins(a: Analysis) -> list[str]:
    return sorted({b for (_, _, _, b) in a.by_bin})


def per_difficulty(a: Analysis, path: Path) -> Path:
    """Accuracy against budget, one panel per difficulty bin, one line per (model, strategy): each line keeps its
    colour in every panel, and one legend names them all (a spare panel holds it, else it sits right of them)."""
    bins = _bins(a)
    cols = min(3, len(bins))
    rows = math.ceil(len(bins) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.4 * rows), squeeze=False)
    series = _series(a)
    palette = plt.get_cmap("tab10" if len(series) <= 10 else "tab20").colors  # type: ignore[attr-defined]
    handles: dict[str, Any] = {}
    for i, b in enumerate(bins):
        ax = axes[i // cols][i % cols]
        for j, ((model, strat), rs) in enumerate(series.items()):
            pts = sorted((bud, e) for (m, s, bud, bb), e in a.by_bin.items() if (m, s, bb) == (model, strat, b))
            if pts:
                name = _name(a, model, strat, rs)
                handles[name] = ax.errorbar(
                    [p[0] for p in pts], [p[1].mean for p in pts],
                    yerr=[[p[1].mean - p[1].low for p in pts], [p[1].high - p[1].mean for p in pts]],
                    marker="o", capsize=2, color=palette[j % len(palette)], label=name)
        # bins are the models' own pass rates, so each model has its own count in a bin
        ax.set_title(f"{a.bin_source} {b} (n={'/'.join(str(a.bin_size(m, b)) for m in a.models)})", fontsize=9)
        _fraction_axes(ax, xlabel="budget", log_base=2)
    for j in range(len(bins), rows * cols):
        axes[j // cols][j % cols].axis("off")
    axes[0][0].set_ylabel("accuracy")
    order = [_name(a, m, s, rs) for (m, s), rs in series.items() if _name(a, m, s, rs) in handles]
    per_model = "" if len(a.models) == 1 else f"; n per model: {'/'.join(a.models)}"
    fig.suptitle(f"{a.dataset}: accuracy by difficulty ({a.bin_source}; bin 1 easiest{per_model})")
    if len(bins) < rows * cols:
        axes[-1][-1].legend([handles[n] for n in order], order, loc="center", fontsize=7)
        return _save(fig, path)
    fig.legend([handles[n] for n in order], order, loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize=7)
    return _save(fig, path)


def compute_optimal_heatmap(a: Analysis, path: Path) -> Path:
    """Per model: difficulty bin x budget, colour = accuracy of the best strategy config there, text = its name."""
    models = sorted(a.optimal)
    # one model per row: side by side, several models' panels shrink their cell text out of legibility
    width = max(6.0, 1.6 * len(a.config.get("budgets", [1])) + 2)
    heights = [max(1, len({b for b, _ in a.optimal[m]})) for m in models]  # a panel's height: its bins
    fig, axes = plt.subplots(len(models), 1, figsize=(width, 1.4 * len(models) + 0.7 * sum(heights)), squeeze=False,
                             height_ratios=heights)
    for ax, model in zip(axes[:, 0], models, strict=True):
        table = a.optimal[model]
        bins = sorted({b for b, _ in table})
        budgets = sorted({bud for _, bud in table})
        grid = [[table[(b, bud)][1] if (b, bud) in table else math.nan for bud in budgets] for b in bins]
        im = ax.imshow(grid, vmin=0, vmax=1, cmap="viridis", aspect="auto")
        for i, b in enumerate(bins):
            for j, bud in enumerate(budgets):
                if (b, bud) in table:
                    name, acc = table[(b, bud)]
                    ax.text(j, i, f"{name}\n{acc:.2f}", ha="center", va="center", fontsize=7,
                            color="white" if acc < 0.6 else "black")
        ax.set_xticks(range(len(budgets)), [str(x) for x in budgets])
        ax.set_yticks(range(len(bins)), [f"{b} (n={a.bin_size(model, b)})" for b in bins])
        ax.set_xlabel("budget")
        ax.set_ylabel(f"difficulty ({a.bin_source})")
        ax.set_title(f"compute-optimal strategy: {model}", fontsize=10)
        fig.colorbar(im, ax=ax, label="accuracy")
    return _save(fig, path)


def accuracy_vs_flops(a: Analysis, path: Path) -> Path | None:
    """Across models: accuracy against total FLOPs per problem (generator + verifier), log x. Only drawn when the
    run has several models: it shows where a smaller model thinking longer overtakes a larger one."""
    if len(a.models) < 2:
        return None
    fig, ax = plt.subplots(figsize=(8, 5))
    for (model, strat), rs in _series(a).items():
        pts = [r for r in rs if r.costs["flops"] is not None]
        if pts:
            ax.plot([r.costs["flops"] for r in pts], [r.accuracy.mean for r in pts], marker="o",
                    label=_name(a, model, strat, pts))
    return _finish(fig, ax, path, title=f"{a.dataset}: accuracy vs compute across models",
                   xlabel="FLOPs per problem (mean)")


def all_plots(a: Analysis, out_dir: Path) -> list[Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    made = [accuracy_vs_tokens(a, out_dir / "accuracy_vs_tokens.png"),
            pass_and_maj_at_k(a, out_dir / "pass_at_k.png"),
            per_difficulty(a, out_dir / "per_difficulty.png"),
            compute_optimal_heatmap(a, out_dir / "compute_optimal.png"),
            accuracy_vs_flops(a, out_dir / "accuracy_vs_flops.png")]
    return [p for p in made if p is not None]
