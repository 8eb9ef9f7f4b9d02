"""Budget sweeps: run every (problem, strategy config, budget, seed) unit of a SweepConfig and store it.

Plan. Each strategy spec is built with ``thinkscale.strategies.build_strategy``; ``budgets`` set its
``budget_knob`` (samples for self-consistency, ...); a knob that counts tokens (``budget_in_tokens``: auto's
``budget_tokens``, budget forcing's ``max_thinking_tokens``) is set to k chains' worth, k x ``max_tokens``, so one
sweep compares every strategy at the same budgets. A spec that sets its budget knob itself, or whose knob is
``max_tokens`` (greedy: the length of its one chain, which ``SweepConfig.max_tokens`` fixes), is not swept: it runs
once, at budget 1 or at the value it pins. A ``prefix_consistent`` strategy whose selection rule is known runs once
at the largest budget, and every smaller budget k is scored from k-subsets of its samples (sample j of an n-sample
request is the same for every n >= j, so the first k samples are exactly what a k-sample run draws); the others
run once per budget. Strategies run with an unlimited ``Budget``: the budget knob is what limits them, and the
x-axis of every plot is what the ledger measured.

Execution. Jobs run on an executor (``thinkscale.eval.executors``): ``workers`` threads of this process by default
(the llama.cpp backend batches concurrent calls), or replicas on a Ray cluster. Whichever, the calling thread
grades each finished job against the reference (strategies never see it: their Problem has no reference) and
writes it to the store in one transaction. Jobs already in the store are skipped, so re-running resumes.

Sample sharing (``SweepConfig.share_samples``, on by default; ``--no-share-samples``). Every strategy on a
(problem, seed, model) gets the same rng, so strategies with equal sampling knobs ask for the very same seeded
chains (self-consistency and best-of-N at 16 draw identical 16 chains). Each job's chains are stored with it
(``chains`` table); a later job's generate request is served from chains of jobs already committed, matched
exactly by ``thinkscale.eval.chains`` (prompt, sampling knobs, seed and each chain's place in the draw; logprob
requests always go to the model), and only what is not stored is generated. So that the sharing happens, jobs are
ordered model by model: greedy first (its temperature-0 chain matches no sampled request, and a partial sweep then
has every problem's baseline), then the prefix-consistent strategies that draw all their chains in one request (run
once at the largest budget), in config order, then the others, each largest budget first. A job in flight is never
read from: with several workers, a job that starts before its provider is committed draws its chains itself.
``SweepConfig.share_chains_from`` adds other runs' stores of the same model file to what serves (after this run's
own chains): a request another run already drew is not generated again.

Cost accounting with sharing. A job's ledger (tokens, calls, FLOPs, ``backend_seconds``) charges every chain it
used as the chain cost when generated: a strategy's cost does not depend on what ran before it. What was served
rather than computed is recorded per chain (``chains.source_job``, or ``source_run`` and ``source_run_job`` for
another run's; summed per run in ``SweepSummary.reused_*`` and
the report). A job's ``wall_seconds`` is the time it took now; its units' ``wall_seconds`` add the generation
seconds the served chains took when first generated (their 1/n shares of their requests' seconds), so a reused
chain is neither free nor counted twice in real time. The harness overhead (``SweepSummary.overhead_fraction``)
compares real wall time with real time inside backend calls (and sandbox runs of model-written code: the strategy's
work, not the harness's), so serving from the store (in memory) counts as overhead and served chains' original
seconds count in neither.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.metadata
import json
import logging
import math
import platform
import random
import subprocess
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from thinkscale.answers import Task, Verdict, check
from thinkscale.answers.extract import normalize_answer
from thinkscale.backends.base import Backend, BackendProxy
from thinkscale.eval.chains import ChainIndex, SharingBackend, StoredChain
from thinkscale.eval.config import SweepConfig
from thinkscale.eval.datasets import Dataset, EvalProblem, load_dataset
from thinkscale.eval.metrics import expected_selection_accuracy
from thinkscale.eval.store import (
    ChainRow,
    JobRecord,
    SampleRow,
    SessionProgress,
    Store,
    StoreError,
    UnitRow,
    open_existing,
)
from thinkscale.strategies.base import (
    FILE_KNOBS,
    Strategy,
    budget_knob,
    budget_scale,
    build_strategy,
    format_spec,
    get_strategy,
    knobs,
    parse_spec,
    prefix_selection,
)
from thinkscale.strategies.events import Select, Tree, parse_trace
from thinkscale.strategies.run import execute
from thinkscale.tools.sandbox import Limits, Sandbox, SandboxResult
from thinkscale.types import Budget, Candidate, Event, Ledger, Problem, Result, Role, Usage
from thinkscale.verifiers.aggregate import Selection, StepAggregation, aggregate_steps, select

if TYPE_CHECKING:
    from thinkscale.eval.executors import Executor

log = logging.getLogger(__name__)

BackendFactory = Callable[[str], Backend]

# How a job's rng is seeded; recorded in the run's config, so a run started with another scheme is not resumed.
RNG_SCHEME = "{seed}|{problem}|{model}"

# ---------------------------------------------------------------------- plan


@dataclass(frozen=True)
class StrategyPlan:
    label: str  # the spec as the store keys it (the user's spec, canonically written)
    name: str
    values: dict[str, str]
    knob: str | None  # the knob budgets set; None = not swept
    budgets: tuple[int, ...]
    overrides: dict[str, Any]
    reuse: bool
    selection: Selection | None
    step_aggregation: StepAggregation | None
    scale: int = 1  # the knob's value per budget unit: the sweep's max_tokens for a knob counting tokens, else 1

    def spec_at(self, budget: int) -> str:
        items = dict(self.values)
        if self.knob is not None:
            items[self.knob] = str(budget * self.scale)
        return format_spec(self.name, items)

    def build(self, budget: int) -> Strategy:
        over = dict(self.overrides)
        if self.knob is not None:
            over[self.knob] = budget * self.scale
        return build_strategy(self.label, **over)

    def job_budgets(self) -> tuple[int, ...]:
        return (self.budgets[-1],) if self.reuse else self.budgets


def plan_strategy(spec: str, cfg: SweepConfig) -> StrategyPlan:
    name, values = parse_spec(spec)
    get_strategy(name)
    label = format_spec(name, values)
    knob = budget_knob(name)
    known = knobs(name)
    overrides: dict[str, Any] = {}
    budgets: tuple[int, ...]
    if "max_tokens" in known and "max_tokens" not in values:
        overrides["max_tokens"] = cfg.max_tokens
    if knob is None or knob == "max_tokens":
        swept, budgets = None, (1,)
    elif knob in values:
        try:
            budgets = (int(values[knob]),)
        except ValueError:
            raise ValueError(f"strategy spec {spec!r}: its budget knob {knob}={values[knob]!r} is not an integer "
                             "budget") from None
        swept = None
    else:
        swept, budgets = knob, tuple(cfg.budgets)
    scale = budget_scale(name, cfg.max_tokens) if swept is not None else 1
    plan = StrategyPlan(label, name, values, swept, budgets, overrides, False, None, None, scale)
    for b in budgets[:-1]:  # every budget's knobs are checked before anything runs (adaptive-sc's max_samples at
        plan.build(b)       # budget 1 against its wave_size, say), not only the largest budget's
    probe = plan.build(budgets[-1])
    # how it picks among its samples: a ``selection`` knob (or ClassVar), else its declared ``prefix_selection``; a
    # prefix-consistent strategy that says neither runs once per budget instead of reusing samples
    selection = getattr(probe, "selection", None) or prefix_selection(name)
    agg = getattr(probe, "step_aggregation", None) or getattr(probe, "aggregation", None)
    reusable = bool(getattr(type(probe), "prefix_consistent", False)) and swept is not None and len(budgets) > 1
    reuse = reusable and isinstance(selection, Selection)
    if reusable and not reuse:
        log.warning("strategy %s is prefix-consistent but its selection rule is unknown: it runs once per budget",
                    label)
    return StrategyPlan(label, name, values, swept, budgets, overrides, reuse,
                        selection if reuse else None, StepAggregation(agg) if isinstance(agg, str) else None, scale)


@dataclass(frozen=True)
class Job:
    model: str
    plan: StrategyPlan
    problem: EvalProblem
    seed: int
    budget: int

    @property
    def key(self) -> tuple[str, str, str, int, int]:
        return (self.model, self.plan.label, self.problem.id, self.seed, self.budget)

    def rng(self) -> random.Random:
        # Neither the budget nor the strategy: all runs on one problem share their random numbers (common random
        # numbers), so a reused job's seed is the one a k-sample run would draw, and strategies that sample alike
        # (self-consistency, best-of-N, weighted-sc with equal knobs) vote, rank and weigh the very same chains.
        return random.Random(RNG_SCHEME.format(seed=self.seed, problem=self.problem.id, model=self.model))


def versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for pkg in ("thinkscale", "llama-cpp-python", "math-verify"):
        try:
            out[pkg] = importlib.metadata.version(pkg)
        except importlib.metadata.PackageNotFoundError:
            out[pkg] = "not installed"
    return out


def git_commit() -> str | None:
    try:
        r = subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(__file__).parent, capture_output=True, text=True,
                           timeout=5)
    except (OSError, subprocess.SubprocessError):
        return None
    return r.stdout.strip() or None if r.returncode == 0 else None


def identity(cfg: SweepConfig, ds: Dataset, plans: list[StrategyPlan]) -> dict[str, Any]:
    """What must match for a run to be resumed: everything that changes results. (Not ``out``, not workers.)"""
    backend = cfg.backend
    if backend.startswith("scripted:"):
        from thinkscale.eval.fake import table_sha256

        backend = f"scripted:sha256={table_sha256(backend.partition(':')[2])}"
    v = versions()
    return {
        "dataset": ds.name, "dataset_sha256": ds.sha256, "task": ds.task.value,
        "system": cfg.system, "limit": cfg.limit, "subset_seed": cfg.seed,
        "problem_ids_sha256": hashlib.sha256("\n".join(p.id for p in ds.problems).encode()).hexdigest(),
        "models": list(cfg.models), "backend": backend,
        "strategies": [{"spec": p.label, "budget_knob": p.knob, "budgets": list(p.budgets), "reuse": p.reuse,
                        "overrides": p.overrides, **({"budget_scale": p.scale} if p.scale != 1 else {})}
                       for p in plans],
        "budgets": list(cfg.budgets), "sample_seeds": list(cfg.sample_seeds), "max_tokens": cfg.max_tokens,
        "max_subsets": cfg.max_subsets, "rng_scheme": RNG_SCHEME, "share_samples": cfg.share_samples,
        "versions": {k: v[k] for k in ("thinkscale", "llama-cpp-python")},
        "knob_files": knob_files(plans),
        # recorded when on (absent: batched as the backend likes), so a run's store says whether it is reproducible
        **({"deterministic": True} if cfg.deterministic else {}),
        **({"levels": list(cfg.levels)} if cfg.levels is not None else {}),  # absent: every level
    }


def added_strategies(stored: dict[str, Any], now: dict[str, Any]) -> list[str] | None:
    """The specs ``now`` adds to the ``stored`` run identity, when that is all it changes (None when it changes
    more; empty when it only lists the same strategies in another order): every stored strategy entry is still
    there unchanged, with the same files behind its knobs, and nothing else differs. A job's results depend on its
    own strategy, problem, seed and model only (``Job.rng``; sample sharing serves a chain only to a request that
    asks for exactly it), so the stored jobs are what the grown config would have run."""
    rest = ("strategies", "knob_files")
    if {k: v for k, v in stored.items() if k not in rest} != {k: v for k, v in now.items() if k not in rest}:
        return None
    old_files, new_files = stored.get("knob_files", {}), now.get("knob_files", {})
    if any(new_files.get(spec) != files for spec, files in old_files.items()):
        return None
    old, new = stored["strategies"], now["strategies"]
    if any(entry not in new for entry in old):
        return None
    return [entry["spec"] for entry in new if entry not in old]


def knob_files(plans: list[StrategyPlan]) -> dict[str, dict[str, str]]:
    """sha256 of every file a strategy spec names (a PRM head, an auto policy): a run resumed after the file changed
    would mix two verifiers' results under one name, so the content is part of the run's identity."""
    out: dict[str, dict[str, str]] = {}
    for p in plans:
        for knob in sorted(FILE_KNOBS):
            value = {**p.values, **p.overrides}.get(knob)
            if isinstance(value, str) and Path(value).is_file():
                out.setdefault(p.label, {})[knob] = hashlib.sha256(Path(value).read_bytes()).hexdigest()
    return out


# ---------------------------------------------------------------------- backends


class TimedBackend(BackendProxy):
    """Wraps a backend to measure the wall time during which at least one call is in flight (``busy_seconds``):
    the rest of a sweep's wall time is harness overhead. ``serialize`` makes calls one at a time (for backends
    that are not thread-safe, like the scripted fake)."""

    def __init__(self, inner: Backend, *, serialize: bool = False) -> None:
        super().__init__(inner)
        self._lock = threading.Lock()
        self._call_lock = threading.Lock() if serialize else None
        self._active = 0
        self._since = 0.0
        self.busy_seconds = 0.0

    def _enter(self) -> None:
        with self._lock:
            if self._active == 0:
                self._since = time.perf_counter()
            self._active += 1

    def _exit(self) -> None:
        with self._lock:
            self._active -= 1
            if self._active == 0:
                self.busy_seconds += time.perf_counter() - self._since

    def busy_now(self) -> float:
        """``busy_seconds`` including the call(s) in flight right now."""
        with self._lock:
            return self.busy_seconds + (time.perf_counter() - self._since if self._active else 0.0)

    def _call(self, fn: Callable[..., Any], *args: Any) -> Any:
        if self._call_lock is not None:
            with self._call_lock:
                return self._timed(fn, *args)
        return self._timed(fn, *args)

    def _timed(self, fn: Callable[..., Any], *args: Any) -> Any:
        self._enter()
        try:
            return fn(*args)
        finally:
            self._exit()

    def generate(self, requests: Any) -> Any:
        return self._call(self.inner.generate, requests)

    def time_tool(self, fn: Callable[[], Any]) -> Any:
        """Run ``fn`` (a sandbox run a strategy asked for) as busy time: model-written code running is the
        strategy's work, not the harness's. Never serialized with backend calls."""
        return self._timed(fn)

    def score(self, requests: Any) -> Any:
        return self._call(self.inner.score, requests)

    def hidden_states(self, requests: Any) -> Any:
        return self._call(self.inner.hidden_states, requests)  # type: ignore[attr-defined]


def default_backend_factory(backend: str, *, deterministic: bool = False, n_threads: int | None = None
                            ) -> BackendFactory:
    """Each model's backend from the sweep's backend spec; ``n_threads``: the embedded backend's threads (None:
    every core it may run on)."""
    kind, _, arg = backend.partition(":")
    if deterministic and kind == "openai":
        raise ValueError("deterministic runs need the embedded backend (llamacpp): a server batches requests as it "
                         "likes")

    def make(model: str) -> Backend:
        if kind == "scripted":
            from thinkscale.eval.fake import scripted_backend

            return scripted_backend(arg)
        from thinkscale.backends import load_backend

        if kind == "openai":  # one URL, or a pool: URL,URL,...
            return load_backend(model, base_url=arg.split(","))
        threads: dict[str, Any] = {} if n_threads is None else {"n_threads": n_threads}
        return load_backend(model, progress=True, deterministic=deterministic, **threads)

    return make


def model_identity(model: str, backend: Backend) -> dict[str, Any]:
    info = backend.info()
    out: dict[str, Any] = {"fingerprint": info.fingerprint, "n_params": info.n_params}
    from thinkscale.models.registry import CATALOG

    spec = CATALOG.get(model)
    if spec is not None:
        out["sha256"] = spec.sha256  # the catalog's: pulls are checked against it
    return out


# ---------------------------------------------------------------------- one job


@dataclass
class Outcome:
    job: Job
    result: Result
    wall_seconds: float  # measured now
    chains: tuple[ChainRow, ...] = ()  # what its keyed generate requests got (served or generated)

    @property
    def reused_seconds(self) -> float:
        """Generation seconds the chains served from the store took when first generated (unknown counts 0)."""
        return sum(c.seconds or 0.0 for c in self.chains if c.served)


class TimedSandbox(Sandbox):
    """A Sandbox whose runs count as busy time of ``clock``'s (see ``TimedBackend.time_tool``)."""

    def __init__(self, limits: Limits, *, pool_size: int, clock: TimedBackend) -> None:
        super().__init__(limits, pool_size=pool_size)
        self._clock = clock

    def run(self, code: str, *, setup: tuple[str, ...] | list[str] = ()) -> SandboxResult:
        return self._clock.time_tool(lambda: Sandbox.run(self, code, setup=setup))  # type: ignore[no-any-return]


