"""The report: plots, a self-contained HTML page that renders in headless Chromium with no console errors and
visible (not blank) plots, and the terminal tables."""

from __future__ import annotations

import base64
import json
import re
import shutil
import sqlite3
import subprocess
from pathlib import Path

import numpy as np
import pytest
from matplotlib import image as mpimg
from typer.testing import CliRunner

from tests.eval.conftest import stop_after
from thinkscale.cli import app
from thinkscale.eval.analysis import Analysis, ConfigRow, Paired, analyze, crossovers, verdicts
from thinkscale.eval.config import SweepConfig
from thinkscale.eval.metrics import Estimate, Point, pareto_frontier
from thinkscale.eval.report import markdown_table, verdict_rows
from thinkscale.eval.runner import run_sweep
from thinkscale.eval.store import open_existing

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
PLOTS = {"accuracy_vs_tokens", "pass_at_k", "per_difficulty", "compute_optimal", "accuracy_vs_flops"}


@pytest.fixture
def run_dir(table: Path, tmp_path: Path) -> Path:
    out = tmp_path / "run"
    run_sweep(SweepConfig(dataset="gsm8k", limit=6, models=["fake-small", "fake-large"],
                          backend=f"scripted:{table}", budgets=[1, 2, 4],
                          strategies=["greedy", "self-consistency", "best-of-n:verifier=confidence-mean"]), out)
    return out


def test_report_writes_plots_html_and_tables(run_dir: Path) -> None:
    r = CliRunner().invoke(app, ["report", str(run_dir), "--reps", "200"])
    assert r.exit_code == 0, r.output
    rep = run_dir / "report"
    assert {p.stem for p in rep.glob("*.png")} == PLOTS
    page = (rep / "report.html").read_text()
    images = re.findall(r"src='data:image/png;base64,([^']+)'", page)
    assert len(images) == len(PLOTS)
    assert not re.search(r"(src|href)=['\"]?(https?:|//|file:)", page)  # self-contained
    assert "<script" not in page
    for data in images:  # every embedded plot decodes and is not one flat colour
        px = mpimg.imread(_png(base64.b64decode(data), run_dir / "x.png"))
        assert px.std() > 0.05
    assert "compute-optimal" in r.output and "Pareto frontier" in r.output and "self-consistency" in r.output
    assert "harness overhead" in r.output


def test_sessions_that_ran_nothing_are_counted_not_listed(table: Path, run_dir: Path) -> None:
    """Resuming a finished run stores a session with no jobs; the report lists the sessions that worked only."""
    cfg = SweepConfig(dataset="gsm8k", limit=6, models=["fake-small", "fake-large"], backend=f"scripted:{table}",
                      budgets=[1, 2, 4],
                      strategies=["greedy", "self-consistency", "best-of-n:verifier=confidence-mean"])
    for _ in range(2):
        assert run_sweep(cfg, run_dir).jobs_run == 0
    r = CliRunner().invoke(app, ["report", str(run_dir), "--reps", "50"])
    assert r.exit_code == 0, r.output
    page = (run_dir / "report" / "report.html").read_text()
    runs = page[page.index("<h2>Runs</h2>"):page.index("<h2>Config and versions</h2>")]
    listed = re.findall(r"<tr><td>\d+</td><td>(\w+)</td><td>(\d+)</td>", runs)
    assert len(listed) == 1 and listed[0][0] == "finished" and int(listed[0][1]) > 0
    assert "2 more session(s) found every job stored and ran nothing." in runs


def test_a_config_stored_for_fewer_problems_says_so(table: Path, run_dir: Path, tmp_path: Path) -> None:
    """A partial run beside a complete one: its rows name their problem count, the complete ones do not."""
    part = tmp_path / "part"
    run_sweep(SweepConfig(dataset="gsm8k", limit=6, models=["fake-small"], backend=f"scripted:{table}",
                          budgets=[1, 2], strategies=["weighted-sc:verifier=confidence-mean"]), part,
              **stop_after(3))
    r = CliRunner(env={"COLUMNS": "250"}).invoke(app, ["report", str(run_dir), str(part), "--reps", "50",
                                                       "--out", str(tmp_path / "rep")])
    assert r.exit_code == 0, r.output
    lines = [ln for ln in r.output.splitlines() if "weighted-sc" in ln and "] " in ln]  # the accuracy table
    assert lines and all("n=3" in ln for ln in lines)
    assert not any("n=" in ln for ln in r.output.splitlines() if "self-consistency" in ln)


