"""The report of a run: PNG plots, one self-contained HTML page (images embedded as data URIs, no scripts, no
external resources), and the same tables in the terminal (rich)."""

from __future__ import annotations

import base64
import datetime as dt
import html
import json
from collections.abc import Callable
from pathlib import Path

from rich.console import Console
from rich.table import Table

from thinkscale.eval.analysis import Analysis, ConfigRow, crossovers
from thinkscale.eval.metrics import Estimate, Point
from thinkscale.eval.plot import all_plots


def _num(v: float | None, fmt: str = "{:.1f}") -> str:
    return "unknown" if v is None else fmt.format(v)


def config_table_rows(a: Analysis) -> list[list[str]]:
    out = []
    for r in sorted(a.rows, key=lambda r: (r.model, r.strategy, r.budget)):
        out.append([r.model, r.strategy, str(r.budget), f"{r.accuracy.mean:.3f}",
                    f"[{r.accuracy.low:.3f}, {r.accuracy.high:.3f}]", str(r.accuracy.n),
                    _num(r.costs["completion_tokens"]), _num(r.costs["prompt_tokens"]),
                    _num(r.costs["cached_prompt_tokens"]), _num(r.costs["verifier_tokens"]),
                    _num(r.costs["wall_seconds"], "{:.2f}"), _num(r.costs["flops"], "{:.3g}"),
                    "k/N share" if r.estimated_cost else "measured"])
    return out


CONFIG_HEADERS = ["model", "strategy", "budget", "accuracy", "95% CI", "problems", "generated tok", "prompt tok",
                  "cached tok", "verifier tok", "wall s", "FLOPs", "cost"]


def optimal_rows(a: Analysis) -> tuple[list[str], list[list[str]]]:
    budgets = sorted({bud for t in a.optimal.values() for _, bud in t})
    rows = []
    for model, table in sorted(a.optimal.items()):
        for b in sorted({b for b, _ in table}):
            cells = []
            for bud in budgets:
                hit = table.get((b, bud))
                cells.append("" if hit is None else f"{hit[0]} ({hit[1]:.2f})")
            rows.append([model, f"{b} (n={a.bin_size(model, b)})", *cells])
    return ["model", f"difficulty ({a.bin_source})", *[f"budget {x}" for x in budgets]], rows


CROSSOVER_TITLE = ("smaller model, more thought: the cheapest config of each smaller model (mean FLOPs per problem) "
                   "whose mean accuracy reaches each config of a larger one")
CROSSOVER_HEADERS = ["larger model", "config", "accuracy", "FLOPs", "smaller model", "cheapest config reaching it",
                     "accuracy", "FLOPs", "FLOPs ratio"]


def crossover_rows(a: Analysis) -> list[list[str]]:
    out = []
    for c in crossovers(a):
        head = [c.large.model, c.large.label, f"{c.large.accuracy.mean:.3f}", _num(c.large.costs["flops"], "{:.3g}"),
                c.small_model]
        if c.match is None:
            out.append(head + [f"none (best: {c.best.label})", f"{c.best.accuracy.mean:.3f}",
                               _num(c.best.costs["flops"], "{:.3g}"), ""])
        else:
            out.append(head + [c.match.label, f"{c.match.accuracy.mean:.3f}", _num(c.match.costs["flops"], "{:.3g}"),
                               _num(c.flops_ratio, "{:.2f}x")])
    return out


FRONTIER_TITLE = "Pareto frontier (generated tokens vs accuracy)"
FRONTIER_HEADERS = ["model", "strategy", "budget", "generated tok", "accuracy"]
FLOPS_FRONTIER_TITLE = "Pareto frontier (FLOPs per problem, the verifier's included, vs accuracy)"
FLOPS_FRONTIER_HEADERS = ["model", "strategy", "budget", "FLOPs", "accuracy"]


def frontier_rows(frontiers: dict[str, list[Point]], cost_format: str) -> list[list[str]]:
    """One row per point of each model's frontier, its cost written with ``cost_format``."""
    return [[m, p.label, str(p.budget), cost_format.format(p.cost), f"{p.accuracy:.3f}"]
            for m, front in sorted(frontiers.items()) for p in front]


PAIRED_TITLE = ("Paired on the same problems: each config's accuracy minus greedy's and minus self-consistency's at "
                "the same budget (95% bootstrap interval over problems), and its FLOPs over self-consistency's")
PAIRED_HEADERS = ["model", "strategy", "budget", "accuracy", "vs greedy", "vs self-consistency", "FLOPs vs SC"]