class Sandboxes:
    """The warm sandboxes of one model's jobs, one per set of code limits, made when a code-running strategy
    (``sc-tir``, ``pal``) first asks its run context for one and shared by its jobs (``workers`` of them at once, so
    its pool is ``sandbox_workers`` x ``workers``); a job would otherwise start and stop a pool of its own. A
    ``thinkscale.strategies.run.Sandboxes`` provider. Closed by ``close``."""

    def __init__(self, clock: TimedBackend, workers: int) -> None:
        self._clock, self._workers = clock, workers
        self._boxes: dict[tuple[Limits, int], TimedSandbox] = {}
        self._lock = threading.Lock()

    @contextlib.contextmanager
    def sandbox(self, limits: Limits, workers: int) -> Iterator[Sandbox]:
        key = (limits, workers * self._workers)
        with self._lock:
            box = self._boxes.get(key)
            if box is None:
                box = self._boxes[key] = TimedSandbox(key[0], pool_size=key[1], clock=self._clock)
        yield box  # shared: closed with the sweep, not with the job

    def close(self) -> None:
        with self._lock:
            boxes, self._boxes = list(self._boxes.values()), {}
        for box in boxes:
            box.close()


class OtherModels:
    """The models a job's strategy names besides the sweep's (a mixture-of-agents' proposers), each made by the
    sweep's backend factory on first use, timed like the sweep's own, shared by the jobs and closed with the
    sweep. Their chains are not shared through the store (its index holds one model's chains)."""

    def __init__(self, factory: BackendFactory, serialize: bool, own: tuple[str, Backend]) -> None:
        self._factory, self._serialize, self._own = factory, serialize, own
        self._backends: dict[str, TimedBackend] = {}
        self._lock = threading.Lock()

    def backend(self, name: str) -> Backend:
        if name == self._own[0]:  # the sweep's own model, named explicitly
            return self._own[1]
        with self._lock:
            if name not in self._backends:
                self._backends[name] = TimedBackend(self._factory(name), serialize=self._serialize)
            return self._backends[name]

    def close(self) -> None:
        with self._lock:
            backends, self._backends = list(self._backends.values()), {}
        for b in backends:
            b.close()


