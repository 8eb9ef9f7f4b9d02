"""Server load test: 32 concurrent chat requests (self-consistency, 4 samples each) against the in-process server on
the smallest model, 4 of whose clients hang up part-way; then the 28 that completed, sent again one at a time.

What it checks and reports:
- every request whose client stayed gets a 200 with usage;
- cancelled work stops: each disconnected request's threads end (time from hang-up to stop), the server counts 4
  cancellations, and once the others are done the backend decodes nothing more (its counters stand still);
- aggregate throughput (completion tokens of the 28 / wall seconds) concurrent vs one at a time, and their ratio.
  The concurrent wall time includes the compute the 4 cancelled requests used before they stopped.

Exit status: 0 when everything holds, 1 when a functional check fails (an error, a request lost, work that did not
stop), 2 when only the throughput target (``--min-ratio``, 2x) is missed by some workload (each request count is
judged by its best run). Timings depend on what else runs on the
machine: the load average is recorded with them.

``--requests 8,32 --samples 1 --disconnects 0`` is the many-chats workload of issue 28: 8 single-chain chats at
once, then 32, then the 8 one at a time; ``scaling_with_requests`` is each workload's aggregate rate over the next
smaller one's (``scaling_target_met``: more clients at once never lower it).

``--max-active 0,32,16`` repeats the concurrent phase with the backend decoding at most that many samples per
step (0: no cap), and ``--max-concurrency 32,8,4`` repeats it with that many server slots (the other clients wait
in the server's queue), to find the batch size the machine decodes fastest; the sequential phase runs once.

    .venv/bin/python bench/server.py [--model smollm2-135m] [--requests 32] [--disconnects 4] [--max-tokens 64]
                                     [--max-concurrency 32,8,4]
    .venv/bin/python bench/server.py --model qwen2.5-coder-0.5b --requests 8,32 --samples 1 --disconnects 0 \
        --max-tokens 128 --out bench/results/server_chats.json

Writes bench/results/server.json. Real clients: the official openai client for the requests that complete; raw
streaming HTTP (httpx) for the ones that hang up, since they must close the connection mid-response.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import threading
import time
from pathlib import Path
from typing import Any

import httpx
from openai import OpenAI

from thinkscale.backends.llamacpp import LlamaCppBackend
from thinkscale.models import resolve
from thinkscale.prompts import MATH_SYSTEM
from thinkscale.server import ServeEngine, ServerLimits, create_app
from thinkscale.server.runner import BackgroundServer

OUT = Path(__file__).parent / "results" / "server.json"


def question(i: int) -> str:
    a, b = 17 + 7 * i, 5 + 3 * i
    return f"A shop sells {a} apples in the morning and {b} in the afternoon. How many apples does it sell in all?"


def ask(client: OpenAI, model: str, i: int, max_tokens: int) -> dict[str, Any]:
    t0 = time.perf_counter()
    r = client.chat.completions.create(model=model, max_tokens=max_tokens, seed=i,
                                       messages=[{"role": "user", "content": question(i)}])
    u = r.usage
    assert u is not None and u.completion_tokens_details is not None, "the server must always report usage"
    return {"i": i, "seconds": time.perf_counter() - t0, "content": r.choices[0].message.content,
            "finish_reason": r.choices[0].finish_reason, "completion_tokens": u.completion_tokens,
            "reasoning_tokens": u.completion_tokens_details.reasoning_tokens, "prompt_tokens": u.prompt_tokens}


def hang_up(url: str, model: str, i: int, max_tokens: int, backend: LlamaCppBackend, app: Any,
            after_tokens: int, out: dict[str, Any]) -> None:
    """Stream a request; once it is running and the batch has decoded ``after_tokens`` more sample tokens (about
    a quarter of the way through), close the connection and time how long the server takes to stop its work."""
    body = {"model": model, "max_tokens": max_tokens, "seed": i, "stream": True,
            "messages": [{"role": "user", "content": question(i)}]}
    with httpx.stream("POST", f"{url}/v1/chat/completions", json=body, timeout=600) as r:
        lines = r.iter_lines()  # keep the iterator: dropping it would close the connection at once
        rid = json.loads(next(lines).removeprefix("data: "))["id"]
        while not any(j.id == rid for j in list(app.state.jobs)):  # queued: not running yet
            time.sleep(0.01)
        start = backend.counters["sample_tokens_decoded"]
        while backend.counters["sample_tokens_decoded"] - start < after_tokens:
            time.sleep(0.01)
        running = any(j.id == rid for j in list(app.state.jobs))
        decoded = backend.counters["sample_tokens_decoded"] - start
        t0 = time.perf_counter()
    # the connection is closed: wait for the server to drop the job (its threads have ended)
    while any(j.id == rid for j in list(app.state.jobs)):
        time.sleep(0.005)
    out.update({"i": i, "id": rid, "was_running_at_hangup": running, "stop_seconds": time.perf_counter() - t0,
                "batch_tokens_decoded_while_it_ran": decoded})


def concurrent_phase(engine: ServeEngine, backend: LlamaCppBackend, args: argparse.Namespace, slots: int,
                     gone: set[int]) -> dict[str, Any]:
    """All requests at once from their own client threads; the ``gone`` ones hang up part-way."""
    n_req, model_id = args.requests, f"{args.model}:sc-{args.samples}"
    app = create_app(engine, limits=ServerLimits(max_concurrency=slots, max_queue=n_req, max_n=1))
    after_tokens = args.hang_up_after_steps * min(backend.max_active, args.samples * min(slots, n_req - len(gone)))
    done: dict[int, dict[str, Any]] = {}
    errors: dict[int, str] = {}
    cancelled: dict[int, dict[str, Any]] = {i: {} for i in gone}
    with BackgroundServer(app) as url:
        client = OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0, timeout=600)
        backend.clear_cache()
        start = dict(backend.counters)
        barrier = threading.Barrier(n_req + 1)

        def stay_client(i: int) -> None:
            barrier.wait()
            try:
                done[i] = ask(client, model_id, i, args.max_tokens)
            except Exception as e:  # noqa: BLE001 - reported, and fails the run
                errors[i] = repr(e)

        def gone_client(i: int) -> None:
            barrier.wait()
            try:
                hang_up(url, model_id, i, args.max_tokens, backend, app, after_tokens, cancelled[i])
            except Exception as e:  # noqa: BLE001
                errors[i] = repr(e)

        threads = [threading.Thread(target=gone_client if i in gone else stay_client, args=(i,))
                   for i in range(n_req)]
        for t in threads:
            t.start()
        barrier.wait()
        t0 = time.perf_counter()
        for t in threads:
            t.join()
        wall = max(d["seconds"] for d in done.values()) if done else time.perf_counter() - t0
        while app.state.admission.running:
            time.sleep(0.01)
        idle = dict(backend.counters)
        time.sleep(2.0)
        still = {k: backend.counters[k] - idle[k] for k in idle}
        metrics = httpx.get(f"{url}/metrics").text
    counters = {k: idle[k] - start[k] for k in idle}
    tokens = sum(d["completion_tokens"] for d in done.values())
    # what the completed requests account for in the batch: a sample of k tokens decodes k - 1 (its last token
    # is sampled, never decoded); the rest of what was decoded is the cancelled requests' work
    completed_decoded = tokens - len(done) * args.samples
    cancelled_count = next((float(line.split()[-1]) for line in metrics.splitlines()
                            if line.startswith('thinkscale_requests_cancelled_total{reason="disconnect"}')), 0.0)
    ok = (not errors and len(done) == n_req - len(gone) and cancelled_count == len(gone)
          and all(v == 0 for v in still.values())
          and all(c.get("was_running_at_hangup") and c.get("stop_seconds") is not None for c in cancelled.values()))
    return {
        "server_max_concurrency": slots, "completed": len(done), "disconnected": len(gone), "errors": errors,
        "wall_seconds": round(wall, 3), "completion_tokens": tokens,
        "completion_tok_per_s": round(tokens / wall, 2),
        "mean_latency_s": round(sum(d["seconds"] for d in done.values()) / max(1, len(done)), 3),
        "backend_counters": counters,
        "cancellation": {
            "hang_up_after_batch_tokens": after_tokens,
            "per_request": [cancelled[i] for i in sorted(cancelled)],
            "max_stop_seconds": round(max((c.get("stop_seconds", float("inf")) for c in cancelled.values()),
                                          default=0.0), 4),
            "server_cancelled_count": cancelled_count,
            "cancelled_tokens_decoded_estimate": counters["sample_tokens_decoded"] - completed_decoded,
            "cancelled_tokens_if_not_cancelled_at_most": len(gone) * args.samples * args.max_tokens,
            "backend_counters_change_2s_after_idle": still,
        },
        "checks_passed": ok,
        "loadavg_after": os.getloadavg(),
        "samples": [done[i] for i in sorted(done)],
    }


def sequential_phase(engine: ServeEngine, backend: LlamaCppBackend, args: argparse.Namespace,
                     stay: list[int]) -> dict[str, Any]:
    with BackgroundServer(create_app(engine)) as url:
        client = OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0, timeout=600)
        backend.clear_cache()
        start = dict(backend.counters)
        seq: dict[int, dict[str, Any]] = {}
        t0 = time.perf_counter()
        for i in stay:
            seq[i] = ask(client, f"{args.model}:sc-{args.samples}", i, args.max_tokens)
        wall = time.perf_counter() - t0
    tokens = sum(d["completion_tokens"] for d in seq.values())
    return {"wall_seconds": round(wall, 3), "completion_tokens": tokens,
            "completion_tok_per_s": round(tokens / wall, 2), "mean_latency_s": round(wall / max(1, len(seq)), 3),
            "backend_counters": {k: backend.counters[k] - start[k] for k in start},
            "loadavg_after": os.getloadavg(), "samples": [seq[i] for i in sorted(seq)]}


def target_by_requests(runs: list[dict[str, Any]], min_ratio: float) -> dict[str, bool]:
    """Per request count: whether its best concurrent run reaches ``min_ratio`` x the one-at-a-time rate."""
    best: dict[str, float] = {}
    for r in runs:
        key = str(r["requests"])
        best[key] = max(best.get(key, 0.0), r["throughput_ratio"])
    return {k: v >= min_ratio for k, v in best.items()}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="smollm2-135m")
    p.add_argument("--requests", default="32",
                   help="concurrent clients, comma-separated for several workloads (8,32: 8 at once, then 32)")
    p.add_argument("--disconnects", type=int, default=4)
    p.add_argument("--samples", type=int, default=4, help="self-consistency samples per request (sc-N)")
    p.add_argument("--max-tokens", type=int, default=64, help="tokens per chain of thought")
    p.add_argument("--max-concurrency", default=None,
                   help="server slots, comma-separated for several runs (default: --requests, all at once); "
                        "clients beyond the slots wait in the server's queue")
    p.add_argument("--max-active", default="0",
                   help="backend cap on samples decoded together (LlamaCppBackend max_active_sequences), "
                        "comma-separated for several runs; 0 = no cap (n_seq_max - 1)")
    p.add_argument("--n-ctx", type=int, default=None,
                   help="KV cells (default: enough for every request's samples at once)")
    p.add_argument("--hang-up-after-steps", type=int, default=16,
                   help="clients hang up after about this many decode steps of the running batch")
    p.add_argument("--min-ratio", type=float, default=2.0,
                   help="throughput ratio (concurrent / one at a time) the best run must reach; exit 2 if not")
    p.add_argument("--out", type=Path, default=OUT)
    args = p.parse_args()
    counts = [int(x) for x in str(args.requests).split(",")]
    n_max, n_gone = max(counts), args.disconnects
    slot_runs = [int(x) for x in str(args.max_concurrency).split(",")] if args.max_concurrency else [0]
    active_runs = [int(x) for x in str(args.max_active).split(",")]

    load_before = os.getloadavg()  # other processes on the machine skew the timings: recorded with them
    path = resolve(args.model, progress=False)
    n_ctx = args.n_ctx or n_max * (args.samples * args.max_tokens + 128)
    backend = LlamaCppBackend(path, name=args.model, n_ctx=n_ctx,
                              n_seq_max=min(256, n_max * (args.samples + 1) + 8))
    engine = ServeEngine(backend, args.model, system_prompt=MATH_SYSTEM)
    with BackgroundServer(create_app(engine)) as url:  # warm up: model pages, first-call allocations
        ask(OpenAI(base_url=f"{url}/v1", api_key="unused"), f"{args.model}:greedy", 10_000, 4)

    uncapped = backend.max_active
    runs = []
    for n_req in counts:  # each workload: n_req clients at once, the same prompts 0..n_req-1
        wargs = argparse.Namespace(**(vars(args) | {"requests": n_req}))
        gone = set(range(0, n_req, n_req // n_gone)[:n_gone]) if n_gone else set()
        for cap in active_runs:
            backend.max_active = cap or uncapped
            for slots in slot_runs:
                runs.append({"requests": n_req}
                            | concurrent_phase(engine, backend, wargs, slots or n_req, gone)
                            | {"backend_max_active": cap or uncapped})
    backend.max_active = uncapped  # one at a time, each request's samples decode together as they always do
    # the smallest workload's requests (those whose client stays) sent again one at a time
    n_seq = min(counts)
    gone = set(range(0, n_seq, n_seq // n_gone)[:n_gone]) if n_gone else set()
    stay = [i for i in range(n_seq) if i not in gone]
    sequential = sequential_phase(engine, backend, args, stay)
    backend.close()
    seq_rate = sequential["completion_tok_per_s"]
    for r in runs:
        r["throughput_ratio"] = round(r["completion_tok_per_s"] / seq_rate, 2)
        r["decode_calls_ratio"] = round(sequential["backend_counters"]["decode_calls"]
                                        / max(1, r["backend_counters"]["decode_calls"]), 2)
    best_per_count = {n: max(r["completion_tok_per_s"] for r in runs if r["requests"] == n) for n in counts}
    # more clients at once must not lower the aggregate rate (each count against the next smaller one)
    scaling = {f"{b}_over_{a}": round(best_per_count[b] / best_per_count[a], 3)
               for a, b in zip(counts, counts[1:], strict=False)}
    result = {
        "command": "python " + " ".join(sys.argv),
        "model": args.model, "model_id": f"{args.model}:sc-{args.samples}", "requests": counts,
        "sequential_requests": len(stay),
        "max_tokens_per_chain": args.max_tokens,
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "threads": backend.n_threads,
                    "n_ctx": backend.n_ctx, "n_seq_max": backend.n_seq_max, "loadavg_before": load_before},
        "concurrent": runs,
        "sequential": sequential,
        "checks_passed": all(r["checks_passed"] for r in runs),
        "throughput_target_ratio": args.min_ratio,
        # per workload (request count): its best run against one at a time; met only when every workload meets it
        "throughput_target_met_by_requests": target_by_requests(runs, args.min_ratio),
        "throughput_target_met": all(target_by_requests(runs, args.min_ratio).values()),
        "scaling_with_requests": scaling,
        "scaling_target_met": all(v >= 1.0 for v in scaling.values()),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({"sequential_tok_s": seq_rate, "sequential_wall_s": sequential["wall_seconds"],
                      "scaling_with_requests": scaling,
                      "concurrent": [{k: r[k] for k in ("requests", "server_max_concurrency", "backend_max_active",
                                                        "completed", "disconnected",
                                                        "completion_tok_per_s", "wall_seconds", "throughput_ratio",
                                                        "decode_calls_ratio", "checks_passed")}
                                     | {"max_stop_seconds": r["cancellation"]["max_stop_seconds"]} for r in runs]},
                     indent=2))
    for n, met in result["throughput_target_met_by_requests"].items():
        print(f"throughput target {args.min_ratio}x with {n} concurrent requests: {'met' if met else 'NOT met'}")
    print(f"wrote {args.out}")
    if not result["checks_passed"]:
        return 1
    return 0 if result["throughput_target_met"] else 2


if __name__ == "__main__":
    sys.exit(main())