def _delta(e: Estimate | None) -> str:
    return "" if e is None else f"{e.mean:+.3f} [{e.low:+.2f}, {e.high:+.2f}]"


def paired_rows(a: Analysis) -> list[list[str]]:
    """One row per compared config (see ``analysis.Paired``); none when the run has neither baseline."""
    if all(p.vs_greedy is None and p.vs_sc is None for p in a.paired):
        return []
    return [[p.row.model, p.row.strategy, str(p.row.budget), f"{p.row.accuracy.mean:.3f}", _delta(p.vs_greedy),
             _delta(p.vs_sc), "" if p.vs_sc is None and p.flops_vs_sc is None else _num(p.flops_vs_sc, "{:.2f}x")]
            for p in a.paired]


VERDICT_TITLE = ("Which strategies pay: the budgets at which each sits on a Pareto frontier, beats or trails "
                 "self-consistency at its budget (paired 95% interval clear of 0), and what beats it off the FLOPs "
                 "frontier")
VERDICT_HEADERS = ["model", "strategy", "budgets", "tokens frontier", "FLOPs frontier", "above SC", "below SC",
                   "beaten on FLOPs by", "pays"]


def verdict_rows(a: Analysis) -> list[list[str]]:
    """One row per strategy (see ``analysis.Verdict``): budgets listed, "-" for none."""
    def budgets(bs: tuple[int, ...]) -> str:
        return ", ".join(map(str, bs)) or "-"

    return [[v.model, v.strategy, budgets(v.budgets), budgets(v.tokens_frontier), budgets(v.flops_frontier),
             budgets(v.above_sc), budgets(v.below_sc), "; ".join(f"@{b}: {by}" for b, by in v.beaten_by) or "-",
             "yes" if v.pays else "never"] for v in a.verdicts]


def comparison_tables(a: Analysis) -> list[tuple[str, list[str], list[list[str]]]]:
    """(title, headers, rows) of the tables that compare configs, as every rendering prints them after the
    compute-optimal table: the Pareto frontier on generated tokens (always), then the FLOPs frontier, the paired
    comparisons, which strategies pay and the crossovers (each only when it has rows)."""
    out = [(FRONTIER_TITLE, FRONTIER_HEADERS, frontier_rows(a.frontier, "{:.1f}"))]
    flops = frontier_rows(a.frontier_flops, "{:.3g}")
    for title, heads, rows in [(FLOPS_FRONTIER_TITLE, FLOPS_FRONTIER_HEADERS, flops),
                               (PAIRED_TITLE, PAIRED_HEADERS, paired_rows(a)),
                               (VERDICT_TITLE, VERDICT_HEADERS, verdict_rows(a)),
                               (CROSSOVER_TITLE, CROSSOVER_HEADERS, crossover_rows(a))]:
        if rows:
            out.append((title, heads, rows))
    return out


def not_compared_lines(a: Analysis) -> list[str]:
    """What the comparisons leave out and why: configs with fewer problems finished than the others (a sweep in
    progress), one phrase per model, strategy and problem count."""
    short, cross = a.not_compared()

    def grouped(rows: list[ConfigRow], total: Callable[[str], int]) -> str:
        groups: dict[tuple[str, str, int], list[int]] = {}
        for r in sorted(rows, key=lambda r: (r.model, r.strategy, r.budget)):
            groups.setdefault((r.model, r.strategy, r.accuracy.n), []).append(r.budget)
        return "; ".join(f"{m} {s}@{','.join(map(str, bs))} ({n} of {total(m)} problems)"
                         for (m, s, n), bs in groups.items())

    out = []
    if short:
        out.append("Left out of the Pareto frontiers, the paired comparisons, the compute-optimal table and the "
                   "crossovers until their model's other problems are finished (compared on fewer problems they would "
                   "win or lose on others): "
                   + grouped(short, lambda m: a.model_problems[m]) + ".")
    if cross:
        out.append(f"Left out of the crossovers until all {a.n_problems} problems of the report are finished: "
                   + grouped(cross, lambda m: a.n_problems) + ".")
    return out


def summary_cells(r: ConfigRow) -> list[str]:
    """A config's accuracy [95% CI], generated and verifier tokens, wall seconds and FLOPs as the summary tables
    (terminal, report.md) print them."""
    return [f"{r.accuracy.mean:.3f} [{r.accuracy.low:.2f}, {r.accuracy.high:.2f}]",
            _num(r.costs["completion_tokens"], "{:.0f}"), _num(r.costs["verifier_tokens"], "{:.0f}"),
            _num(r.costs["wall_seconds"], "{:.1f}"), _num(r.costs["flops"], "{:.2g}")]