def run_job(job: Job, backend: Backend, shared: ChainIndex[StoredChain] | None = None,
            sandboxes: Sandboxes | None = None, others: OtherModels | None = None) -> Outcome:
    """Run one job; its requests are served from ``shared`` where it holds their chains (None: all generated), its
    code runs in ``sandboxes``' (None: a code-running strategy makes its own), other models it names come from
    ``others``."""
    strategy = job.plan.build(job.budget)
    sharing = SharingBackend(backend, shared)
    t0 = time.perf_counter()
    result = execute(strategy, job.problem.problem, sharing, Budget(), rng=job.rng(), sandboxes=sandboxes,
                     backend_for=None if others is None else others.backend)
    return Outcome(job, result, time.perf_counter() - t0, tuple(sharing.rows))


def _grade(ep: EvalProblem, answer: str | None) -> Verdict:
    return check(ep.task, answer, ep.reference)


def _score_of(c: Candidate, agg: StepAggregation | None, label: str) -> float:
    if not c.scores:
        raise ValueError(f"strategy {label}: a candidate has no verifier score, so its selection cannot be replayed")
    if len(c.scores) > 1 and agg is None:
        raise ValueError(f"strategy {label}: per-step scores but no step aggregation knob to reduce them")
    return aggregate_steps(c.scores, agg or StepAggregation.LAST)


