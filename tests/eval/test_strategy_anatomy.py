"""bench/strategy_anatomy.py on a store written by hand: every count of each section against what the jobs below
were built to hold, and bad input named."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.helpers.bench import load_bench
from thinkscale.eval.store import Store

MODEL = "m"
SR = "self-refine:max_rounds=3"


def bench():
    return load_bench("strategy_anatomy")


class Writer:
    """Jobs, samples and chains inserted straight into a run store (only the columns the script reads matter)."""

    def __init__(self, out: Path) -> None:
        self.store = Store(out)
        self.store.add_problems("gsm8k", [("p0", "math", "1", None, "?")])
        self.next_id = 1

    def job(self, strategy: str, budget: int, events: list[dict[str, Any]],
            samples: list[tuple[str, str | None, int, int]], calls: list[int] | None = None) -> None:
        """``samples``: (text, answer, correct, chosen) in order, a word a token; ``calls``: each call's completion
        tokens."""
        job_id, calls = self.next_id, calls or []
        self.next_id += 1
        with self.store.transaction() as db:
            db.execute("INSERT INTO jobs (job_id, model, strategy, problem_id, seed, budget, spec, reuse, stop_reason, "
                       "trace, completion_tokens, calls, wall_seconds, finished_at) "
                       "VALUES (?, ?, ?, 'p0', ?, ?, ?, 0, 'done', ?, ?, ?, 1.0, 0.0)",
                       (job_id, MODEL, strategy, job_id, budget, strategy, json.dumps(events), sum(calls),
                        len(calls)))
            for i, (text, answer, correct, chosen) in enumerate(samples):
                db.execute("INSERT INTO samples (job_id, idx, text, answer, correct, verdict, scores, chosen, "
                           "completion_tokens) VALUES (?, ?, ?, ?, ?, '', '[]', ?, ?)",
                           (job_id, i, text, answer, correct, chosen, len(text.split())))
            for call, tokens in enumerate(calls):
                db.execute("INSERT INTO chains (job_id, call, pos, request_key, place, text, finish_reason, "
                           "completion_tokens) VALUES (?, ?, 0, ?, 0, '', 'stop', ?)",
                           (job_id, call, f"{job_id}-{call}", tokens))


def critiques(*verdicts: str) -> list[dict[str, Any]]:
    return [{"event": "critique", "round": i + 1, "verdict": v} for i, v in enumerate(verdicts)]


def write_run(out: Path) -> None:
    w = Writer(out)
    # self-refine. Job 1: a wrong draft, a right revision, then a verbatim copy of it; the third critique says
    # correct. Stopping at the copy (sample 2) spends calls 0-4, not call 5's 3 tokens.
    w.job(SR, 3, critiques("incorrect", "incorrect", "correct"),
          [("x = 5", "5", 0, 0), ("x = 7", "7", 1, 0), ("x = 7", "7", 1, 1)], calls=[10, 4, 8, 4, 8, 3])
    # job 2: a right draft judged correct at once
    w.job(SR, 3, critiques("correct"), [("y = 7", "7", 1, 1)], calls=[12, 2])
    # job 3: a right draft copied once (the repeat answers 7), then revised to a wrong 8 that answers
    w.job(SR, 3, critiques("none", "incorrect"), [("z = 7", "7", 1, 0), ("z = 7", "7", 1, 0), ("z = 8", "8", 0, 1)],
          calls=[5, 1, 5, 1, 6])
    # MoA: the plurality "5" is wrong while one proposer is right; the aggregator is wrong
    w.job("moa:layers=1", 3, [{"event": "moa_aggregate", "model": "", "read": [0, 1, 2], "wrote": 3}],
          [("a", "6", 1, 0), ("b", "5", 0, 0), ("c", "5", 0, 0), ("agg", "5", 0, 1)])
    # a 1-1 tie that the first listed ("6", written "6.00") wins, right; the aggregator gave none and the vote did
    w.job("moa:layers=1", 3, [{"event": "moa_aggregate", "model": "", "read": [0, 1], "wrote": 2, "fell_back": True}],
          [("a", "6.00", 1, 0), ("b", "5", 0, 0), ("agg", None, 0, 1)])
    # budget forcing: two waits and an answer forced at the cap (right); a plain answer (wrong)
    bf = "budget-forcing:min_thinking_tokens=4"
    w.job(bf, 4, [{"event": "wait", "thinking_tokens": 2, "waits": 1}, {"event": "wait", "thinking_tokens": 3,
                                                                         "waits": 2},
                  {"event": "force_answer", "reason": "max_thinking_tokens", "thinking_tokens": 8}],
          [("t", "1", 1, 1)], calls=[2, 1, 5])
    w.job(bf, 4, [], [("u", "2", 0, 1)], calls=[6])
    # PAL: three samples; one wrote no program, one program failed without output, one printed the right answer
    tool = {"event": "tool", "exit_code": 0, "timed_out": False, "killed_reason": None, "stdout_bytes": 2}
    w.job("pal", 3, [{**tool, "ref": 0}, {**tool, "ref": 2, "exit_code": 1, "stdout_bytes": 0}],
          [("p", "1", 1, 1), ("prose", None, 0, 0), ("q", None, 0, 0)])
    # debate, 2 agents, 1 round: a 1-1 split (one agent right) where the wrong agent moves to the right answer
    rnd = [{"event": "debate_round", "round": 0}, {"event": "debate_round", "round": 1}]
    w.job("debate:rounds=1", 2, rnd, [("d", "5", 0, 0), ("e", "7", 1, 0), ("f " * 40, "7", 1, 1), ("g", "7", 1, 0)])
    # both wrong, and they swap their wrong answers
    w.job("debate:rounds=1", 2, rnd, [("d", "3", 0, 0), ("e", "4", 0, 0), ("f", "4", 0, 1), ("g", "3", 0, 0)])
    # RSA, population 2, 1 round: both aggregations see the mixed pair and keep the right answer, written otherwise
    # ("1.00", "1", "1.0": one answer once normalised), so the population turns unanimous on it
    w.job("rsa", 2, [{"event": "aggregate", "round": 1, "members": [[0, 1], [1, 0]]}],
          [("r", "1.00", 1, 0), ("s", "2", 0, 0), ("t", "1", 1, 1), ("u", "1.0", 1, 0)])
    # both shown wrong twice: one aggregation writes a new, right answer, the other none
    w.job("rsa", 2, [{"event": "aggregate", "round": 1, "members": [[0, 1], [1, 0]]}],
          [("v", "3", 0, 0), ("w", "4", 0, 0), ("x", "5", 1, 1), ("y", None, 0, 0)])
    # one member shown each: the right one turns into a new, wrong answer; the wrong one is kept
    w.job("rsa", 2, [{"event": "aggregate", "round": 1, "members": [[0], [1]]}],
          [("a", "7", 1, 0), ("b", "8", 0, 0), ("c", "8", 0, 1), ("d", "8", 0, 0)])
    # a step search: an open node, a right finished node and the wrong finished node the scorer chose
    node = {"kind": "step", "parent": 0, "terminal": None, "answer": None}
    w.job("beam:x=1", 4, [{"event": "tree", "nodes": [{**node, "index": 0, "parent": None},
                                                       {**node, "index": 1, "answer": "2"},
                                                       {**node, "index": 2, "terminal": "answer", "answer": "5"},
                                                       {**node, "index": 3, "terminal": "answer", "answer": "6"}]}],
          [("a", "2", 0, 0), ("b", "5", 1, 0), ("c", "6", 0, 1)])
    # a search that finished nothing and chose nothing
    w.job("beam:x=1", 4, [{"event": "tree", "nodes": [{**node, "index": 0, "parent": None},
                                                       {**node, "index": 1, "terminal": "max_steps"}]}],
          [("a", None, 0, 0)])
    # a strategy the script does not cover is left out
    w.job("greedy", 1, [], [("g", "1", 1, 1)])
    w.store.close()


def test_every_section_counts_what_the_jobs_hold(tmp_path: Path) -> None:
    run, out = tmp_path / "run", tmp_path / "a.json"
    write_run(run)
    assert bench().main([str(run), "--out", str(out)]) == 0
    data = json.loads(out.read_text())
    configs = data["configs"][MODEL]
    assert set(configs) == {SR, "moa:layers=1", "budget-forcing:min_thinking_tokens=4", "pal", "debate:rounds=1",
                            "rsa", "beam:x=1"}
    assert configs[SR]["3"] == {
        "jobs": 3, "first_draft_right": 2, "final_right": 2, "final_right_first_wrong": 1,
        "final_wrong_first_right": 1, "verdict_correct_on_right_draft": 2, "revisions": 4, "verbatim_revisions": 2,
        "generated_tokens": 37 + 14 + 18, "jobs_with_a_repeat": 2, "answer_at_repeat_differs": 1,
        "right_if_stopped_at_repeat": 3, "tokens_saved_by_stopping_at_repeat": 3 + 7,
        "verdicts": {"incorrect": 3, "correct": 2, "none": 1}, "critiques_per_job": {"1": 1, "2": 1, "3": 1}}
    assert configs["moa:layers=1"]["3"] == {"jobs": 2, "plurality_right": 1, "some_proposer_right": 2,
                                            "aggregator_right": 0, "fell_back_to_vote": 1, "no_aggregator": 0}
    assert configs["budget-forcing:min_thinking_tokens=4"]["4"] == {
        "jobs": 2, "jobs_with_a_wait": 1, "waits": 2, "max_waits_reached": 0, "forced_max_thinking_tokens": 1,
        "right_forced": 1, "jobs_forced": 1, "right_not_forced": 0, "jobs_not_forced": 1, "generated_tokens": 14}
    assert configs["pal"]["3"] == {
        "jobs": 1, "programs": 2, "exit_nonzero": 1, "timed_out": 0, "killed": 0, "no_stdout": 1, "samples": 3,
        "samples_right": 1, "samples_without_program": 1, "samples_without_answer": 2, "jobs_without_answer": 0}
    round0 = {"jobs": 2, "members": 4, "members_right": 1, "plurality_right": 0.5, "some_member_right": 1,
              "unanimous": 0, "members_under_32_tokens": 4}
    assert configs["debate:rounds=1"]["2"] == {
        "jobs": 2, "final_right": 1,
        "rounds": {"0": round0, "1": {**round0, "members_right": 2, "plurality_right": 1.0, "unanimous": 1,
                                      "members_under_32_tokens": 3}},
        "agent_moves": {"right_to_right": 1, "wrong_to_right": 1, "wrong_to_wrong_other": 2}}
    assert configs["rsa"]["2"] == {
        "jobs": 3, "final_right": 2,
        "rounds": {"0": {"jobs": 3, "members": 6, "members_right": 2, "plurality_right": 1.0, "some_member_right": 2,
                         "unanimous": 0, "members_under_32_tokens": 6},
                   "1": {"jobs": 3, "members": 6, "members_right": 3, "plurality_right": 2.0, "some_member_right": 2,
                         "unanimous": 2, "members_under_32_tokens": 6}},
        "aggregations": {"shown_mixed": 2, "shown_mixed_came_out_right": 2, "shown_all_wrong": 3,
                         "shown_all_wrong_came_out_right": 1, "shown_all_right": 1,
                         "shown_all_right_came_out_right": 0, "answer_among_shown": 3, "answer_new": 2,
                         "no_answer": 1}}
    assert configs["beam:x=1"]["4"] == {
        "jobs": 2, "nodes": 4, "no_finished_node": 1, "some_finished_right": 1, "finished_plurality_right": 0.5,
        "chosen_right": 0, "chosen_finished": 1, "nodes_by_terminal": {"open": 1, "answer": 2, "max_steps": 1}}
    assert data["command"].endswith(f"{run} --out {out}")


def test_first_repeat_and_plurality_by_hand() -> None:
    mod = bench()
    assert mod.first_repeat(["a", "b", "b", "b"]) == 2
    assert mod.first_repeat(["a", "b", "a"]) is None
    assert mod.plurality(["5", None, "6", "6", "5"]) == "5"  # a tie: the first listed
    assert mod.plurality([None, None]) is None
    rows = [{"answer": a, "correct": c} for a, c in [("5", 1), ("6", 0), ("5.0", 1), ("6", 0), ("7", 0), (None, 0)]]
    assert mod.plurality_value(rows) == 0.5  # "5" and "6" tie at two: one of the two is right
    assert mod.plurality_value(rows[:3]) == 1.0
    assert mod.plurality_value(rows[5:]) == 0.0


def test_bad_input_is_named(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    mod = bench()
    assert mod.main([str(tmp_path / "missing")]) == 2
    assert "missing is not a run folder" in capsys.readouterr().err
    w = Writer(tmp_path / "greedy-only")
    w.job("greedy", 1, [], [("g", "1", 1, 1)])
    w.store.close()
    assert mod.main([str(tmp_path / "greedy-only")]) == 1
    assert "holds no job of self-refine, moa, budget-forcing, pal, debate" in capsys.readouterr().err
    w = Writer(tmp_path / "torn")  # 3 samples cannot be 2 rounds of one population
    w.job("rsa", 2, [{"event": "aggregate", "round": 1, "members": [[0]]}], [("a", "1", 1, 0), ("b", "1", 1, 1),
                                                                            ("c", "1", 1, 0)])
    w.store.close()
    assert mod.main([str(tmp_path / "torn")]) == 1
    assert "job 1 (rsa): 3 samples do not split into 2 rounds" in capsys.readouterr().err
    run = tmp_path / "run"
    write_run(run)
    assert mod.main([str(run), "--out", str(tmp_path / "no-such-dir" / "a.json")]) == 2
    assert "cannot write --out" in capsys.readouterr().err