def test_a_config_short_of_problems_is_left_out_of_the_comparisons(table: Path, run_dir: Path,
                                                                    tmp_path: Path) -> None:
    """A config stored for 3 of 6 problems, made right on all of them and cheaper than anything: compared as it is,
    it would top the Pareto frontier; it is left out of the frontier and the compute-optimal table, and the
    report says so (terminal and page)."""
    part = tmp_path / "part"
    run_sweep(SweepConfig(dataset="gsm8k", limit=6, models=["fake-small"], backend=f"scripted:{table}",
                          budgets=[1, 2], strategies=["weighted-sc:verifier=confidence-mean"]), part,
              **stop_after(3))
    db = sqlite3.connect(part / "results.sqlite")
    with db:
        db.execute("UPDATE units SET correct = 1, completion_tokens = 0.5")
    db.close()
    stores = [open_existing(run_dir), open_existing(part)]
    a = analyze(stores, reps=50)
    for st in stores:
        st.close()
    wsc = "weighted-sc:verifier=confidence-mean"
    short, cross = a.not_compared()
    assert {(r.model, r.strategy, r.budget, r.accuracy.n) for r in short} == {("fake-small", wsc, 1, 3),
                                                                               ("fake-small", wsc, 2, 3)}
    assert cross == [] and a.model_problems == {"fake-small": 6, "fake-large": 6}
    assert any(s == wsc for (m, s, _, _) in a.by_bin if m == "fake-small")  # measured per bin, not a candidate
    assert all(p.label != wsc for p in a.frontier["fake-small"]) and a.frontier["fake-small"]
    assert not any(name.startswith(wsc) for name, _ in a.optimal["fake-small"].values())
    assert all(p.label != wsc for p in a.frontier_flops["fake-small"]) and a.frontier_flops["fake-small"]
    assert all(p.row.strategy != wsc for p in a.paired) and a.paired
    r = CliRunner().invoke(app, ["report", str(run_dir), str(part), "--reps", "50", "--out", str(tmp_path / "rep")],
                           terminal_width=250)
    assert r.exit_code == 0, r.output
    said = f"fake-small {wsc}@1,2 (3 of 6 problems)"
    assert said in r.output and said in (tmp_path / "rep" / "report.html").read_text()


def test_paired_comparisons_and_the_flops_frontier_match_the_store(run_dir: Path) -> None:
    """Each config but greedy, against greedy and (but self-consistency) self-consistency at its budget: the mean of the
    per-problem differences read straight from the units table, an interval around it, the FLOPs ratio of the two
    rows; the FLOPs frontier holds the configs no other beats on FLOPs and accuracy (one of exact ties). report.md
    has both."""
    store = open_existing(run_dir)
    a = analyze([store], reps=200)
    units = store.rows("SELECT model, strategy, budget, problem_id, correct FROM units")
    store.close()
    acc = {(u["model"], u["strategy"], u["budget"], u["problem_id"]): u["correct"] for u in units}
    rows = {(r.model, r.strategy, r.budget): r for r in a.rows}
    bon = "best-of-n:verifier=confidence-mean"
    assert {(p.row.model, p.row.strategy, p.row.budget) for p in a.paired} == {
        (m, s, b) for m in ("fake-small", "fake-large") for s in (bon, "self-consistency") for b in (1, 2, 4)}
    problems = sorted({pid for (_, _, _, pid) in acc})
    for p in a.paired:
        m, b = p.row.model, p.row.budget
        if p.row.strategy == "self-consistency":  # against greedy only
            want = sum(acc[(m, "self-consistency", b, pid)] - acc[(m, "greedy", 1, pid)] for pid in problems)
            assert p.vs_sc is None and p.flops_vs_sc is None and p.vs_greedy is not None
            assert p.vs_greedy.mean == pytest.approx(want / len(problems))
            continue
        for est, base in ((p.vs_greedy, (m, "greedy", 1)), (p.vs_sc, (m, "self-consistency", b))):
            want = sum(acc[(m, bon, b, pid)] - acc[(*base, pid)] for pid in problems) / len(problems)
            assert est is not None and est.mean == pytest.approx(want) and est.low <= want <= est.high
        assert p.flops_vs_sc == pytest.approx(rows[(m, bon, b)].costs["flops"]
                                              / rows[(m, "self-consistency", b)].costs["flops"])
    for model, front in a.frontier_flops.items():
        mine = [r for r in a.rows if r.model == model]
        beaten = {(r.strategy, r.budget) for r in mine for o in mine
                  if o.costs["flops"] <= r.costs["flops"] and o.accuracy.mean >= r.accuracy.mean
                  and (o.costs["flops"] < r.costs["flops"] or o.accuracy.mean > r.accuracy.mean)}
        kept = {(q.label, q.budget) for q in front}
        assert kept <= {(r.strategy, r.budget) for r in mine} - beaten
        for r in mine:  # the others: beaten, or tied exactly (same FLOPs and accuracy) with one that is kept
            assert (r.strategy, r.budget) in kept | beaten or any(
                (q.cost, q.accuracy) == (r.costs["flops"], r.accuracy.mean) for q in front)
    r = CliRunner().invoke(app, ["report", str(run_dir), "--reps", "50"])
    assert r.exit_code == 0, r.output
    md = (run_dir / "report" / "report.md").read_text()
    assert "## Pareto frontier (FLOPs per problem, the verifier's included, vs accuracy)" in md
    assert "## Paired on the same problems" in md and f"| `fake-small` | `{bon}` | 2 |" in md
    # every strategy of each model has a verdict, and "pays" is exactly "some config is a frontier point"
    assert {(v.model, v.strategy) for v in a.verdicts} == {(r.model, r.strategy) for r in a.rows}
    for v in a.verdicts:
        mine = [r for r in a.rows if (r.model, r.strategy) == (v.model, v.strategy)]
        assert v.pays == any((r.costs[c], r.accuracy.mean) in {(q.cost, q.accuracy) for q in front[v.model]}
                             for r in mine for c, front in (("completion_tokens", a.frontier),
                                                            ("flops", a.frontier_flops)))
    assert "## Which strategies pay" in md


