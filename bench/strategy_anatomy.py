"""What the strategies of a stored run did, counted from its store: the numbers docs/results/strategies/README.md
gives beside the report's table (why self-refine, MoA and budget forcing score as they do, how PAL's programs ran).

Reads only the store (jobs' traces, samples with their grades, per-call chains); no model runs. Each section covers
every config of its strategy in the run, at every budget stored:

- self-refine: first drafts and final answers right, the critiques' verdicts (and how many "correct" verdicts were
  on a right draft), rounds run, revisions that copy the draft before them verbatim, and what stopping at the first
  verbatim repeat (``stop_at_repeat=true``) would have changed: final answers and generated tokens.
- moa: the proposers' plurality answer (normalised; the first listed wins a tie) and any proposer right, against the
  aggregator's answer; how often the vote fallback answered.
- budget-forcing: "Wait"s, answers forced at the thinking cap, and accuracy on the forced and the other problems.
- debate, rsa: per round, the population's members right, problems whose plurality is right (ties split), with
  some member right, unanimous, members too short to hold a solution; for debate, each agent's answer from one
  round to the next (right to wrong, ...); for RSA, each aggregation against the members it was shown (all right,
  mixed, all wrong; came out right; its answer one of theirs or new).
- beam, dvts, mcts, particle-filter: nodes, finished nodes (terminal with an answer), problems with some finished
  node right against the chosen node right (what the scorer's choice lost), and with no finished node at all.
- pal: samples that wrote no program (PAL takes its answer only from a program's output), programs run, their exits
  (error, timeout, no output), samples and problems with no answer.

    .venv/bin/python bench/strategy_anatomy.py runs/strategies-all-qwen0.5b \\
        --out docs/results/strategies/anatomy.json
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NamedTuple

from thinkscale.answers.extract import normalize_answer
from thinkscale.eval.metrics import selection_value
from thinkscale.eval.store import Store, StoreError, open_existing
from thinkscale.verifiers.aggregate import Selection

Section = Callable[[Store, "Config"], dict[str, Any]]

SHORT = 32  # a population member this short states an answer with no solution (RSA's 0.5B writes "\boxed{55}")


class Config(NamedTuple):
    model: str
    spec: str
    budget: int

    @property
    def strategy(self) -> str:
        return self.spec.partition(":")[0]


def _jobs(store: Store, cfg: Config) -> list[Any]:
    return store.rows("SELECT job_id, trace, completion_tokens FROM jobs WHERE model = ? AND strategy = ? "
                      "AND budget = ? ORDER BY job_id", (cfg.model, cfg.spec, cfg.budget))


def _samples(store: Store, job_id: int) -> list[Any]:
    return store.rows("SELECT idx, text, answer, correct, chosen, completion_tokens FROM samples WHERE job_id = ? "
                      "ORDER BY idx", (job_id,))


def _events(trace: str, name: str) -> list[dict[str, Any]]:
    return [e for e in json.loads(trace) if e["event"] == name]


def _key(answer: str | None) -> str | None:
    return None if answer is None else normalize_answer(answer)


def first_repeat(texts: Sequence[str]) -> int | None:
    """The index of the first revision that is a verbatim copy of the text before it (None: no such revision)."""
    return next((i for i in range(1, len(texts)) if texts[i] == texts[i - 1]), None)


def self_refine(store: Store, cfg: Config) -> dict[str, Any]:
    """Drafts are samples 0, 1, ... in order (the first draft, then each revision); the chosen one answers. Calls
    alternate: the draft is call 0, round i's critique call 2i - 1 and its revision call 2i."""
    c: Counter[str] = Counter()
    rounds: Counter[int] = Counter()
    verdicts: Counter[str] = Counter()
    for job in _jobs(store, cfg):
        samples = _samples(store, job["job_id"])
        final = next(s for s in samples if s["chosen"])
        critiques = _events(job["trace"], "critique")
        rounds[len(critiques)] += 1
        c["jobs"] += 1
        c["first_draft_right"] += samples[0]["correct"]
        c["final_right"] += final["correct"]
        c["final_right_first_wrong"] += final["correct"] and not samples[0]["correct"]
        c["final_wrong_first_right"] += samples[0]["correct"] and not final["correct"]
        for i, e in enumerate(critiques):
            verdicts[str(e.get("verdict"))] += 1
            c["verdict_correct_on_right_draft"] += e.get("verdict") == "correct" and samples[i]["correct"]
        texts = [s["text"] for s in samples]
        c["revisions"] += len(texts) - 1
        c["verbatim_revisions"] += sum(a == b for a, b in zip(texts, texts[1:], strict=False))
        c["generated_tokens"] += job["completion_tokens"]
        at = first_repeat(texts)
        if at is None:
            c["right_if_stopped_at_repeat"] += final["correct"]
            continue
        calls = store.rows("SELECT call, completion_tokens FROM chains WHERE job_id = ?", (job["job_id"],))
        c["jobs_with_a_repeat"] += 1
        c["answer_at_repeat_differs"] += samples[at]["answer"] != final["answer"]
        c["right_if_stopped_at_repeat"] += samples[at]["correct"]
        c["tokens_saved_by_stopping_at_repeat"] += job["completion_tokens"] - sum(
            r["completion_tokens"] for r in calls if r["call"] <= 2 * at)
    return {**c, "verdicts": dict(verdicts), "critiques_per_job": {str(k): v for k, v in sorted(rounds.items())}}


