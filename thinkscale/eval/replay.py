"""Replay a run's stored self-consistency chains as a backend, so adaptive strategies can be evaluated (and policies
fitted) on exactly the chains a sweep already paid for, without a model.

Self-consistency asks for N chains in one seeded request; sample j of that draw is what any request with the same
prompt, sampling knobs and seed gets as its sample j (``GenRequest.sample_seed``), including a continuation with
``first_sample`` (see ``thinkscale.types.GenRequest``); which stored chain answers which request is decided by
``thinkscale.eval.chains`` (the matcher the sweep runner's sample sharing uses too). ``ReplayBackend`` serves such
requests from the store:
the chains' text, finish reason and token counts as stored, and usage made of those counts (the prompt length as
the run measured it; cached tokens, time and FLOPs unknown: None). A request it does not hold (another prompt,
seed or knob, more chains than were stored) raises ``ReplayMissing`` naming what was asked and what is stored:
replay never makes up a chain. Logprobs are refused (``capabilities.logprobs`` is False): the store keeps only a
summary per chain.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass

from thinkscale.backends.base import BackendError, BaseBackend, Capabilities, ModelInfo, check_requests
from thinkscale.eval.chains import ChainIndex, request_id
from thinkscale.eval.config import SweepConfig
from thinkscale.eval.datasets import EvalProblem, load_dataset
from thinkscale.eval.runner import RNG_SCHEME, StrategyPlan, plan_strategy
from thinkscale.eval.store import Store, StoreError
from thinkscale.strategies.events import Generate, parse_trace
from thinkscale.strategies.greedy import Greedy
from thinkscale.strategies.self_consistency import SelfConsistency
from thinkscale.types import Completion, GenRequest, Sample, Usage


class ReplayMissing(BackendError):
    """The replayed store has no chain for a request."""


@dataclass(frozen=True)
class StoredSample:
    text: str
    answer: str | None
    correct: bool
    completion_tokens: int | None
    finish_reason: str
    logprob_mean: float | None


@dataclass(frozen=True)
class StoredDraw:
    """One stored job of one generate request (self-consistency's seeded draw, or greedy's one chain): its chains
    in sample order and the request's sampling knobs."""

    model: str
    problem_id: str
    seed: int  # the unit's sample seed (a sweep dimension)
    request_seed: int | None  # the GenRequest seed the job drew (None for greedy)
    samples: tuple[StoredSample, ...]
    prompt_tokens: int | None
    temperature: float
    top_p: float
    max_tokens: int

    def rng_seed(self) -> str:
        """The seed of the job's rng, as the eval harness seeds every strategy on this (problem, seed, model)."""
        return RNG_SCHEME.format(seed=self.seed, problem=self.problem_id, model=self.model)


def run_problems(store: Store) -> dict[str, EvalProblem]:
    """The run's problems as the sweep gave them to strategies (dataset, system prompt and subset from its config),
    checked against the dataset hash and problem ids the run recorded."""
    cfg = store.config()
    ds = load_dataset(cfg["dataset"], task=cfg["task"], system=cfg["system"])
    if ds.sha256 != cfg["dataset_sha256"]:
        raise StoreError(f"{store.dir}: dataset {cfg['dataset']} is not the file the run used (sha256 differs)")
    ds = ds.at_levels(cfg.get("levels")).subset(cfg["limit"], cfg["subset_seed"])
    ids = hashlib.sha256("\n".join(p.id for p in ds.problems).encode()).hexdigest()
    if ids != cfg["problem_ids_sha256"]:
        raise StoreError(f"{store.dir}: the dataset subset differs from the run's problems")
    return {p.id: p for p in ds.problems}


def sampler_plan(store: Store, spec: str | None = None) -> StrategyPlan:
    """The run's self-consistency plan whose samples are replayed: ``spec`` (as the run wrote it), or the only
    self-consistency spec of the run."""
    cfg = store.config()
    specs = [s["spec"] for s in cfg["strategies"] if s["spec"].partition(":")[0] == "self-consistency"]
    if spec is None:
        if len(specs) != 1:
            raise StoreError(f"{store.dir}: replay needs one self-consistency spec; the run has "
                             f"{specs or 'none'}" + ("; pick one" if specs else
                                                     " (run `thinkscale eval --strategy self-consistency ...`)"))
        spec = specs[0]
    elif spec not in specs:
        raise StoreError(f"{store.dir}: no self-consistency spec {spec!r}; the run has {specs or 'none'}")
    sweep = SweepConfig(dataset=cfg["dataset"], models=tuple(cfg["models"]), strategies=(spec,),
                        budgets=tuple(cfg["budgets"]), max_tokens=cfg["max_tokens"])
    return plan_strategy(spec, sweep)


def load_draws(store: Store, plan: StrategyPlan, model: str | None = None) -> list[StoredDraw]:
    """Every stored job of ``plan`` (self-consistency or greedy; of ``model``, when given) with its chains in sample
    order."""
    greedy = plan.name == "greedy"
    if plan.name not in ("self-consistency", "greedy"):
        raise StoreError(f"replay serves self-consistency and greedy jobs, not {plan.label}")
    jobs = store.rows("SELECT * FROM jobs WHERE strategy = ? ORDER BY model, problem_id, seed", (plan.label,))
    out = []
    for j in jobs:
        if model is not None and j["model"] != model:
            continue
        seeds = [r.seed for e in parse_trace(json.loads(j["trace"])) if isinstance(e, Generate) for r in e.requests]
        if len(seeds) != 1 or (seeds[0] is None) != greedy:
            raise StoreError(f"{store.dir}: job {j['job_id']} ({plan.label}) has {len(seeds)} generate requests; "
                             "replay needs the one request of a self-consistency (seeded) or greedy job")
        rows = store.rows("SELECT * FROM samples WHERE job_id = ? ORDER BY idx", (j["job_id"],))
        out.append(StoredDraw(j["model"], j["problem_id"], j["seed"], seeds[0], tuple(
            StoredSample(r["text"], r["answer"], bool(r["correct"]), r["completion_tokens"], r["finish_reason"],
                         r["logprob_mean"]) for r in rows), j["prompt_tokens"],
            *sampling_of(plan)))
    return out