def _png(data: bytes, path: Path) -> Path:
    path.write_bytes(data)
    return path


def test_analysis_numbers_match_the_store(run_dir: Path) -> None:
    store = open_existing(run_dir)
    a = analyze([store], reps=100)
    store.close()
    rows = {(r.model, r.strategy, r.budget): r for r in a.rows}
    assert rows[("fake-small", "greedy", 1)].accuracy.mean == 1.0  # the table's first response is right
    sc = a.pass_at_k[("fake-small", "self-consistency")]
    assert sorted(sc) == [1, 2, 4] and sc[1] <= sc[2] <= sc[4]
    assert a.bin_source == "pass rate" and set(a.bins["fake-small"].values()) <= {"1", "2", "3", "4", "5"}
    assert a.frontier["fake-small"][-1].accuracy == max(r.accuracy.mean for r in a.rows if r.model == "fake-small")


def test_report_md_holds_every_config_as_the_analysis_has_it(run_dir: Path, tmp_path: Path) -> None:
    """report.md: one row per config with the analysis's accuracy, interval and costs, the frontier, and the
    command that wrote it (so a docs table built from it is checkable)."""
    out = tmp_path / "rep"
    r = CliRunner().invoke(app, ["report", str(run_dir), "--out", str(out), "--reps", "200"])
    assert r.exit_code == 0, r.output
    md = (out / "report.md").read_text()
    assert f"`thinkscale report {run_dir} --out {out} --reps 200`" in md
    store = open_existing(run_dir)
    a = analyze([store], reps=200)
    store.close()
    config_part = md.split("## Every strategy config")[1].split("## Pareto frontier")[0]
    table = [line for line in config_part.splitlines() if line.startswith("| `fake-")]  # specs as code spans
    assert len(table) == len(a.rows) == 2 * (1 + 3 + 3)
    for row in a.rows:
        cells = next(c for c in (line.strip("| ").split(" | ") for line in table)
                     if c[:3] == [f"`{row.model}`", f"`{row.strategy}`", str(row.budget)])
        assert cells[4].startswith(f"{row.accuracy.mean:.3f} [")  # the interval is the same bootstrap's
        assert cells[3] == str(row.accuracy.n) and cells[5] == f"{row.costs['completion_tokens']:.0f}"
    frontier = md.split("## Pareto frontier")[1].split("##")[0]
    assert sum(line.startswith("| `fake-") for line in frontier.splitlines()) == sum(map(len, a.frontier.values()))


