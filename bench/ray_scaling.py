"""Scaling of a sweep over Ray replicas, on a fake model with a fixed latency per call (it sleeps, so it is not
CPU-bound and a 2-core machine can host 8 replicas), and what one driver costs per job.

Scaling. A greedy sweep of ``--jobs`` GSM8K problems (one backend call per job) on the table fake behind a
``--latency`` s sleep per call, on 1, 2, 4 and 8 Ray replicas (one job in flight each) of a local cluster, and for
comparison on the local executor with as many threads. Throughput is jobs / sweep wall seconds (replica start-up
and model load excluded, as ``SweepSummary.wall_seconds`` does); efficiency at r replicas is throughput(r) /
(r x throughput(1)), and against the ideal r / latency.

Per-job costs (the sizing table of docs/scale.md). With no latency: the driver's time per job (grading, the store
write, progress) on the local executor with one thread, and on one Ray replica (the difference is Ray's scheduling
and serialization per job); the time of each store write (``Store.write_job``: one transaction); and the most jobs
per second one driver handles (4 replicas, no latency). Twice: for greedy jobs (1 sample) and for self-consistency
at 16 samples scored at budgets 1..16 (16 samples, 16 chains and 5 units written per job). Each the median of
``--repeats`` sweeps.

    .venv/bin/python bench/ray_scaling.py [--latency 0.25] [--jobs 128] [--replicas 1,2,4,8]

Writes bench/results/ray_scaling.json with the conditions (load average before and after, cores, versions).
Exit status 2 when an efficiency is below ``--target`` (0.9).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import ray

from thinkscale.backends.base import Backend, BackendProxy
from thinkscale.eval.config import SweepConfig
from thinkscale.eval.datasets import load_dataset
from thinkscale.eval.executors import LocalExecutor, RayExecutor, RayOptions
from thinkscale.eval.fake import scripted_backend
from thinkscale.eval.runner import SweepSummary, run_sweep
from thinkscale.eval.store import Store

OUT = Path(__file__).parent / "results" / "ray_scaling.json"


class FixedLatency(BackendProxy):
    """The table fake after a fixed sleep per generate call (the fake itself is instant and not thread-safe)."""

    def __init__(self, inner: Backend, seconds: float) -> None:
        super().__init__(inner)
        self.seconds = seconds
        self._lock = threading.Lock()

    def generate(self, requests: Any) -> Any:
        time.sleep(self.seconds)
        with self._lock:
            return self.inner.generate(requests)


def make_factory(table: Path, seconds: float) -> Any:
    def factory(model: str) -> Backend:
        return FixedLatency(scripted_backend(table), seconds)

    return factory


def write_table(path: Path, n: int) -> Path:
    """Every problem answered by four 12-word responses (the first right), so every job costs the same."""
    ds = load_dataset("gsm8k").subset(n, 0)
    responses = {}
    for p in ds.problems:
        ref = int(p.reference)
        responses[p.problem.messages[-1].content] = [
            f"We add the numbers and then multiply them so the answer is \\boxed{{{ref + d}}}" for d in range(4)]
    path.write_text(json.dumps({"responses": responses}))
    return path


def sweep(table: Path, n: int, strategies: list[str], budgets: list[int], out: Path, latency: float,
          executor: Any) -> SweepSummary:
    # backend "llamacpp" is only the config's label here: the factory builds the fake, and calls are not serialized
    cfg = SweepConfig(dataset="gsm8k", limit=n, models=("fake",), strategies=tuple(strategies),
                      budgets=tuple(budgets), max_tokens=64)
    s = run_sweep(cfg, out, backend_factory=make_factory(table, latency), executor=executor)
    assert s.jobs_run == s.jobs_total, s
    return s


class WriteTimer:
    """Times every ``Store.write_job`` of this process (the driver's)."""

    def __init__(self) -> None:
        self.seconds: list[float] = []
        self._orig = Store.write_job

    def __enter__(self) -> WriteTimer:
        orig, seconds = self._orig, self.seconds

        def timed(store: Store, *args: Any, **kw: Any) -> Any:
            t0 = time.perf_counter()
            try:
                return orig(store, *args, **kw)
            finally:
                seconds.append(time.perf_counter() - t0)

        Store.write_job = timed  # type: ignore[method-assign,assignment]
        return self

    def __exit__(self, *exc: object) -> None:
        Store.write_job = self._orig  # type: ignore[method-assign]


def scaling(table: Path, tmp: Path, args: argparse.Namespace) -> dict[str, Any]:
    rows: dict[str, list[dict[str, Any]]] = {"ray": [], "local_threads": []}
    for r in args.replicas:
        for kind in rows:
            ex = RayExecutor(RayOptions(replicas=r, cpus_per_replica=1)) if kind == "ray" else LocalExecutor(r)
            s = sweep(table, args.jobs, ["greedy"], [1], tmp / f"scale-{kind}-{r}", args.latency, ex)
            rows[kind].append({"replicas": r, "jobs": s.jobs_run, "wall_seconds": round(s.wall_seconds, 3),
                               "load_seconds": round(s.load_seconds, 3),
                               "jobs_per_second": s.jobs_run / s.wall_seconds})
            print(f"{kind:14s} r={r}: {s.jobs_run} jobs in {s.wall_seconds:.2f} s "
                  f"({s.jobs_run / s.wall_seconds:.2f} jobs/s)", file=sys.stderr)
    for results in rows.values():
        base = results[0]["jobs_per_second"] / results[0]["replicas"]
        for row in results:
            row["efficiency_vs_linear"] = round(row["jobs_per_second"] / (row["replicas"] * base), 4)
            row["efficiency_vs_ideal"] = round(row["jobs_per_second"] * args.latency / row["replicas"], 4)
            row["jobs_per_second"] = round(row["jobs_per_second"], 3)
    return rows


def per_job_costs(table: Path, tmp: Path, n: int, name: str, strategies: list[str], budgets: list[int],
                  repeats: int) -> dict[str, Any]:
    """The driver's cost per job with no model latency (see the module doc); each figure the median of
    ``repeats`` sweeps, since a shared machine's load moves single ones by 2x."""
    out: dict[str, Any] = {"strategies": strategies, "budgets": budgets, "jobs": n, "repeats": repeats}
    local, ray1, ray4 = [], [], []
    with WriteTimer() as w:
        for i in range(repeats):
            s = sweep(table, n, strategies, budgets, tmp / f"{name}-local-{i}", 0.0, LocalExecutor(1))
            local.append(1000 * s.wall_seconds / s.jobs_run)
    for i in range(repeats):
        s = sweep(table, n, strategies, budgets, tmp / f"{name}-ray1-{i}", 0.0, RayExecutor(RayOptions(replicas=1)))
        ray1.append(1000 * s.wall_seconds / s.jobs_run)
        s = sweep(table, n, strategies, budgets, tmp / f"{name}-ray4-{i}", 0.0,
                  RayExecutor(RayOptions(replicas=4, cpus_per_replica=1)))
        ray4.append(s.jobs_run / s.wall_seconds)
    out["local_1_thread_ms_per_job"] = {"median": round(statistics.median(local), 3),
                                        "runs": [round(x, 3) for x in local]}
    out["ray_1_replica_ms_per_job"] = {"median": round(statistics.median(ray1), 3),
                                       "runs": [round(x, 3) for x in ray1]}
    out["ray_scheduling_ms_per_job"] = round(statistics.median(ray1) - statistics.median(local), 3)
    out["driver_max_jobs_per_second_ray_4_replicas"] = {"median": round(statistics.median(ray4), 1),
                                                        "runs": [round(x, 1) for x in ray4]}
    ws = sorted(w.seconds)
    out["store_write_ms"] = {"mean": round(1000 * statistics.mean(ws), 3), "median": round(1000 * ws[len(ws) // 2], 3),
                             "p95": round(1000 * ws[int(0.95 * len(ws))], 3), "writes": len(ws)}
    out["store_writes_per_second"] = round(1 / statistics.mean(ws), 1)
    db = tmp / f"{name}-local-0" / "results.sqlite"
    size = sum(p.stat().st_size for p in db.parent.glob(db.name + "*"))  # with its WAL, if any is left
    out["store_bytes_per_job"] = round(size / n)
    print(f"{name}: {out}", file=sys.stderr)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--latency", type=float, default=0.25, help="seconds each generate call sleeps")
    ap.add_argument("--jobs", type=int, default=128, help="problems (greedy jobs) per scaling sweep")
    ap.add_argument("--replicas", type=lambda s: [int(x) for x in s.split(",")], default=[1, 2, 4, 8])
    ap.add_argument("--cost-jobs", type=int, default=200, help="problems per per-job-cost sweep")
    ap.add_argument("--repeats", type=int, default=3, help="sweeps per per-job-cost figure (the median is kept)")
    ap.add_argument("--target", type=float, default=0.9)
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args(argv)
    load_before = os.getloadavg()
    t0 = time.time()
    ray.init(num_cpus=max(*args.replicas, 4), include_dashboard=False, log_to_driver=False)
    try:
        with tempfile.TemporaryDirectory() as d:
            tmp = Path(d)
            table = write_table(tmp / "table.json", max(args.jobs, args.cost_jobs))
            rows = scaling(table, tmp, args)
            costs = {"greedy": per_job_costs(table, tmp, args.cost_jobs, "greedy", ["greedy"], [1], args.repeats),
                     "self_consistency_16": per_job_costs(table, tmp, args.cost_jobs, "sc16", ["self-consistency"],
                                                          [1, 2, 4, 8, 16], args.repeats)}
    finally:
        ray.shutdown()
    result = {
        "what": "greedy sweeps of the table fake behind a fixed sleep per call, on Ray replicas of a local cluster "
                "(one job in flight each) and on the local executor's threads; per-job driver costs with no sleep",
        "latency_seconds": args.latency, "scaling": rows, "per_job_costs": costs, "target_efficiency": args.target,
        "conditions": {"cpus": os.cpu_count(), "loadavg_before": load_before, "loadavg_after": os.getloadavg(),
                       "platform": platform.platform(), "python": platform.python_version(),
                       "ray": ray.__version__, "started_at": time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(t0)),
                       "seconds": round(time.time() - t0, 1)},
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}", file=sys.stderr)
    low = [r for r in rows["ray"] if r["efficiency_vs_linear"] < args.target]
    for r in rows["ray"]:
        print(f"ray r={r['replicas']}: {r['jobs_per_second']} jobs/s, efficiency {r['efficiency_vs_linear']:.3f} "
              f"of linear, {r['efficiency_vs_ideal']:.3f} of ideal", file=sys.stderr)
    return 2 if low else 0


if __name__ == "__main__":
    sys.exit(main())