def overhead_sentence(a: Analysis) -> str:
    wall, busy, frac = a.overhead()
    return (f"Harness overhead: {_num(None if frac is None else 100 * frac)}% of {wall:.1f} s sweep wall time was "
            f"outside backend calls ({busy:.1f} s inside).")


def print_tables(a: Analysis, console: Console) -> None:
    """The report's tables, narrower than the HTML's: prompt and cached tokens are in the page and the export."""
    t = Table(title=f"{a.dataset}: {a.n_problems} problems (accuracy: mean over problems; costs: mean per problem; "
                    "* = k/N share of a larger run; n = problems, where fewer are stored)", header_style="bold")
    for h in ("model", "strategy", "budget", "accuracy [95% CI]", "gen tok", "verif tok", "wall s", "FLOPs"):
        t.add_column(h, justify="left" if h in ("model", "strategy") else "right",
                     no_wrap=h not in ("model", "strategy"), min_width=12 if h in ("model", "strategy") else None)
    for r in sorted(a.rows, key=lambda r: (r.model, r.strategy, r.budget)):
        accuracy, *costs = summary_cells(r)
        t.add_row(r.model, r.strategy, f"{r.budget}{'*' if r.estimated_cost else ''}",
                  accuracy + (f" n={r.accuracy.n}" if r.accuracy.n != a.n_problems else ""), *costs)
    console.print(t)
    for line in not_compared_lines(a):
        console.print(line, highlight=False)
    heads, rows = optimal_rows(a)
    t = Table(title="compute-optimal strategy per difficulty and budget", header_style="bold")
    for h in heads:
        t.add_column(h)
    for row in rows:
        t.add_row(*row)
    console.print(t)
    for title, heads, rows in comparison_tables(a):
        t = Table(title=title, header_style="bold")
        for h in heads:
            t.add_column(h)
        for row in rows:
            t.add_row(*row)
        console.print(t)
    wall, busy, frac = a.overhead()
    console.print(f"harness overhead: {_num(None if frac is None else 100 * frac)}% of {wall:.1f} s sweep wall time "
                  f"outside backend calls ({busy:.1f} s inside)", highlight=False)
    if a.sharing is not None:
        console.print(a.sharing.describe(), highlight=False)


def _sentence(title: str) -> str:
    return title[0].upper() + title[1:]