def test_markdown_cells_keep_pipes_and_tags_literal() -> None:
    """A spec's `|` (moa's temperatures) does not split the row; `<think>` is code, not an HTML tag."""
    md = markdown_table(["strategy", "n"], [["moa:temperatures=0.3|0.7", "1"], ["greedy:prefill=<think>", "2"],
                                        ["odd`name", "a|b"]], code_columns=1)
    rows = md.splitlines()[2:]
    assert rows[0] == "| `moa:temperatures=0.3\\|0.7` | 1 |"
    assert rows[1] == "| `greedy:prefill=<think>` | 2 |"
    assert rows[2] == "| odd`name | a\\|b |"


def _render(page: Path, shot: Path) -> list[str]:
    """Screenshot ``page`` in headless Chromium; return the console messages it logged."""
    assert CHROMIUM is not None
    r = subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--enable-logging=stderr",
                        "--log-level=0", "--window-size=1280,5200", f"--screenshot={shot}", page.as_uri()],
                       capture_output=True, text=True, timeout=120)
    assert shot.is_file(), r.stderr[-2000:]
    return [line for line in r.stderr.splitlines() if ":CONSOLE" in line]


def _plot_pixels(shot: Path) -> float:
    """Fraction of the screenshot in saturated colour (the plots' lines, markers and heatmaps; the rest of the page
    is black, white and grey)."""
    px = mpimg.imread(shot)[..., :3].astype(np.float32)
    if px.max() > 1.0:
        px /= 255.0
    return float(((px.max(axis=-1) - px.min(axis=-1)) > 0.25).mean())


def test_report_renders_in_headless_chromium(run_dir: Path, tmp_path: Path) -> None:
    # a failure, not a skip: `bash scripts/install.sh --dev` (run by scripts/test.sh and CI) installs it
    assert CHROMIUM is not None, "Debian's chromium is not installed: apt-get install chromium"
    r = CliRunner().invoke(app, ["report", str(run_dir), "--reps", "200"])
    assert r.exit_code == 0, r.output
    shot = tmp_path / "report.png"
    assert _render(run_dir / "report" / "report.html", shot) == []
    assert _plot_pixels(shot) > 0.01  # the plots are on screen (4% with this run)

    # The checks can fail: a page with a script error is caught, and a page whose images are blank is too.
    bad = tmp_path / "bad.html"
    bad.write_text("<html><body><h1>x</h1><script>undefinedFunction();</script></body></html>")
    assert any("undefinedFunction" in m for m in _render(bad, tmp_path / "bad.png"))
    blank = tmp_path / "blank.html"
    blank.write_text(re.sub(r"base64,[^']+", "base64,", (run_dir / "report" / "report.html").read_text()))
    _render(blank, tmp_path / "blank.png")
    assert _plot_pixels(tmp_path / "blank.png") < 0.001


def test_several_runs_share_a_report(table: Path, tmp_path: Path) -> None:
    """One run per model, each with its own strategies (as the issue's results need), analysed together; the same
    model and strategy in two runs is refused. The larger model (4x the parameters) gets the crossover table."""
    base = dict(dataset="gsm8k", limit=6, backend=f"scripted:{table}")
    large_table = tmp_path / "large.json"
    large_table.write_text(json.dumps({**json.loads(table.read_text()), "n_params": 4_000_000}))
    run_sweep(SweepConfig(**base, models=["small"], strategies=["greedy", "self-consistency"], budgets=[1, 2, 4]),
              tmp_path / "a")
    run_sweep(SweepConfig(**{**base, "backend": f"scripted:{large_table}"}, models=["large"], strategies=["greedy"],
                          budgets=[1]), tmp_path / "b")
    run_sweep(SweepConfig(**base, models=["small"], strategies=["greedy"], budgets=[1]), tmp_path / "c")
    r = CliRunner().invoke(app, ["report", str(tmp_path / "a"), str(tmp_path / "b"), "--out", str(tmp_path / "ab"),
                                 "--reps", "100"], terminal_width=250)
    assert r.exit_code == 0, r.output
    assert (tmp_path / "ab" / "accuracy_vs_flops.png").is_file()  # two models: the cross-model plot is drawn
    stores = [open_existing(tmp_path / "a"), open_existing(tmp_path / "b")]
    a = analyze(stores, reps=100)
    for st in stores:
        st.close()
    assert a.n_params == {"small": 1_000_000, "large": 4_000_000}
    (c,) = crossovers(a)  # large has one config; small's greedy is as right (always) and cheaper
    assert (c.large.label, c.small_model, c.match and c.match.label) == ("greedy@1", "small", "greedy@1")
    assert c.flops_ratio == c.match.costs["flops"] / c.large.costs["flops"] < 1  # type: ignore[union-attr,operator]
    assert "smaller model, more thought" in r.output and f"{c.flops_ratio:.2f}x" in r.output
    assert "Smaller model, more thought" in (tmp_path / "ab" / "report.html").read_text()
    r = CliRunner().invoke(app, ["report", str(tmp_path / "a"), str(tmp_path / "c")])
    assert r.exit_code == 2 and "model small with strategy greedy is in both" in r.output