def record(outcome: Outcome, max_subsets: int) -> JobRecord:
    """Grade a finished job and derive its units (one, or one per budget for a reused job)."""
    job, result = outcome.job, outcome.result
    ep, plan = job.problem, job.plan
    cands = list(result.candidates)
    verdicts = [_grade(ep, c.answer) for c in cands]
    correct = [v is Verdict.EQUIVALENT for v in verdicts]
    chosen_idx = result.chosen_index
    samples = [SampleRow(i, c.text, c.answer, correct[i], verdicts[i].value, c.completion_tokens, c.finish_reason,
                         c.logprobs, c.scores, i == chosen_idx) for i, c in enumerate(cands)]
    gen = result.ledger.total(Role.GENERATOR)
    ver = result.ledger.total(Role.VERIFIER)
    total = result.ledger.total()
    ver_tokens = None if ver.prompt_tokens is None or ver.completion_tokens is None \
        else ver.prompt_tokens + ver.completion_tokens
    answer_ok = _grade(ep, result.answer) is Verdict.EQUIVALENT
    value = float(answer_ok)
    if plan.reuse:
        # The same estimator as the smaller budgets (ties split, not broken by this run's rng), so the curve is
        # one quantity at every k; ``answer_correct`` keeps the grade of the answer this run actually gave.
        value = _expected(outcome, len(cands), cands, correct, max_subsets)[0]
    full = UnitRow(job.budget, result.answer, value, answer_ok, 1, False, gen.prompt_tokens,
                   gen.cached_prompt_tokens, gen.completion_tokens, ver_tokens,
                   outcome.wall_seconds + outcome.reused_seconds, total.flops)
    units = [full]
    if plan.reuse:
        units = [_subset_unit(outcome, k, cands, correct, gen, ver, ver_tokens, max_subsets)
                 for k in plan.budgets[:-1]] + [full]
    return JobRecord(
        model=job.model, strategy=plan.label, problem_id=ep.id, seed=job.seed, budget=job.budget,
        spec=plan.spec_at(job.budget), reuse=plan.reuse, stop_reason=result.stop_reason, answer=result.answer,
        trace=result.trace_json(), prompt_tokens=gen.prompt_tokens, cached_prompt_tokens=gen.cached_prompt_tokens,
        completion_tokens=gen.completion_tokens, calls=total.calls, verifier_prompt_tokens=ver.prompt_tokens,
        verifier_tokens=ver_tokens, flops=total.flops, verifier_flops=ver.flops if ver.calls else 0.0,
        wall_seconds=outcome.wall_seconds, backend_seconds=total.seconds, samples=samples, units=units,
        chains=outcome.chains)