def _table_html(headers: list[str], rows: list[list[str]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


CSS = """body{font-family:system-ui,-apple-system,sans-serif;margin:2em auto;max-width:1200px;color:#222}
table{border-collapse:collapse;margin:1em 0;font-size:13px}th,td{border:1px solid #ccc;padding:3px 8px;
text-align:right}th{background:#f3f3f3}td:first-child,td:nth-child(2){text-align:left}
img{max-width:100%;border:1px solid #eee;margin:.5em 0}pre{background:#f7f7f7;padding:1em;overflow:auto;
font-size:12px}h2{margin-top:1.6em;border-bottom:1px solid #ddd}"""


def write_html(a: Analysis, images: list[Path], path: Path) -> Path:
    parts = [f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>thinkscale report: "
             f"{html.escape(a.dataset)}</title><style>{CSS}</style></head><body>",
             f"<h1>thinkscale eval: {html.escape(a.dataset)}</h1>",
             f"<p>{a.n_problems} problems; models {html.escape(', '.join(a.models))}; generated "
             f"{dt.datetime.now(dt.UTC).strftime('%Y-%m-%d %H:%M UTC')}. Accuracy is the mean over problems with a "
             "95% percentile-bootstrap interval; costs are means per problem. Costs marked <em>k/N share</em> are "
             "for budgets scored from subsets of a larger run's samples (sample reuse).</p>",
             "<h2>Plots</h2>"]
    for img in images:
        data = base64.b64encode(img.read_bytes()).decode("ascii")
        parts.append(f"<figure><img alt='{html.escape(img.stem)}' src='data:image/png;base64,{data}'>"
                     f"<figcaption>{html.escape(img.stem.replace('_', ' '))}</figcaption></figure>")
    parts += ["<h2>Every strategy config</h2>", _table_html(CONFIG_HEADERS, config_table_rows(a)),
              *[f"<p>{html.escape(line)}</p>" for line in not_compared_lines(a)]]
    heads, rows = optimal_rows(a)
    parts += ["<h2>Compute-optimal strategy per difficulty and budget</h2>", _table_html(heads, rows)]
    for title, heads, rows in comparison_tables(a):
        parts += [f"<h2>{html.escape(_sentence(title))}</h2>", _table_html(heads, rows)]
    if a.pass_at_k:
        ks = sorted({k for c in a.pass_at_k.values() for k in c})
        parts += ["<h2>pass@k</h2>", _table_html(
            ["model", "strategy", *[f"k={k}" for k in ks]],
            [[m, s, *[f"{c[k]:.3f}" if k in c else "" for k in ks]] for (m, s), c in sorted(a.pass_at_k.items())])]
    # a resume of a finished run stores a session that ran nothing: counted, not listed
    worked = [s for s in a.sessions if s["jobs_done"] or s["status"] != "finished"]
    idle = len(a.sessions) - len(worked)
    parts += ["<h2>Runs</h2>",
              f"<p>{html.escape(overhead_sentence(a))}</p>",
              "" if a.sharing is None else f"<p>{html.escape(a.sharing.describe())}.</p>",
              _table_html(["session", "status", "jobs", "wall s", "backend s", "command"],
                          [[str(s["session_id"]), s["status"], str(s["jobs_done"]), _num(s["wall_seconds"], "{:.1f}"),
                            _num(s["backend_seconds"], "{:.1f}"), s["command"]] for s in worked]),
              f"<p>{idle} more session(s) found every job stored and ran nothing.</p>" if idle else "",
              "<h2>Config and versions</h2>",
              f"<pre>{html.escape(json.dumps({'config': a.config, 'info': a.info}, indent=2, sort_keys=True))}</pre>",
              "</body></html>"]
    path.write_text("\n".join(parts), encoding="utf-8")
    return path


def markdown_table(headers: list[str], rows: list[list[str]], code_columns: int = 0) -> str:
    """A Markdown table; the first ``code_columns`` cells of a row (model, strategy spec) as code spans, so that a
    spec such as ``greedy:prefill=<think>\\n`` is not read as HTML."""
    def cell(c: str, code: bool) -> str:
        c = c.replace("|", "\\|")
        if not code:
            return c
        return f"`{c}`" if "`" not in c else html.escape(c)

    def line(cells: list[str], code: int) -> str:
        return "| " + " | ".join(cell(c, i < code) for i, c in enumerate(cells)) + " |"
    return "\n".join([line(headers, 0), line(["---"] * len(headers), 0), *(line(r, code_columns) for r in rows)])


MD_HEADERS = ["model", "strategy", "budget", "problems", "accuracy [95% CI]", "generated tok", "verifier tok",
              "wall s", "FLOPs", "cost"]


def write_markdown(a: Analysis, path: Path, command: str) -> Path:
    """The report's tables as Markdown (every config, what the comparisons leave out, the compute-optimal table and
    ``comparison_tables``), to paste into docs; ``command`` is what wrote it."""
    rows = [[r.model, r.strategy, str(r.budget), str(r.accuracy.n), *summary_cells(r),
             "k/N share" if r.estimated_cost else "measured"]
            for r in sorted(a.rows, key=lambda r: (r.model, r.strategy, r.budget))]
    heads, optimal = optimal_rows(a)
    parts = [f"# thinkscale eval: {a.dataset}, {a.n_problems} problems",
             f"Written by `{command}` on {dt.datetime.now(dt.UTC).strftime('%Y-%m-%d %H:%M UTC')}; models "
             f"{', '.join(a.models)}. Accuracy: mean over problems, 95% percentile-bootstrap interval; costs: means "
             "per problem (generated and verifier tokens as the backends counted them, FLOPs, wall seconds of a job "
             "as it ran); *k/N share*: a budget scored from a subset of a larger run's samples.",
             "## Every strategy config", markdown_table(MD_HEADERS, rows, 2), *not_compared_lines(a),
             "## Compute-optimal strategy per difficulty and budget", markdown_table(heads, optimal)]
    for title, heads, table in comparison_tables(a):
        # model and spec cells as code spans (the crossovers' cells stay plain, as they were)
        parts += [f"## {_sentence(title)}", markdown_table(heads, table, 0 if title == CROSSOVER_TITLE else 2)]
    parts.append(overhead_sentence(a))
    if a.sharing is not None:
        parts.append(a.sharing.describe() + ".")
    path.write_text("\n\n".join(parts) + "\n", encoding="utf-8")
    return path


def write_report(a: Analysis, out_dir: Path, command: str) -> tuple[Path, list[Path]]:
    """Plots, report.html and report.md (the tables, for docs; ``command`` is the command line that wrote them) in
    ``out_dir``."""
    images = all_plots(a, out_dir)
    write_markdown(a, out_dir / "report.md", command)
    return write_html(a, images, out_dir / "report.html"), images
