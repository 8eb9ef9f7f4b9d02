"""``thinkscale eval``, ``rescore``, ``select``, ``report`` and ``export``: registered on the main app by
``register(app)``."""

from __future__ import annotations

import contextlib
import csv
import enum
import json
import logging
import shlex
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from thinkscale.cliutil import err, fail, os_reason, unwritable_file, unwritable_folder

if TYPE_CHECKING:
    from thinkscale.eval.config import SweepConfig
    from thinkscale.eval.runner import SweepSummary

DEFAULT_REPS = 2000  # bootstrap resamples of `report` and `select` unless --reps says otherwise


def _ints(text: str, what: str) -> list[int]:
    try:
        return [int(x) for x in text.split(",") if x.strip() != ""] or fail(f"{what} is empty")
    except ValueError:
        fail(f"{what} must be comma-separated integers, e.g. 1,2,4,8; got {text!r}")


class ExecutorKind(enum.StrEnum):
    local = "local"
    ray = "ray"


def eval_command(
    config: Annotated[Path | None, typer.Option("--config", help="A TOML sweep file (see thinkscale.eval.config); "
                                                "then the sweep options below must not be given.")] = None,
    dataset: Annotated[str | None, typer.Option(help="gsm8k, gsm8k-train, math500, amc23, aime24, aime25, game24, "
                                                "or a .jsonl file in the same schema.")] = None,
    task: Annotated[str | None, typer.Option(help="Answer task of a dataset file: math, numeric, integer, game24, "
                                             "multiple_choice.")] = None,
    system: Annotated[str | None, typer.Option(help="Replace the dataset's system prompt.")] = None,
    levels: Annotated[str | None, typer.Option(help="Only problems of these difficulty levels, e.g. 1,2 (MATH-500's "
                                               "1-5), before --limit draws from them.")] = None,
    limit: Annotated[int | None, typer.Option(help="Evaluate this many problems, drawn with --seed.")] = None,
    seed: Annotated[int | None, typer.Option(help="Seed of the problem subset (default 0).")] = None,
    model: Annotated[list[str] | None, typer.Option(help="Model (repeatable): catalog name or .gguf path "
                                                    "(default qwen2.5-coder-0.5b).")] = None,
    backend: Annotated[str | None, typer.Option(help="llamacpp (default), openai:URL, or scripted:FILE (the "
                                                "deterministic fake, for tests; see thinkscale.eval.fake).")] = None,
    strategy: Annotated[list[str] | None, typer.Option(help="Strategy spec (repeatable): NAME or "
                                                       "NAME:KNOB=VALUE,...")] = None,
    budgets: Annotated[str | None, typer.Option(help="Values of each strategy's budget knob, e.g. 1,2,4,8,16.")]
    = None,
    sample_seeds: Annotated[str | None, typer.Option(help="Seeds per unit, e.g. 0 or 0,1,2 (default 0).")] = None,
    max_tokens: Annotated[int | None, typer.Option(help="Completion tokens per chain (default 512).")] = None,
    max_subsets: Annotated[int | None, typer.Option(help="k-subsets averaged per reused budget (default 1000).")]
    = None,
    share_samples: Annotated[bool | None, typer.Option(
        "--share-samples/--no-share-samples", help="Serve a job's chains from those finished jobs already drew "
        "with the same prompt, knobs and seeds (default), or let every job draw its own.")] = None,
    out: Annotated[Path | None, typer.Option(help="Run folder (results.sqlite); re-running resumes.")] = None,
    share_chains_from: Annotated[list[str] | None, typer.Option(
        "--share-chains-from", metavar="RUN", help="Another run's folder whose stored chains of the same model file "
        "also serve this sweep's requests (repeatable; replaces the sweep file's share_chains_from).")] = None,
    redo: Annotated[list[str] | None, typer.Option(
        "--redo", metavar="SPEC", help="Delete the stored jobs of this strategy config (as the sweep lists it; "
        "repeatable) and run them again: after a change to the strategy's code, which a resume does not see. Once "
        "per code version: keep it out of the resume command.")] = None,
    workers: Annotated[int, typer.Option(help="Jobs in flight at once (the llama.cpp backend batches them); with "
                                         "--executor ray, per replica.")] = 1,
    quiet: Annotated[bool, typer.Option(help="No progress bar.")] = False,
    status: Annotated[bool, typer.Option(
        "--status", help="Run nothing: print the sweep's jobs planned and stored per strategy config and budget, "
        "the stored jobs' mean wall seconds and the time the rest would take at that pace with --workers jobs at "
        "a time. Only reads the store, so it may be run while the sweep runs.")] = False,
    base_url: Annotated[list[str] | None, typer.Option(
        "--base-url", help="An OpenAI-compatible server of the model, e.g. http://10.0.0.2:8000/v1 (repeatable: a "
        "pool, load-balanced with health checks and failover); the same as --backend openai:URL,URL,...")] = None,
    base_url_file: Annotated[Path | None, typer.Option(help="A pool file: --base-url values, one per line.")] = None,
    executor: Annotated[ExecutorKind, typer.Option(
        help="Where jobs run: local (threads of this process) or ray (replicas on a Ray cluster; pip install "
        "'thinkscale[ray]'; see docs/scale.md).")] = ExecutorKind.local,
    address: Annotated[str | None, typer.Option(help="--executor ray: the cluster to attach to (auto, HOST:PORT, "
                                                "ray://HOST:10001); default: start a local one.")] = None,
    replicas: Annotated[int | None, typer.Option(help="--executor ray: replicas per model, each with its own "
                                                 "backend (default 2).")] = None,
    cpus_per_replica: Annotated[float | None, typer.Option(help="--executor ray: CPUs reserved per replica "
                                                           "(default 1; a llama.cpp replica: its threads).")] = None,
) -> None:
    """Run a budget sweep (or resume it: finished units are skipped) and store every unit and sample."""
    from thinkscale.backends.base import BackendError
    from thinkscale.eval.runner import run_sweep
    from thinkscale.eval.store import StoreError
    from thinkscale.models import ModelError

    flags: dict[str, Any] = {
        "dataset": dataset, "task": task, "system": system, "limit": limit, "seed": seed, "models": model,
        "levels": None if levels is None else _ints(levels, "--levels"),
        "backend": _pool_backend(backend, base_url, base_url_file), "strategies": strategy,
        "budgets": None if budgets is None else _ints(budgets, "--budgets"),
        "sample_seeds": None if sample_seeds is None else _ints(sample_seeds, "--sample-seeds"),
        "max_tokens": max_tokens, "max_subsets": max_subsets, "share_samples": share_samples}
    cfg = _sweep_config(config, {k: v for k, v in flags.items() if v is not None}, share_chains_from)
    run_dir = out or cfg.out
    if run_dir is None:
        fail("give --out RUN_FOLDER (or `out` in the sweep file)")
    if status:
        return _print_status(cfg, run_dir, workers, redo)
    _check_run_folder(run_dir)
    # The runner warns about plans the user should know of (e.g. a strategy that cannot reuse samples).
    logging.getLogger("thinkscale.eval").setLevel(logging.WARNING)
    command = shlex.join(["thinkscale", *sys.argv[1:]])
    bar, on_progress = _progress_bar(quiet)
    runner = _executor(executor, address, replicas, cpus_per_replica, workers)
    stop = threading.Event()
    try:
        with _stop_on_signals(stop), bar, contextlib.closing(runner):
            summary = run_sweep(cfg, run_dir, workers=workers, command=command, on_progress=on_progress, stop=stop,
                                executor=runner, redo=redo or ())
    except KeyboardInterrupt:
        _interrupted(run_dir)
        raise typer.Exit(130) from None
    except (BackendError, ModelError, NotImplementedError) as e:
        fail(f"{e} (finished units are stored; fix this and run the same command to resume)", 1)
    except (StoreError, ValueError) as e:
        fail(str(e))
    except OSError as e:  # a path the checks above could not foresee (/proc/x, a folder removed meanwhile)
        _fail_os(e, run_dir)
    _print_summary(summary, run_dir)
    if summary.interrupted:
        _interrupted(run_dir)
        raise typer.Exit(130)