def _expected(outcome: Outcome, k: int, cands: list[Candidate], correct: list[bool], max_subsets: int
              ) -> tuple[float, int, list[float] | None, random.Random]:
    """Expected accuracy of the plan's selection over k-subsets of the job's candidates, the subsets averaged, the
    aggregated scores used (None for a plain vote) and the unit's rng (for the k-prefix answer's tie-break)."""
    job, plan = outcome.job, outcome.job.plan
    assert plan.selection is not None
    keys = [normalize_answer(c.answer) for c in cands]
    scores = None if plan.selection is Selection.MAJORITY else \
        [_score_of(c, plan.step_aggregation, plan.label) for c in cands]
    rng = unit_rng(job.seed, job.problem.id, plan.label, job.model, k)
    acc, n_subsets = expected_selection_accuracy(keys, correct, scores, plan.selection, k, max_subsets=max_subsets,
                                                 rng=rng)
    return acc, n_subsets, scores, rng


def unit_rng(seed: int, problem_id: str, label: str, model: str, k: int) -> random.Random:
    """The rng of a reused job's unit at budget k: it draws the k-subsets scored (``subsets``) and breaks the k-prefix
    answer's ties. Rescoring a stored run (``thinkscale.eval.select``) draws the very same subsets from it."""
    return random.Random(f"{seed}|{problem_id}|{label}|{model}|{k}")


def _subset_unit(outcome: Outcome, k: int, cands: list[Candidate], correct: list[bool], gen: Usage, ver: Usage,
                 ver_tokens: int | None, max_subsets: int) -> UnitRow:
    job, plan = outcome.job, outcome.job.plan
    n = len(cands)
    if n != plan.budgets[-1]:
        raise RuntimeError(f"{plan.label} on {job.problem.id}: asked for {plan.budgets[-1]} samples, got {n} "
                           f"(stop_reason {outcome.result.stop_reason}); smaller budgets cannot be scored from it")
    acc, n_subsets, scores, rng = _expected(outcome, k, cands, correct, max_subsets)
    assert plan.selection is not None
    # The answer a k-sample run gives: its samples are the first k (see the module doc); ties broken by rng.
    choice = select([c.answer for c in cands[:k]], None if scores is None else scores[:k], plan.selection, rng=rng)
    answer = cands[choice.index].answer if choice.index is not None else None
    share = k / n
    comp = [c.completion_tokens for c in cands]
    completion = None if any(t is None for t in comp) else share * sum(t or 0 for t in comp)
    flops = None
    if gen.flops is not None and gen.computed_prompt_tokens is not None and gen.completion_tokens and \
            completion is not None:
        per_token = gen.flops / (gen.computed_prompt_tokens + gen.completion_tokens)
        flops = per_token * (gen.computed_prompt_tokens + completion) + share * (ver.flops or 0.0)
    return UnitRow(k, answer, acc, _grade(job.problem, answer) is Verdict.EQUIVALENT, n_subsets, True,
                   gen.prompt_tokens, gen.cached_prompt_tokens, completion,
                   None if ver_tokens is None else share * ver_tokens,
                   share * (outcome.wall_seconds + outcome.reused_seconds), flops)


# ---------------------------------------------------------------------- the sweep


@dataclass
class Progress:
    """What the runner reports after each job (the CLI draws it; tests can collect it)."""

    done: int
    total: int
    skipped: int
    correct_sum: float = 0.0
    units: int = 0
    generated_tokens: float = 0.0
    started: float = field(default_factory=time.perf_counter)

    @property
    def accuracy(self) -> float | None:
        return None if self.units == 0 else self.correct_sum / self.units

    @property
    def tokens_per_second(self) -> float:
        dt = time.perf_counter() - self.started
        return self.generated_tokens / dt if dt > 0 else 0.0


@dataclass
class SweepSummary:
    jobs_total: int
    jobs_skipped: int
    jobs_run: int
    wall_seconds: float
    backend_seconds: float
    load_seconds: float
    interrupted: bool = False
    # chains served from the store instead of generated, their completion tokens, and the seconds they took when
    # first generated (in neither wall_seconds nor backend_seconds)
    reused_chains: int = 0
    reused_tokens: int = 0
    reused_seconds: float = 0.0

    @property
    def overhead_fraction(self) -> float | None:
        """Share of the sweep's wall time (model loading excluded) spent outside backend calls."""
        return None if self.wall_seconds <= 0 else max(0.0, 1 - self.backend_seconds / self.wall_seconds)