def sampling_of(plan: StrategyPlan) -> tuple[float, float, int]:
    """(temperature, top_p, max_tokens) of a self-consistency or greedy plan's chains."""
    built = plan.build(plan.budgets[-1])
    if isinstance(built, Greedy):
        return 0.0, 1.0, built.max_tokens
    if isinstance(built, SelfConsistency):
        return built.temperature, built.top_p, built.max_tokens
    raise StoreError(f"replay serves self-consistency and greedy jobs, not {plan.label}")


def greedy_plans(store: Store) -> list[StrategyPlan]:
    """The run's greedy plans (replayable too: a greedy request has no seed and one chain)."""
    cfg = store.config()
    out = []
    for s in cfg["strategies"]:
        if s["spec"].partition(":")[0] == "greedy":
            sweep = SweepConfig(dataset=cfg["dataset"], models=tuple(cfg["models"]), strategies=(s["spec"],),
                                budgets=tuple(cfg["budgets"]), max_tokens=cfg["max_tokens"])
            out.append(plan_strategy(s["spec"], sweep))
    return out


def controller_chains(draw: StoredDraw, greedy: StoredSample | None) -> tuple[StoredSample, ...]:
    """The stored chains in the order auto's requests get them: with ``greedy`` (a greedy-first policy) the greedy
    chain first, then the draw's chains; its candidates are the first ``len(candidates)`` of these."""
    return ((greedy,) if greedy is not None else ()) + draw.samples


class ReplayBackend(BaseBackend):
    """Serves stored draws (see the module doc). ``requests`` records every request served."""

    capabilities = Capabilities(raw_prompt=False)

    def __init__(self, index: ChainIndex[tuple[StoredDraw, StoredSample]], *, fingerprint: str = "replay",
                 greedy: dict[str, StoredSample] | None = None) -> None:
        self.index = index
        self.fingerprint = fingerprint
        self.greedy = greedy or {}  # problem id -> its stored greedy chain (greedy draws have no request seed)
        self.requests: list[GenRequest] = []

    @classmethod
    def from_store(cls, store: Store, *, spec: str | None = None, model: str | None = None) -> ReplayBackend:
        """The run's self-consistency draws (``spec``, or its only one) and its greedy chains."""
        plan = sampler_plan(store, spec)
        problems = run_problems(store)
        draws = load_draws(store, plan, model)
        for g in greedy_plans(store):
            draws += load_draws(store, g, model)
        return cls.from_draws(draws, problems, fingerprint=f"replay:{store.dir}:{plan.label}")

    @classmethod
    def from_draws(cls, draws: Sequence[StoredDraw], problems: dict[str, EvalProblem], *,
                   fingerprint: str = "replay") -> ReplayBackend:
        index: ChainIndex[tuple[StoredDraw, StoredSample]] = ChainIndex()
        for d in draws:
            rid = request_id(GenRequest(messages=problems[d.problem_id].problem.messages, temperature=d.temperature,
                                        top_p=d.top_p, max_tokens=d.max_tokens, seed=d.request_seed))
            assert rid is not None
            for j, s in enumerate(d.samples):
                held = index.add(rid, j, (d, s))
                if held is not None and held[0] != d:
                    raise StoreError(f"two stored draws answer the same request (problem {d.problem_id}, seed "
                                     f"{d.request_seed}) differently")
        greedy = {d.problem_id: d.samples[0] for d in draws if d.request_seed is None and d.samples}
        return cls(index, fingerprint=fingerprint, greedy=greedy)

    def generate(self, requests: Sequence[GenRequest]) -> list[Completion]:
        check_requests(self, requests)
        out = []
        for req in requests:
            got = self._chains(req)
            samples = tuple(Sample(s.text, s.completion_tokens, s.finish_reason, None)  # type: ignore[arg-type]
                            for _, s in got)
            tokens = None if any(s.completion_tokens is None for _, s in got) else \
                sum(s.completion_tokens or 0 for _, s in got)
            self.requests.append(req)
            out.append(Completion(samples, Usage(prompt_tokens=got[0][0].prompt_tokens, cached_prompt_tokens=None,
                                                 completion_tokens=tokens, calls=1, seconds=None, flops=None)))
        return out

    def _chains(self, req: GenRequest) -> list[tuple[StoredDraw, StoredSample]]:
        got = self.index.prefix(req)
        if len(got) == req.n:
            return got
        held = self.index.stored(req)
        if not held:
            user = next((m.content for m in reversed(req.messages or ()) if m.role == "user"), req.prompt or "")
            raise ReplayMissing(
                f"replay has no stored chains for this request (seed {req.seed}, temperature {req.temperature}, "
                f"top_p {req.top_p}, max_tokens {req.max_tokens}, prompt {user[:60]!r}): only the run's "
                "self-consistency draws can be replayed")
        draw = next(iter(held.values()))[0]
        raise ReplayMissing(
            f"replay holds {len(held)} chains of problem {draw.problem_id} (seed {req.seed}); the "
            f"request asks for chains {req.first_sample}..{req.first_sample + req.n - 1}")

    def info(self) -> ModelInfo:
        return ModelInfo(name="replay", n_params=None, n_ctx=None, chat_template=None, fingerprint=self.fingerprint)