def _progress_bar(quiet: bool) -> tuple[Progress, Callable[[Any], None]]:
    """The sweep's progress bar on stderr (disabled by ``quiet``) and the callback that updates it."""
    bar = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                   TimeRemainingColumn(), TextColumn("{task.fields[stats]}"), console=err, disable=quiet)
    task_id = bar.add_task("eval", total=None, stats="")

    def on_progress(p: Any) -> None:
        acc = "?" if p.accuracy is None else f"{p.accuracy:.3f}"
        bar.update(task_id, completed=p.done, total=p.total,
                   stats=f"acc {acc}  {p.tokens_per_second:.0f} tok/s  ({p.skipped} done before)")

    return bar, on_progress


def _pool_backend(backend: str | None, urls: list[str] | None, url_file: Path | None) -> str | None:
    """``--backend``, or the ``openai:URL,URL,...`` of ``--base-url`` / ``--base-url-file``."""
    if not urls and url_file is None:
        return backend
    if backend is not None:
        fail("give --backend or --base-url / --base-url-file, not both")
    from thinkscale.backends.pool import check_urls, read_url_file

    try:
        return "openai:" + ",".join(check_urls([*(urls or []), *(read_url_file(url_file) if url_file else [])]))
    except ValueError as e:
        fail(str(e))