def plan_jobs(cfg: SweepConfig, ds: Dataset, plans: list[StrategyPlan]) -> list[Job]:
    """Every job, in the order that lets later jobs be served chains earlier ones drew (see the module doc)."""
    # greedy first: its temperature-0 chain matches no sampled request, so this moves no sharing, and a partial
    # sweep then holds the baseline of every problem (what `fit-policy --greedy-first` replays)
    ordered = ([p for p in plans if p.name == "greedy"] + [p for p in plans if p.reuse and p.name != "greedy"]
               + [p for p in plans if not p.reuse and p.name != "greedy"])
    return [Job(model, plan, ep, seed, b) for model in cfg.models for plan in ordered for seed in cfg.sample_seeds
            for ep in ds.problems for b in reversed(plan.job_budgets())]


def sweep_problems(cfg: SweepConfig) -> Dataset:
    """The sweep's problems: its dataset (with its system prompt), the levels it keeps, its seeded subset."""
    return load_dataset(cfg.dataset, task=cfg.task, system=cfg.system).at_levels(cfg.levels).subset(cfg.limit,
                                                                                                  cfg.seed)


def prepare(cfg: SweepConfig, out: Path) -> tuple[Store, Dataset, list[StrategyPlan], list[Job]]:
    """Load the dataset, check every spec, open the store and bind it to this config (or refuse)."""
    ds = sweep_problems(cfg)
    plans = [plan_strategy(s, cfg) for s in cfg.strategies]
    labels = [p.label for p in plans]
    if len(set(labels)) != len(labels):
        raise ValueError(f"strategy specs name the same config twice: {labels}")
    store = Store(out)
    try:
        ident = resume_identity(store, cfg, ds, plans)
        added = store.bind_config(ident, {"git_commit": git_commit(), "versions": versions(),
                                          "created_at": time.time()}, grows=added_strategies)
        if added:
            log.warning("%s: strategies added to the stored run: %s (its finished jobs are kept)", out,
                        ", ".join(added))
        store.add_problems(ds.name, [(p.id, p.task.value, p.reference, p.level, p.problem.messages[-1].content)
                                     for p in ds.problems])
    except BaseException:
        store.close()
        raise
    return store, ds, plans, plan_jobs(cfg, ds, plans)


def resume_identity(store: Store, cfg: SweepConfig, ds: Dataset, plans: list[StrategyPlan]) -> dict[str, Any]:
    """The identity ``cfg`` must match to resume the run in ``store`` (``identity``, less what a run begun by an
    older thinkscale did not record). A StoreError when the stored run can never be resumed with ``cfg``."""
    ident = identity(cfg, ds, plans)
    stored_text = store.get_meta("config")
    stored = None if stored_text is None else json.loads(stored_text)
    if stored is not None and "share_samples" not in stored:
        # A run begun before sample sharing existed drew every chain itself: it resumes only that way.
        if cfg.share_samples:
            raise StoreError(f"{store.path} holds a run started before sample sharing existed, where every job "
                             "drew its own chains; resume it with --no-share-samples (share_samples = false), "
                             "or use another --out folder")
        del ident["share_samples"]
    if stored is not None and "knob_files" not in stored:
        del ident["knob_files"]  # a run begun before file contents were part of the identity
    return ident


def run_sweep(cfg: SweepConfig, out: str | Path, *, backend_factory: BackendFactory | None = None,
              workers: int = 1, command: str = "", on_progress: Callable[[Progress], None] | None = None,
              stop: threading.Event | None = None, executor: Executor | None = None,
              redo: Sequence[str] = ()) -> SweepSummary:
    """Run (or resume) the sweep ``cfg`` into the store under ``out``.

    ``backend_factory(model)`` builds each model's backend (default: from ``cfg.backend``). ``stop``, when set,
    makes the sweep finish the jobs in flight, store them, and return with ``interrupted=True``. ``executor``
    runs the jobs (``thinkscale.eval.executors``; default: ``workers`` threads of this process); this thread
    grades and stores them whatever it is. ``redo``: strategy configs of ``cfg`` (as listed) whose stored jobs are
    deleted first and run again, after a change to their code (``Store.drop_strategies`` says when that is refused).
    """
    from thinkscale.eval.executors import LocalExecutor

    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    executor = executor if executor is not None else LocalExecutor(workers)
    factory = backend_factory or default_backend_factory(cfg.backend, deterministic=cfg.deterministic,
                                                         n_threads=executor.backend_threads)
    # a bad dataset, spec or chain source is refused before the run folder (and its lock file) is made
    sweep_problems(cfg)
    labels = [plan_strategy(spec, cfg).label for spec in cfg.strategies]
    unknown = [spec for spec in redo if spec not in labels]
    if unknown:
        raise ValueError(f"redo names {', '.join(map(repr, unknown))}, not a strategy config of this sweep: give one "
                         f"of {', '.join(map(repr, labels))} as written there")
    sources = open_chain_sources(cfg, Path(out))
    try:
        lock = _lock(Path(out))
        try:
            return _run_locked(cfg, Path(out), factory, executor, command, on_progress, stop, sources, redo)
        finally:
            lock.close()  # also released by the OS if the process is killed
    finally:
        for source in sources.values():
            source.close()


def _lock(out: Path) -> Any:
    """An exclusive lock on the run folder: two sweeps into one store would run the same jobs twice."""
    import fcntl

    out.mkdir(parents=True, exist_ok=True)
    fh = (out / "sweep.lock").open("w")
    try:
        fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        fh.close()
        raise StoreError(f"another `thinkscale eval` is running into {out}; wait for it or stop it first") from None
    return fh