def plurality(keys: Sequence[str | None]) -> str | None:
    """The most frequent non-empty key, the first listed on a tie (None when no key is set)."""
    counts = Counter(k for k in keys if k is not None)
    if not counts:
        return None
    top = max(counts.values())
    return next(k for k in keys if k is not None and counts[k] == top)


def moa(store: Store, cfg: Config) -> dict[str, Any]:
    """Proposers are the candidates the aggregate event read; the aggregator's is the one it wrote (chosen)."""
    c: Counter[str] = Counter()
    for job in _jobs(store, cfg):
        samples = _samples(store, job["job_id"])
        (agg,) = _events(job["trace"], "moa_aggregate")
        proposers = [samples[i] for i in agg["read"]]
        keys = [_key(s["answer"]) for s in proposers]
        top = plurality(keys)
        c["jobs"] += 1
        c["plurality_right"] += any(s["correct"] for s, k in zip(proposers, keys, strict=True) if top and k == top)
        c["some_proposer_right"] += any(s["correct"] for s in proposers)
        c["aggregator_right"] += next(s for s in samples if s["chosen"])["correct"]
        c["fell_back_to_vote"] += bool(agg.get("fell_back"))
        c["no_aggregator"] += agg["wrote"] is None
    return dict(c)


def budget_forcing(store: Store, cfg: Config) -> dict[str, Any]:
    c: Counter[str] = Counter()
    for job in _jobs(store, cfg):
        forced = _events(job["trace"], "force_answer")
        right = next(s for s in _samples(store, job["job_id"]) if s["chosen"])["correct"]
        waits = _events(job["trace"], "wait")
        c["jobs"] += 1
        c["jobs_with_a_wait"] += bool(waits)
        c["waits"] += len(waits)
        c["max_waits_reached"] += bool(_events(job["trace"], "max_waits_reached"))
        for e in forced:
            c[f"forced_{e['reason']}"] += 1
        c["right_forced" if forced else "right_not_forced"] += right
        c["jobs_forced" if forced else "jobs_not_forced"] += 1
        c["generated_tokens"] += job["completion_tokens"]
    return dict(c)


def pal(store: Store, cfg: Config) -> dict[str, Any]:
    c: Counter[str] = Counter()
    for job in _jobs(store, cfg):
        tools = _events(job["trace"], "tool")
        samples = _samples(store, job["job_id"])
        c["jobs"] += 1
        c["programs"] += len(tools)
        c["exit_nonzero"] += sum(t["exit_code"] not in (0, None) for t in tools)
        c["timed_out"] += sum(bool(t["timed_out"]) for t in tools)
        c["killed"] += sum(t["killed_reason"] is not None for t in tools)
        c["no_stdout"] += sum(not t["stdout_bytes"] for t in tools)
        c["samples"] += len(samples)
        c["samples_right"] += sum(s["correct"] for s in samples)
        c["samples_without_program"] += len(samples) - len({t["ref"] for t in tools})
        c["samples_without_answer"] += sum(s["answer"] is None for s in samples)
        c["jobs_without_answer"] += all(s["answer"] is None for s in samples)
    return dict(c)