def _executor(kind: ExecutorKind, address: str | None, replicas: int | None, cpus: float | None,
              workers: int) -> Any:
    """The sweep's executor (``thinkscale.eval.executors``); Ray is checked for before anything runs."""
    from thinkscale.eval.executors import LocalExecutor, RayExecutor, RayOptions, import_ray

    try:
        if kind is ExecutorKind.local:
            ray_only = [n for n, v in (("--address", address), ("--replicas", replicas),
                                       ("--cpus-per-replica", cpus)) if v is not None]
            if ray_only:
                fail(f"{', '.join(ray_only)}: only with --executor ray")
            return LocalExecutor(workers)
        import_ray()
        return RayExecutor(RayOptions(address=address, replicas=2 if replicas is None else replicas,
                                      cpus_per_replica=1.0 if cpus is None else cpus, workers=workers))
    except (ImportError, ValueError) as e:
        fail(str(e))


def _check_run_folder(run_dir: Path) -> None:
    """Refuse an ``--out`` that can never hold a run before anything runs: a file, a folder that cannot be written
    (a read-only disk or archive), a parent that is a file."""
    problem = unwritable_folder(run_dir)
    if problem:
        fail(f"--out {run_dir} {problem}; a sweep stores every unit in its run folder: give a writable one "
             "(`thinkscale report` and `export` read a finished run from a read-only folder)")


def _sweep_config(config: Path | None, given: dict[str, Any], chains_from: list[str] | None) -> SweepConfig:
    """The SweepConfig of ``--config FILE`` or of the sweep options ``given`` (never both); ``--share-chains-from``
    (``chains_from``) goes with either and replaces the file's."""
    from thinkscale.eval.config import SweepConfig, format_validation_error, load_sweep_file

    try:
        if config is not None:
            if given:
                fail(f"--config {config} sets the sweep; do not also give {', '.join(sorted(given))}")
            cfg = load_sweep_file(config)
            if chains_from is None:
                return cfg
            return SweepConfig(**(cfg.model_dump() | {"share_chains_from": chains_from}))
        if "dataset" not in given or "strategies" not in given:
            fail("give --dataset and at least one --strategy (or --config FILE)")
        given.setdefault("models", ["qwen2.5-coder-0.5b"])
        if chains_from is not None:
            given["share_chains_from"] = chains_from
        return SweepConfig(**given)
    except ValidationError as e:
        fail(format_validation_error(e, "options"))
    except ValueError as e:
        fail(str(e))


@contextmanager
def _stop_on_signals(stop: threading.Event) -> Iterator[None]:
    """Ctrl-C or `kill PID` (SIGTERM, what a nohup'd sweep usually gets) sets ``stop``: no new job starts, the jobs in
    flight finish and are stored, the session is recorded as interrupted and the exit status is 130. A second one
    raises KeyboardInterrupt, which abandons the jobs in flight at once (their work is lost; the store stays
    consistent). Off the main thread (where signals cannot be handled) it does nothing."""

    def on_signal(signum: int, frame: Any) -> None:
        if stop.is_set():
            raise KeyboardInterrupt
        stop.set()
        err.print(f"{signal.Signals(signum).name}: stopping once the jobs in flight are stored (again to abandon "
                  "them)", highlight=False, soft_wrap=True)

    main = threading.current_thread() is threading.main_thread()
    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)} if main else {}
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


def _interrupted(run_dir: Path) -> None:
    err.print(f"interrupted: finished units are stored in {run_dir}; run the same command again to resume",
              highlight=False, soft_wrap=True)


def _fail_os(e: OSError, run_dir: Path) -> None:
    """Exit naming an OS error of a sweep: as the run folder's when the path is in it (or one of its parents)."""
    where = str(e.filename or "")  # the run folder, a parent it needed, or a file in it
    ours = bool(where) and (where.startswith(str(run_dir)) or str(run_dir).startswith(where))
    fail(f"--out {run_dir}: {os_reason(e)}; give a folder that can be created and written" if ours else
         f"{os_reason(e)}")