def _run_locked(cfg: SweepConfig, out: Path, factory: BackendFactory, executor: Executor, command: str,
                on_progress: Callable[[Progress], None] | None, stop: threading.Event | None,
                sources: dict[str, Store], redo: Sequence[str]) -> SweepSummary:
    store, _ds, _plans, jobs = prepare(cfg, out)
    if redo:
        try:
            dropped = store.drop_strategies(redo, {"git_commit": git_commit(), "versions": versions(),
                                                   "at": time.time()})
        except BaseException:
            store.close()
            raise
        for spec, n in dropped.items():
            log.warning("%s: %d stored jobs of %s deleted, to be run again (--redo)", out, n, spec)
    if sources:  # where this session's chains may come from: each source's config digest and jobs, as last opened
        digests = {name: {"config_sha256": hashlib.sha256(json.dumps(src.config(), sort_keys=True).encode())
                         .hexdigest(), "jobs": src.rows("SELECT COUNT(*) FROM jobs")[0][0]}
                  for name, src in sources.items()}
        store.set_meta("chain_sources", json.dumps(json.loads(store.get_meta("chain_sources") or "{}") | digests,
                                                   sort_keys=True))
    session = store.start_session(command)
    done = store.done_jobs()
    pending = [j for j in jobs if j.key not in done]
    progress = Progress(done=0, total=len(pending), skipped=len(jobs) - len(pending))
    wall = busy = load = 0.0
    ran = 0
    reused_chains = reused_tokens = 0
    reused_seconds = 0.0
    status = "finished"
    try:
        for model in cfg.models:
            todo = [j for j in pending if j.model == model]
            if not todo:
                continue
            t0 = time.perf_counter()
            run = executor.start(model, factory, serialize=cfg.backend.startswith("scripted:"))
            load += time.perf_counter() - t0
            t1: float | None = None
            try:
                store.bind_model(model, run.identity)
                shared = _stored_chains(store, model, sources, run.identity) if cfg.share_samples else None
                t1 = time.perf_counter()
                wall0, busy0 = wall, busy  # this model's time is added in the finally below, even on an error
                for outcome in run.outcomes(todo, stop, shared):
                    rec = record(outcome, cfg.max_subsets)
                    job_id = store.write_job(rec, SessionProgress(session, ran + 1, wall0 + time.perf_counter() - t1,
                                                                  busy0 + run.busy_now()))
                    if shared is not None:  # committed: later jobs may be served its chains
                        for c in rec.chains:
                            if not c.served:
                                shared.add(c.request_key, c.place, StoredChain(c, job_id, problem_id=rec.problem_id))
                    served = [c for c in rec.chains if c.served]
                    served_tokens = sum(c.completion_tokens or 0 for c in served)
                    reused_chains += len(served)
                    reused_tokens += served_tokens
                    reused_seconds += outcome.reused_seconds
                    ran += 1
                    progress.done += 1
                    top = rec.units[-1]
                    progress.units += 1
                    progress.correct_sum += top.correct
                    progress.generated_tokens += max(0, (rec.completion_tokens or 0) - served_tokens)
                    if on_progress is not None:
                        on_progress(progress)
            finally:
                if t1 is not None:
                    wall += time.perf_counter() - t1
                    busy += run.busy_now()
                run.close()
            if stop is not None and stop.is_set():
                status = "interrupted"
                break
    except KeyboardInterrupt:
        status = "interrupted"
        raise
    except BaseException:
        status = "failed"
        raise
    finally:
        store.end_session(SessionProgress(session, ran, wall, busy), status=status)
        store.close()
    return SweepSummary(len(jobs), len(jobs) - len(pending), ran, wall, busy, load, status == "interrupted",
                        reused_chains, reused_tokens, reused_seconds)


def open_chain_sources(cfg: SweepConfig, out: Path) -> dict[str, Store]:
    """The stores of ``cfg.share_chains_from`` (read-only, by the folder as named), checked: each a run folder other
    than ``out``, reproducible when this run must be (``deterministic``). The caller closes them."""
    if cfg.share_chains_from and not cfg.share_samples:
        raise ValueError("share_chains_from serves chains through sample sharing: it needs share_samples on")
    sources: dict[str, Store] = {}
    try:
        for name in cfg.share_chains_from:
            if Path(name).resolve() == out.resolve():
                raise ValueError(f"share_chains_from names the run's own folder {name}: its chains are shared "
                                 "anyway")
            try:
                src = sources[name] = open_existing(name, read_only=True)
            except StoreError as e:
                raise StoreError(f"share_chains_from: {e}; give run folders whose chains should serve this sweep, "
                                 "or leave it out") from None
            if cfg.deterministic and not src.config().get("deterministic"):
                raise StoreError(f"share_chains_from {name}: that run was not deterministic, this one is (its "
                                 "chains depend on how its calls were batched); leave it out")
    except BaseException:
        for src in sources.values():
            src.close()
        raise
    return sources


def _stored_chains(store: Store, model: str, sources: dict[str, Store] | None = None,
                   identity: dict[str, Any] | None = None) -> ChainIndex[StoredChain]:
    """The chains ``model``'s committed jobs generated, first stored first: this run's, then each of ``sources``'
    whose stored identity of ``model`` is ``identity`` (a source with another model file under that name is refused;
    one without the model serves nothing, with a warning)."""
    index: ChainIndex[StoredChain] = ChainIndex()
    _add_generated(index, store, model, None)
    for name, src in (sources or {}).items():
        theirs = src.get_meta(f"model:{model}")
        if theirs is None:
            log.warning("share_chains_from %s: that run has no chains of %s; it serves none of this run's", name,
                        model)
            continue
        if json.loads(theirs) != identity:
            raise StoreError(f"share_chains_from {name}: its {model!r} is {theirs}, this run's is "
                             f"{json.dumps(identity, sort_keys=True)}: chains of another model file cannot be served")
        _add_generated(index, src, model, name)
    return index