def plurality_value(samples: Sequence[Any]) -> float:
    """The majority vote's expected correctness over ``samples``, ties split (0 when no sample answers)."""
    return selection_value([_key(s["answer"]) for s in samples], [bool(s["correct"]) for s in samples], None,
                           Selection.MAJORITY)


def _later_rounds(trace: str, name: str) -> list[dict[str, Any]]:
    """The events of the rounds after round 0: debate notes round 0 too (``debate_round``), RSA only its aggregation
    rounds (``aggregate``)."""
    return [e for e in _events(trace, "debate_round" if name == "debate" else "aggregate")
            if name != "debate" or e["round"] > 0]


def rounds(store: Store, cfg: Config) -> dict[str, Any]:
    """Debate and RSA keep a population of N per round, stored in order (round 0's N samples, then each round's).
    Per round: members right, problems whose plurality is right (ties split), with some member right, unanimous,
    and members under ``SHORT`` generated tokens (an answer with no solution).
    Debate's agents keep their place, so each agent's answer is followed from one round to the next."""
    name = cfg.strategy
    per_round: dict[int, Counter[str]] = {}
    moves: Counter[str] = Counter()
    aggregations: Counter[str] = Counter()
    c: Counter[str] = Counter()
    for job in _jobs(store, cfg):
        samples = _samples(store, job["job_id"])
        later = _later_rounds(job["trace"], name)
        n_rounds = len(later) + 1
        n, rest = divmod(len(samples), n_rounds)
        if rest or not n:
            raise ValueError(f"job {job['job_id']} ({cfg.spec}): {len(samples)} samples do not split into "
                             f"{n_rounds} rounds")
        c["jobs"] += 1
        c["final_right"] += next(s for s in samples if s["chosen"])["correct"]
        pops = [samples[r * n:(r + 1) * n] for r in range(n_rounds)]
        for r, pop in enumerate(pops):
            rc = per_round.setdefault(r, Counter())
            rc["jobs"] += 1
            rc["members"] += n
            rc["members_right"] += sum(s["correct"] for s in pop)
            rc["plurality_right"] += plurality_value(pop)
            rc["some_member_right"] += any(s["correct"] for s in pop)
            rc["unanimous"] += len({_key(s["answer"]) for s in pop}) == 1
            rc[f"members_under_{SHORT}_tokens"] += sum((s["completion_tokens"] or 0) < SHORT for s in pop)
        if name == "rsa":
            aggregations.update(rsa_aggregations(later, pops))
        if name == "debate":
            for before, after in zip(pops, pops[1:], strict=False):
                for a, b in zip(before, after, strict=True):
                    same = _key(a["answer"]) == _key(b["answer"])
                    moves[("right" if a["correct"] else "wrong") + "_to_" + ("right" if b["correct"] else "wrong")
                          + ("" if a["correct"] or b["correct"] else "_same" if same else "_other")] += 1
    out: dict[str, Any] = {**c, "rounds": {str(r): dict(v) for r, v in sorted(per_round.items())}}
    if name == "debate":
        out["agent_moves"] = dict(sorted(moves.items()))
    if name == "rsa":
        out["aggregations"] = dict(sorted(aggregations.items()))
    return out