def _print_status(cfg: SweepConfig, run_dir: Path, workers: int, redo: list[str] | None) -> None:
    """``eval --status``: the table of ``thinkscale.eval.status`` on stdout, the totals and the estimate below it."""
    from rich.table import Table

    from thinkscale.eval.status import sweep_status
    from thinkscale.eval.store import StoreError

    if redo:
        fail("--status runs nothing: give --redo to the command that runs the sweep")
    if workers < 1:
        fail(f"--workers must be >= 1, got {workers}")
    try:
        st = sweep_status(cfg, run_dir)
    except (StoreError, ValueError) as e:
        fail(str(e))
    except OSError as e:
        fail(f"--out {run_dir}: {os_reason(e)}")
    table = Table("model", "strategy", "budget", "stored", "planned", "wall s / job", "hours left", box=None)
    for c in st.configs:
        left = c.seconds_left_one_at_a_time
        table.add_row(c.model, c.spec, str(c.budget), str(c.stored), str(c.planned),
                      "-" if c.mean_wall_seconds is None else f"{c.mean_wall_seconds:.1f}",
                      "no pace yet" if left is None else f"{left / workers / 3600:.2f}")
    out = Console(soft_wrap=True)
    out.print(table)
    where = f"{run_dir}" if st.stored_run else f"{run_dir} (no store yet: nothing has run)"
    out.print(f"{st.stored} of {st.planned} jobs stored in {where}; {st.planned - st.stored} left.", highlight=False)
    if st.added:
        out.print(f"The sweep adds {', '.join(st.added)} to the stored run (it grows the run when it resumes).",
                  highlight=False)
    if st.planned > st.stored and len(st.unpaced) == len([c for c in st.configs if c.left]):
        out.print("No estimate yet: no config with jobs left has a stored job to pace it.", highlight=False)
    elif st.planned > st.stored:
        estimate = (f"~{st.seconds_left(workers) / 3600:.1f} h at the stored jobs' pace with {workers} "
                    f"job{'s' if workers > 1 else ''} at a time (each job's wall seconds as it ran beside the others "
                    "in flight)")
        unpaced = st.unpaced
        rest = (f", plus {len(unpaced)} config{'s' if len(unpaced) > 1 else ''} ({sum(c.left for c in unpaced)} "
                "jobs) with no stored job to pace them (\"no pace yet\" above)") if unpaced else ""
        out.print(f"{estimate}{rest}.", highlight=False)


def _print_summary(summary: SweepSummary, run_dir: Path) -> None:
    from thinkscale.eval.runner import fmt_overhead

    shared = "" if not summary.reused_chains else (
        f"; {summary.reused_chains} chains ({summary.reused_tokens} tokens, {summary.reused_seconds:.1f} s when first "
        "generated) served from the store instead of generated again")
    err.print(f"{summary.jobs_run} jobs run, {summary.jobs_skipped} already stored, of {summary.jobs_total}; "
              f"sweep {summary.wall_seconds:.1f} s (+{summary.load_seconds:.1f} s loading), harness overhead "
              f"{fmt_overhead(summary)} of sweep wall time{shared}. Results: {run_dir}", highlight=False,
              soft_wrap=True)

def report_command(
    runs: Annotated[list[Path], typer.Argument(help="Run folder(s); several runs on one dataset share a report.")],
    out: Annotated[Path | None, typer.Option(
        help="Where plots, report.html and report.md go (default RUN/report).")] = None,
    reps: Annotated[int, typer.Option(help="Bootstrap resamples for the 95% intervals.")] = DEFAULT_REPS,
) -> None:
    """Write PNG plots, a self-contained report.html and report.md (the tables, for docs) for a run, and print
    its tables."""
    from thinkscale.eval.analysis import analyze
    from thinkscale.eval.report import print_tables, write_report
    from thinkscale.eval.store import Store, StoreError, open_existing

    if reps < 1:
        fail(f"--reps must be at least 1 bootstrap resample (got {reps})")
    target = out or runs[0] / "report"
    unwritable = unwritable_folder(target, create=out is not None)  # the default is made only once it is written
    if unwritable and out is not None:
        fail(f"--out {out} {unwritable}; give a folder where the plots and report.html can be written")
    stores: list[Store] = []
    try:
        for r in runs:  # read-only: an archived run (a read-only folder or disk) is reported all the same
            stores.append(open_existing(r, read_only=True))
        a = analyze(stores, reps=reps)
    except (ValueError, StoreError) as e:
        fail(str(e))
    finally:
        for s in stores:
            s.close()
    print_tables(a, Console(width=None if sys.stdout.isatty() else 160))  # files and pipes get whole rows
    if unwritable:  # the default RUN/report of a read-only run: the tables are printed, the files need --out
        fail(f"the tables are above; the plots and report.html were not written: {target} {unwritable}; give "
             "--out DIR", 1)
    try:
        page, images = write_report(a, target, report_invocation(runs, out, reps))
    except OSError as e:
        fail(f"the tables are above; writing the report in {target} failed: {os_reason(e)}", 1)
    err.print(f"wrote {page}, report.md and {len(images)} plots in {target}", highlight=False, soft_wrap=True)