def _row(model: str, strategy: str, budget: int, acc: float, flops: float | None, n: int = 100) -> ConfigRow:
    return ConfigRow(model, strategy, budget, Estimate(acc, acc, acc, n), {"flops": flops}, False)


def test_crossover_picks_the_cheapest_config_that_reaches_each_larger_one() -> None:
    """Hand-made rows: 1.5b greedy 0.50 at 10 FLOPs; 0.5b reaches it with SC@8 (0.52, 6) and SC@16 (0.55, 12): the
    cheaper SC@8 is the match, ratio 0.6. 1.5b SC@4 (0.60, 40): 0.5b never reaches it (best SC@16). The smallest
    model is compared with both larger ones; a model of unknown size and configs of unknown FLOPs take no part."""
    rows = [_row("1.5b", "greedy", 1, 0.50, 10.0), _row("1.5b", "sc", 4, 0.60, 40.0),
            _row("0.5b", "greedy", 1, 0.30, 2.0), _row("0.5b", "sc", 8, 0.52, 6.0), _row("0.5b", "sc", 16, 0.55, 12.0),
            _row("0.5b", "bon", 16, 0.70, None), _row("0.1b", "greedy", 1, 0.51, 1.0), _row("x", "greedy", 1, 1.0, 1.0)]
    a = Analysis({}, {}, "d", rows, {}, {}, {}, "", {}, {}, {}, n_params={"1.5b": 15, "0.5b": 5, "0.1b": 1, "x": None})
    got = [(c.large.model, c.large.label, c.small_model, c.match and c.match.label, c.best.label, c.flops_ratio)
           for c in crossovers(a)]
    assert got == [
        ("0.5b", "greedy@1", "0.1b", "greedy@1", "greedy@1", 0.5),
        ("0.5b", "sc@8", "0.1b", None, "greedy@1", None),
        ("0.5b", "sc@16", "0.1b", None, "greedy@1", None),
        ("1.5b", "greedy@1", "0.1b", "greedy@1", "greedy@1", 0.1),
        ("1.5b", "greedy@1", "0.5b", "sc@8", "sc@16", 0.6),
        ("1.5b", "sc@4", "0.1b", None, "greedy@1", None),
        ("1.5b", "sc@4", "0.5b", None, "sc@16", None)]