def rsa_aggregations(aggregates: Sequence[dict[str, Any]], pops: Sequence[Sequence[Any]]) -> Counter[str]:
    """Each RSA aggregation against the members it was shown (its round's ``aggregate`` event's indices into the
    population before): shown all right / one right and one wrong ("mixed") / all wrong, and whether it came out
    right; whether its answer is one a shown member gave, a new one, or none. With two members shown, a mixed pair
    resolved at random comes out right half the time."""
    c: Counter[str] = Counter({k: 0 for k in ("answer_among_shown", "answer_new", "no_answer")})
    for agg in aggregates:
        r = agg["round"]
        for shown_idx, new in zip(agg["members"], pops[r], strict=True):
            shown = [pops[r - 1][j] for j in shown_idx]
            right = sum(bool(s["correct"]) for s in shown)
            kind = "shown_all_right" if right == len(shown) else "shown_all_wrong" if not right else "shown_mixed"
            c[kind] += 1
            c[kind + "_came_out_right"] += bool(new["correct"])
            key = _key(new["answer"])
            c["no_answer" if key is None else "answer_among_shown" if key in {_key(s["answer"]) for s in shown}
              else "answer_new"] += 1
    return c


def tree(store: Store, cfg: Config) -> dict[str, Any]:
    """Step searches store every node after the root as a candidate (node i is sample i - 1) and the tree in their
    trace. Finished nodes are the terminal ones that end in an answer; "some finished right" against the chosen
    node's answer is what the scorer's choice lost."""
    c: Counter[str] = Counter()
    terminals: Counter[str] = Counter()
    for job in _jobs(store, cfg):
        samples = _samples(store, job["job_id"])
        (tree_event,) = _events(job["trace"], "tree")
        nodes = tree_event["nodes"][1:]
        if len(nodes) != len(samples):
            raise ValueError(f"job {job['job_id']} ({cfg.spec}): {len(nodes)} tree nodes, {len(samples)} samples")
        finished = [samples[n["index"] - 1] for n in nodes if n["terminal"] == "answer"]
        chosen = next((s for s in samples if s["chosen"]), None)
        for n in nodes:
            terminals[n["terminal"] or "open"] += 1
        c["jobs"] += 1
        c["nodes"] += len(nodes)
        c["no_finished_node"] += not finished
        c["some_finished_right"] += any(s["correct"] for s in finished)
        c["finished_plurality_right"] += plurality_value(finished)
        c["chosen_right"] += bool(chosen and chosen["correct"])
        c["chosen_finished"] += bool(chosen and nodes[chosen["idx"]]["terminal"] == "answer")
    return {**c, "nodes_by_terminal": dict(terminals)}


SECTIONS: dict[str, Section] = {"self-refine": self_refine, "moa": moa, "budget-forcing": budget_forcing,
                                "pal": pal, "debate": rounds, "rsa": rounds, "beam": tree, "dvts": tree,
                                "mcts": tree, "particle-filter": tree}


def anatomy(store: Store) -> dict[str, Any]:
    """Every config of a covered strategy, per model and budget (``jobs``: its problems so far)."""
    out: dict[str, Any] = {}
    configs = store.rows("SELECT model, strategy, budget FROM jobs GROUP BY model, strategy, budget "
                         "ORDER BY model, strategy, budget")
    for row in configs:
        cfg = Config(row["model"], row["strategy"], row["budget"])
        section = SECTIONS.get(cfg.strategy)
        if section is not None:
            out.setdefault(cfg.model, {}).setdefault(cfg.spec, {})[str(cfg.budget)] = section(store, cfg)
    return out


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("run", help="a run folder (thinkscale eval --out)")
    ap.add_argument("--out", help="write the JSON here (default: print it)")
    args = ap.parse_args(argv)
    try:
        store = open_existing(args.run, read_only=True)
    except (StoreError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    try:
        configs = anatomy(store)
    except ValueError as e:  # a job whose samples do not match its trace
        print(f"error: {args.run}: {e}", file=sys.stderr)
        return 1
    finally:
        store.close()
    if not configs:
        print(f"error: {args.run} holds no job of {', '.join(SECTIONS)}: nothing to count", file=sys.stderr)
        return 1
    result = {"command": "python bench/strategy_anatomy.py " + " ".join(sys.argv[1:] if argv is None else argv),
              "run": Path(args.run).name, "configs": configs}
    text = json.dumps(result, indent=2) + "\n"
    if args.out:
        try:
            Path(args.out).write_text(text)
        except OSError as e:
            print(f"error: cannot write --out {args.out}: {e.strerror or e}", file=sys.stderr)
            return 2
    else:
        sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