def report_invocation(runs: list[Path], out: Path | None, reps: int) -> str:
    """The ``thinkscale report`` command line that writes this report, as report.md quotes it."""
    words = ["thinkscale", "report", *map(str, runs)]
    if out is not None:
        words += ["--out", str(out)]
    if reps != DEFAULT_REPS:
        words += ["--reps", str(reps)]
    return shlex.join(words)


class ExportFormat(enum.StrEnum):
    jsonl = "jsonl"
    csv = "csv"


def export_command(
    run: Annotated[Path, typer.Argument(help="Run folder.")],
    format: Annotated[ExportFormat, typer.Option("--format", help="jsonl or csv.")] = ExportFormat.jsonl,
    output: Annotated[Path | None, typer.Option("--output", "-o", help="File to write (default stdout).")] = None,
) -> None:
    """Write one row per unit (problem, strategy config, budget, seed) with its answer, grade and costs."""
    from thinkscale.eval.analysis import export_rows
    from thinkscale.eval.store import StoreError, open_existing

    try:
        store = open_existing(run, read_only=True)  # an archived run (read-only folder or disk) exports too
    except StoreError as e:
        fail(str(e))
    try:
        rows = export_rows(store)
    except (ValueError, StoreError) as e:
        fail(str(e))
    finally:
        store.close()
    try:
        fh = sys.stdout if output is None else output.open("w", encoding="utf-8", newline="")
    except OSError as e:
        fail(f"--output {output}: cannot write it ({os_reason(e)}); give a file in a writable folder, or leave "
             "--output out to write to stdout")
    try:
        if format is ExportFormat.jsonl:
            for r in rows:
                fh.write(json.dumps(r) + "\n")
        else:
            w = csv.DictWriter(fh, fieldnames=list(rows[0]) if rows else ["problem_id"])
            w.writeheader()
            w.writerows(rows)
        fh.flush()
    except OSError as e:  # e.g. the disk filled up
        fail(f"--output {output or 'stdout'}: writing failed after some rows ({os_reason(e)})", 1)
    finally:
        if output is not None:
            with contextlib.suppress(OSError):  # flushed above: a failure there was reported
                fh.close()


def rescore_command(run: Annotated[Path, typer.Argument(help="Run folder.")]) -> None:
    """Grade the stored samples again and recompute every unit (no model needed): after a grader fix, or to
    bring a run up to the current estimators. Safe to interrupt: each job is rewritten in one transaction."""
    from thinkscale.eval.runner import rescore
    from thinkscale.eval.store import StoreError

    try:
        n = rescore(run)
    except (StoreError, ValueError) as e:
        fail(str(e))
    except OSError as e:
        fail(f"{run}: {os_reason(e)}")
    err.print(f"rescored {n} jobs in {run}", highlight=False, soft_wrap=True)