def test_verdicts_name_the_frontiers_each_strategy_sits_on_and_what_beats_it() -> None:
    """Hand-made rows (generated tokens, FLOPs, accuracy): greedy (100, 1, .24); SC@4 (400, 4, .27), SC@8 (800, 8,
    .32); best-of-N and weighted SC at SC's tokens and twice its FLOPs (a verifier reads every chain): BoN .28 at
    both budgets, WSC .31 and .37; "twin" tied exactly with SC@4; "short" unfinished. Tokens frontier: greedy,
    WSC@4, WSC@8; FLOPs frontier: greedy, SC@4 (or its twin), SC@8, WSC@8. So best-of-N never pays and is beaten on
    FLOPs by SC@8 at both budgets; the twin pays as SC@4 does; WSC@4 is above SC, BoN@8 below (paired intervals)."""
    def row(strategy: str, budget: int, acc: float, tokens: float, flops: float, n: int = 100) -> ConfigRow:
        return ConfigRow("m", strategy, budget, Estimate(acc, acc, acc, n),
                         {"completion_tokens": tokens, "flops": flops}, False)

    rows = [row("greedy", 1, .24, 100, 1), row("sc", 4, .27, 400, 4), row("sc", 8, .32, 800, 8),
            row("bon", 4, .28, 400, 8), row("bon", 8, .28, 800, 16), row("wsc", 4, .31, 400, 8),
            row("wsc", 8, .37, 800, 16), row("twin", 4, .27, 400, 4), row("short", 4, .9, 10, 0.1, n=50)]
    whole = [r for r in rows if r.accuracy.n == 100]
    fronts = {cost: {"m": pareto_frontier([Point(r.strategy, r.budget, r.costs[cost], r.accuracy.mean)  # type: ignore[arg-type]
                                          for r in whole])} for cost in ("completion_tokens", "flops")}
    by = {(r.strategy, r.budget): r for r in rows}
    paired = [Paired(by[("wsc", 4)], None, Estimate(.04, .02, .06, 100), 2.0),
              Paired(by[("bon", 8)], None, Estimate(-.04, -.10, -.01, 100), 2.0),
              Paired(by[("wsc", 8)], None, Estimate(.05, -.01, .11, 100), 2.0)]
    got = {v.strategy: v for v in verdicts(rows, fronts["completion_tokens"], fronts["flops"], paired,
                                           lambda r: r.accuracy.n == 100)}
    assert set(got) == {"greedy", "sc", "bon", "wsc", "twin"}
    assert [(v.tokens_frontier, v.flops_frontier, v.above_sc, v.below_sc, v.beaten_by, v.pays)
            for v in (got["greedy"], got["sc"], got["bon"], got["wsc"], got["twin"])] == [
        ((1,), (1,), (), (), (), True),
        ((), (4, 8), (), (), (), True),
        ((), (), (), (8,), ((4, "sc@8"), (8, "sc@8")), False),
        ((4, 8), (8,), (4,), (), ((4, "sc@8"),), True),
        ((), (4,), (), (), (), True)]
    assert got["bon"].budgets == (4, 8)
    a = Analysis({}, {}, "d", rows, {}, {}, {}, "", {}, fronts["completion_tokens"], {}, verdicts=list(got.values()))
    assert ["m", "bon", "4, 8", "-", "-", "-", "8", "@4: sc@8; @8: sc@8", "never"] in verdict_rows(a)


def test_crossovers_compare_only_configs_with_every_problem() -> None:
    """A smaller model's config finished on 50 of the report's 100 problems (right on all, and cheap) does not
    count as reaching the larger model: it has not been measured on the problems the larger one was."""
    rows = [_row("1.5b", "greedy", 1, 0.60, 10.0), _row("0.5b", "greedy", 1, 0.30, 2.0),
            _row("0.5b", "beam", 4, 0.90, 3.0, n=50)]
    a = Analysis({}, {}, "d", rows, {}, {}, {}, "", {}, {}, {}, n_problems=100, n_params={"1.5b": 15, "0.5b": 5},
                 model_problems={"1.5b": 100, "0.5b": 100})
    (c,) = crossovers(a)
    assert (c.match, c.best.label) == (None, "greedy@1")
    assert [r.label for r in a.not_compared()[0]] == ["beam@4"]


def test_per_difficulty_keeps_each_line_in_one_colour_and_names_every_line(tmp_path: Path,
                                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """Strategy "a" has no problem in bin 1, so bin 1's panel draws "b" alone: "b" must keep its colour from bin
    2's panel (where "a" is drawn first), and the one legend lists both."""
    from matplotlib import pyplot
    from matplotlib.colors import to_rgba

    from thinkscale.eval import plot

    est = Estimate(0.5, 0.4, 0.6, 2)
    rows = [ConfigRow("m", "a", 1, est, {}, False), ConfigRow("m", "b", 1, est, {}, False)]
    by_bin = {("m", "b", 1, "1"): est, ("m", "a", 1, "2"): est, ("m", "b", 1, "2"): est}
    a = Analysis({}, {}, "d", rows, {}, {}, {"m": {}}, "pass rate", by_bin, {}, {}, model_problems={"m": 2})
    monkeypatch.setattr(plot.plt, "close", lambda fig: None)  # keep the figure to look at it
    plot.per_difficulty(a, tmp_path / "p.png")
    fig = pyplot.gcf()
    colours: dict[str, set[tuple[float, ...]]] = {}
    for ax in fig.axes:
        for c in ax.containers:
            colours.setdefault(c.get_label(), set()).add(to_rgba(c.lines[0].get_color()))
    pyplot.close(fig)
    assert set(colours) == {"a", "b"} and all(len(v) == 1 for v in colours.values())
    assert colours["a"] != colours["b"]
    legends = [*fig.legends, *(ax.get_legend() for ax in fig.axes if ax.get_legend())]
    assert [[t.get_text() for t in leg.get_texts()] for leg in legends] == [["a", "b"]]
