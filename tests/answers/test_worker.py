"""The math-verify worker: a hard limit per verdict, recovery from a dead or stuck worker, several threads."""

from __future__ import annotations

import os
import signal
import threading
import time

import pytest

from thinkscale.answers import Task, Verdict, check
from thinkscale.answers.worker import BACKSTOP_GRACE_S, SymbolicChecker


def test_a_verdict_costs_milliseconds(checker):
    checker.verdict("\\frac{\\pi}{2}", "\\pi/2")
    start = time.perf_counter()
    for _ in range(10):
        assert checker.verdict("\\frac{\\pi}{2}", "\\pi/2") == "equivalent"
    assert (time.perf_counter() - start) / 10 < 0.2


def test_verdicts_from_threads(checker):
    """math-verify's own signal timeouts fail outside the main thread; here every thread gets its verdict, and a
    hostile answer in one thread does not change the others' answers."""
    pairs = [("\\frac{\\pi}{2}", "\\pi/2", "equivalent"), ("(1,2)", "(2,1)", "not_equivalent"),
             ("10^{10^{10}}", "1", "timeout"), ("2\\sqrt{3}", "\\sqrt{12}", "equivalent")] * 2
    results: dict[int, str] = {}

    def run(i: int) -> None:
        gold, pred, _ = pairs[i]
        results[i] = checker.verdict(gold, pred)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(pairs))]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert time.perf_counter() - start < 2 * checker.timeout_s + 5  # two hostile verdicts, serialised
    assert results == {i: p[2] for i, p in enumerate(pairs)}


def test_a_killed_worker_is_restarted():
    with SymbolicChecker() as c:
        assert c.verdict("1", "1.0") == "equivalent"
        pid = c.worker_pid
        assert pid is not None
        os.kill(pid, signal.SIGKILL)
        time.sleep(0.1)
        assert c.verdict("\\frac{\\pi}{2}", "\\pi/2") == "equivalent"
        assert c.restarts == 1 and c.worker_pid != pid


def test_a_stuck_worker_gives_timeout_within_the_backstop_and_is_replaced():
    """A stopped worker cannot answer at all: the caller's own deadline (limit + grace) still returns."""
    with SymbolicChecker(timeout_s=0.3) as c:
        c.start()
        pid = c.worker_pid
        assert pid is not None
        os.kill(pid, signal.SIGSTOP)
        start = time.perf_counter()
        assert c.verdict("1", "1") == "timeout"
        assert time.perf_counter() - start < 0.3 + BACKSTOP_GRACE_S + 0.5
        assert c.restarts == 1
        assert c.verdict("x+1", "1+x") == "equivalent"


def test_default_checker_serves_check():
    assert check(Task.MATH, "\\frac{\\pi}{2}", "\\pi/2") is Verdict.EQUIVALENT


def test_closed_checker_refuses_and_bad_limits_are_rejected():
    c = SymbolicChecker()
    c.close()
    with pytest.raises(RuntimeError):
        c.verdict("1", "1")
    with pytest.raises(ValueError):
        SymbolicChecker(timeout_s=0)


def test_a_cold_worker_answers_and_warms_up_on_request():
    """``warmup=False`` (``thinkscale check``): the worker serves without comparing its dozen warm-up pairs first;
    ``warm_up()`` warms the same worker later, and it keeps serving."""
    with SymbolicChecker(warmup=False) as c:
        assert c.verdict("\\frac{1}{3}", "\\int_0^1 x^2\\,dx") == "equivalent"
        pid = c.worker_pid
        c.warm_up()
        assert c.worker_pid == pid and c.warmup and c.restarts == 0
        assert c.verdict("(x+1)^2", "x^2+2x+1") == "equivalent"
        c.warm_up()  # already warm: nothing to do
        assert c.worker_pid == pid


@pytest.mark.parametrize("bad", [float("inf"), float("nan"), 1e308, -1.0, 3601.0])
def test_timeouts_outside_the_range_are_refused(bad):
    with pytest.raises(ValueError, match="timeout_s must be a number of seconds"):
        SymbolicChecker(timeout_s=bad)