def select_command(
    run: Annotated[Path, typer.Argument(help="Run folder with self-consistency chains.")],
    selector: Annotated[list[str] | None, typer.Option(
        help="Selector (repeatable): majority, weighted:verifier=NAME, best:verifier=NAME, tiebreak:verifier=NAME "
        "(verifier_path=FILE and step_aggregation=last|min|product|mean as for a strategy). Majority is always "
        "reported: every other is compared with it.")] = None,
    k: Annotated[list[int] | None, typer.Option("--k", help="Chains chosen among (repeatable; default 4, 8, 16 "
                                                "where the run stores that many).")] = None,
    cache: Annotated[Path | None, typer.Option(help="SQLite file of verifier scores, kept between runs: a rerun "
                                               "scores nothing again (default: in memory).")] = None,
    json_out: Annotated[Path | None, typer.Option("--json", help="Also write the report as JSON (with per-problem "
                                                  "values) to this file.")] = None,
    backend: Annotated[str | None, typer.Option(help="Backend of the run's model for verifier scoring: llamacpp, "
                                                "openai:URL, scripted:FILE (default: the run's own).")] = None,
    model: Annotated[str | None, typer.Option(help="Which of the run's models (default its first).")] = None,
    sampler: Annotated[str | None, typer.Option(help="Which self-consistency spec, when the run has several.")]
    = None,
    threads: Annotated[int | None, typer.Option(help="llama.cpp threads for verifier scoring.")] = None,
    reps: Annotated[int, typer.Option(help="Bootstrap resamples for the 95% intervals.")] = DEFAULT_REPS,
) -> None:
    """Rescore a stored run's self-consistency chains with other selectors, without generating: accuracy, the paired
    difference against majority and pass@k per selector and k (verifier scores computed once per chain)."""
    from thinkscale.backends.base import BackendError
    from thinkscale.eval.select import parse_selector, select_run
    from thinkscale.eval.store import StoreError
    from thinkscale.models import ModelError
    from thinkscale.verifiers.base import VerifierError

    if reps < 1:
        fail(f"--reps must be at least 1 bootstrap resample (got {reps})")
    for flag, path in (("--json", json_out), ("--cache", cache)):
        problem = None if path is None else unwritable_file(path)
        if problem:
            fail(f"{flag} {path} {problem}")
    bar = Progress(TextColumn("verifier scores"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                   TimeRemainingColumn(), console=err, transient=True)
    task_id = bar.add_task("score", total=None)
    try:
        parsed = [parse_selector(s) for s in selector or []]
        with bar:
            result = select_run(run, parsed, ks=k, cache=cache, backend=backend, model=model, sampler=sampler,
                                threads=threads, reps=reps,
                                progress=lambda done, total: bar.update(task_id, completed=done, total=total))
    except (StoreError, ValueError) as e:
        fail(str(e))
    except (BackendError, ModelError, VerifierError, NotImplementedError) as e:
        fail(f"verifier scoring failed: {e} (scores computed so far are in --cache, when given)", 1)
    except OSError as e:
        fail(os_reason(e), 1)
    _print_selection(result, Console(width=None if sys.stdout.isatty() else 160))
    scored = result["verifier_scores"]
    if scored["computed"] or scored["from_cache"]:
        err.print(f"verifier scores: {scored['computed']} chains scored now, {scored['from_cache']} from the cache"
                  f"{'' if cache else ' (give --cache FILE to keep them for the next run)'}", highlight=False,
                  soft_wrap=True)
    if json_out is not None:
        try:
            json_out.write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")
        except OSError as e:
            fail(f"the table is above; writing --json {json_out} failed: {os_reason(e)}", 1)


def _ci(value: float, ci: list[float], sign: bool = False) -> str:
    f = "{:+.3f}" if sign else "{:.3f}"
    return f"{f.format(value)} [{f.format(ci[0])}, {f.format(ci[1])}]"


def _per_problem(value: float | None, fmt: str = "{:.0f}") -> str:
    return "?" if value is None else fmt.format(value)


def _print_selection(result: dict[str, Any], console: Console) -> None:
    from rich.table import Table

    table = Table(title=f"{result['run']}: {result['model']}, {result['sampler']}, {result['chains_per_problem']} "
                        f"chains x {result['problems']} problems", title_justify="left")
    for name in ("selector", "k", "accuracy [95% CI]", "vs majority [95% CI]", "pass@k", "generated tok/problem",
                 "verifier tok/problem"):
        table.add_column(name, justify="left" if name == "selector" else "right")
    for k, row in result["by_k"].items():
        for label, e in row["selectors"].items():
            vs = e.get("vs_majority")
            cost = e["cost_per_problem"]
            table.add_row(label, k, _ci(e["accuracy"], e["ci95"]), "" if vs is None else _ci(vs["diff"], vs["ci95"],
                          sign=True), f"{row['pass_at_k']['accuracy']:.3f}", _per_problem(cost["generated_tokens"]),
                          _per_problem(cost["verifier_tokens"]))
        table.add_section()
    console.print(table)


def register(app: typer.Typer) -> None:
    app.command("eval")(eval_command)
    app.command("rescore")(rescore_command)
    app.command("select")(select_command)
    app.command("report")(report_command)
    app.command("export")(export_command)