def _add_generated(index: ChainIndex[StoredChain], store: Store, model: str, run: str | None) -> None:
    """Add the chains ``model``'s jobs in ``store`` generated (of the run ``run``; None: this one), with their
    problems."""
    problems = {r["job_id"]: r["problem_id"] for r in store.rows("SELECT job_id, problem_id FROM jobs WHERE model = ?",
                                                                  (model,))}
    for job_id, c in store.chains(model=model, generated=True):
        index.add(c.request_key, c.place, StoredChain(c, job_id, run=run, problem_id=problems[job_id]))


def units_per_job(plan: StrategyPlan) -> int:
    return len(plan.budgets) if plan.reuse else 1


def fmt_overhead(summary: SweepSummary) -> str:
    f = summary.overhead_fraction
    return "n/a" if f is None or math.isnan(f) else f"{100 * f:.1f}%"


# ---------------------------------------------------------------------- re-scoring stored generations


def rescore(out: str | Path) -> int:
    """Grade every stored sample again and recompute every unit from the stored samples and usage, without a model:
    for a fixed grader, or a changed estimator. Each job is rewritten in its own transaction; jobs and samples keep
    their text and usage. Returns the number of jobs rescored."""
    store = open_existing(out)
    try:
        cfg = store.config()
        problems = {r["problem_id"]: r for r in store.rows("SELECT * FROM problems")}
        plans: dict[str, StrategyPlan] = {}
        for s in cfg["strategies"]:
            sweep = SweepConfig(dataset=cfg["dataset"], models=tuple(cfg["models"]), strategies=(s["spec"],),
                                budgets=tuple(cfg["budgets"]), max_tokens=cfg["max_tokens"])
            plan = plan_strategy(s["spec"], sweep)
            if (list(plan.budgets), plan.reuse, plan.knob) != (s["budgets"], s["reuse"], s["budget_knob"]):
                raise StoreError(f"strategy {s['spec']} now plans budgets {list(plan.budgets)} (reuse {plan.reuse}) "
                                 f"where the run has {s['budgets']} (reuse {s['reuse']}): it cannot be rescored")
            plans[s["spec"]] = plan
        n = 0
        for j in store.rows("SELECT * FROM jobs ORDER BY job_id"):
            p = problems[j["problem_id"]]
            ep = EvalProblem(p["problem_id"], Problem.from_text(p["text"], id=p["problem_id"]), p["reference"],
                             Task(p["task"]), p["level"])
            samples = store.rows("SELECT * FROM samples WHERE job_id = ? ORDER BY idx", (j["job_id"],))
            cands = tuple(Candidate(text=s["text"], answer=s["answer"], scores=tuple(json.loads(s["scores"])),
                                    completion_tokens=s["completion_tokens"], finish_reason=s["finish_reason"])
                          for s in samples)
            trace = parse_trace(json.loads(j["trace"]))  # an old store's free-form trace is converted
            chosen = next((i for i, s in enumerate(samples) if s["chosen"]), None)
            if chosen is None:
                chosen = _tree_choice(j["job_id"], trace, cands)
            result = Result(j["answer"], cands, _stored_ledger(j), j["stop_reason"], j["strategy"],
                            chosen_index=chosen, trace=trace)
            chains = tuple(c for _, c in store.chains(job_id=j["job_id"]))
            rec = record(Outcome(Job(j["model"], plans[j["strategy"]], ep, j["seed"], j["budget"]), result,
                                 j["wall_seconds"], chains), cfg["max_subsets"])
            store.replace_grades(j["job_id"], rec)
            n += 1
        return n
    finally:
        store.close()


def _tree_choice(job_id: int, trace: Sequence[Event], cands: Sequence[Candidate]) -> int | None:
    """A tree search's chosen candidate, read from its trace: the ``Select`` event names it. Stores written before
    ``record`` matched a tree search's choice by equality flag no sample, so ``rescore`` repairs them from here.
    None for a job that is no tree search or chose nothing."""
    if not any(isinstance(e, Tree) for e in trace):
        return None
    chosen = next((e.chosen for e in reversed(trace) if isinstance(e, Select)), None)
    if chosen is None:
        return None
    if not 0 <= chosen < len(cands):
        raise StoreError(f"job {job_id}: its trace chose candidate {chosen}, but the job stored {len(cands)}")
    return chosen


def _stored_ledger(j: Any) -> Ledger:
    """The usage a job stored, as a ledger ``record`` can read: generator and verifier accounts."""
    ver_flops = j["verifier_flops"] or 0.0
    ledger = Ledger()
    ledger.charge(Role.GENERATOR, Usage(prompt_tokens=j["prompt_tokens"],
                                        cached_prompt_tokens=j["cached_prompt_tokens"],
                                        completion_tokens=j["completion_tokens"], calls=1, seconds=j["backend_seconds"],
                                        flops=None if j["flops"] is None else j["flops"] - ver_flops))
    if ver_flops or j["verifier_tokens"]:
        vp, vt = j["verifier_prompt_tokens"], j["verifier_tokens"]
        ledger.charge(Role.VERIFIER, Usage(prompt_tokens=vp, cached_prompt_tokens=None,
                                           completion_tokens=None if vp is None or vt is None else vt - vp, calls=1,
                                           seconds=None, flops=ver_flops))
    return ledger
