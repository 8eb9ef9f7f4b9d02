"""Sampling throughput: 8 samples x 256 new tokens from one ~200-token prompt, three ways, in one run.

(a) sequential: 8 single-sequence calls, each prefilling the prompt again (a library without batching);
(b) thinkscale: one batched GenRequest(n=8) on LlamaCppBackend (shared prefill, one decode per step for all 8);
(c) reference: a minimal direct llama.cpp multi-sequence loop (llama-cpp-python low-level API), the ceiling, on its
    own context whose settings are swept first (context size, unified or per-sequence KV cache, flash attention,
    threads, KV cache type: one factor at a time, then the best of each together); the best is the reference.

Measured 2026-12-05 on the quiet 2-core machine: every setting within 37.2-41.7 tok/s except 1 thread (28.5), so
the backend keeps its own (unified f16 KV cache, flash attention left to llama.cpp, all cores): a q8_0 KV cache
was the sweep's best by 6% in one run, less than the spread between repeats, and it changes the numerics.

tokens/s = generated tokens / wall seconds including prefill. All three ignore end-of-generation so every run
generates exactly 8 x 256 tokens, and all start from an empty KV cache.

    .venv/bin/python bench/sampling.py [--model qwen2.5-coder-0.5b] [--repeats 2]

Writes bench/results/sampling.json (keys sequential_tok_s, batched_tok_s, reference_tok_s, plus details).
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import platform
import statistics
import time
from pathlib import Path

from thinkscale.backends.llamacpp import LlamaCppBackend
from thinkscale.models import resolve
from thinkscale.types import GenRequest

N, NEW = 8, 256
PROMPT = ("You are a patient mathematics tutor. A student asks for help with the following problem, and you explain "
          "every step, checking each calculation twice before moving on, and you finish with the final answer. "
          "Problem: A farmer has 3 fields. The first field produces 120 kilograms of wheat per week, the second "
          "field produces 25 percent more than the first, and the third produces two thirds of what the first two "
          "produce together. The farmer sells the wheat at 2 dollars and 40 cents per kilogram but must pay a "
          "transport fee of 35 dollars per week for every field. After 6 weeks the farmer buys a tractor that "
          "costs 4,500 dollars. How much money does the farmer have left after buying the tractor, assuming he "
          "started with 1,200 dollars in savings and spent nothing else? Explain your reasoning carefully, step by "
          "step, and give the final answer on its own line.")


class NoEos:
    """Make every backend generate exactly NEW tokens: an end-of-generation token is treated as ordinary."""

    def __init__(self, backend: LlamaCppBackend) -> None:
        self.backend = backend
        self._orig = backend._L.llama_vocab_is_eog

    def __enter__(self) -> None:
        self.backend._L.llama_vocab_is_eog = lambda vocab, tok: False

    def __exit__(self, *exc: object) -> None:
        self.backend._L.llama_vocab_is_eog = self._orig


def run_sequential(b: LlamaCppBackend) -> tuple[int, float]:
    gen, t0 = 0, time.perf_counter()
    for j in range(N):
        b.clear_cache()  # a library without prefix caching prefills the prompt every time
        (c,) = b.generate([GenRequest(prompt=PROMPT, n=1, temperature=0.8, max_tokens=NEW, seed=j)])
        gen += c.usage.completion_tokens or 0
    return gen, time.perf_counter() - t0


def run_batched(b: LlamaCppBackend) -> tuple[int, float]:
    b.clear_cache()
    t0 = time.perf_counter()
    (c,) = b.generate([GenRequest(prompt=PROMPT, n=N, temperature=0.8, max_tokens=NEW, seed=0)])
    return c.usage.completion_tokens or 0, time.perf_counter() - t0


# Reference-loop settings tried (issue 28 item 2): one factor at a time from the bench's own context, then the best
# of each factor together. Prefill is one 192-token prompt and each decode step is 8 tokens, under every batch size
# llama.cpp would use, so n_batch/n_ubatch are held at 512. ``unified=False`` gives each sequence its own KV stream
# (n_ctx / n_seq_max cells each): attention then reads only that sequence's cells, but a prompt shared by copying
# one stream into the others is what thinkscale's prefix cache would have to do for every sample.
BASE: dict[str, object] = {"n_ctx": 4096, "unified": True, "flash_attn": "auto", "threads": 2, "kv_type": "f16"}
VARIANTS: list[dict[str, object]] = [
    {}, {"n_ctx": 2304}, {"n_ctx": 16384}, {"unified": False}, {"flash_attn": "on"}, {"flash_attn": "off"},
    {"threads": 1}, {"kv_type": "q8_0", "flash_attn": "on"}]


class RawContext:
    """A llama.cpp context on the backend's loaded model with the given settings, for the reference loop only."""

    def __init__(self, b: LlamaCppBackend, settings: dict[str, object]) -> None:
        L = b._L
        self.L, self.settings = L, settings
        p = L.llama_context_default_params()
        p.n_ctx, p.n_batch, p.n_ubatch, p.n_seq_max = int(settings["n_ctx"]), 512, 512, N  # type: ignore[call-overload]
        p.n_threads = p.n_threads_batch = int(settings["threads"])  # type: ignore[call-overload]
        p.kv_unified = bool(settings["unified"])
        p.flash_attn_type = {"auto": L.LLAMA_FLASH_ATTN_TYPE_AUTO, "on": L.LLAMA_FLASH_ATTN_TYPE_ENABLED,
                             "off": L.LLAMA_FLASH_ATTN_TYPE_DISABLED}[str(settings["flash_attn"])]
        kv = {"f16": L.GGML_TYPE_F16, "q8_0": L.GGML_TYPE_Q8_0}[str(settings["kv_type"])]
        p.type_k = p.type_v = kv
        self.ctx = L.llama_init_from_model(b._model, p)
        if not self.ctx:
            raise SystemExit(f"llama.cpp refused the reference settings {settings}")
        self.mem = L.llama_get_memory(self.ctx)

    def close(self) -> None:
        self.L.llama_free(self.ctx)


def run_reference(b: LlamaCppBackend, raw: RawContext) -> tuple[int, float]:
    """The direct loop of llama.cpp's examples/batched: prefill once into sequence 0, copy it to the other N - 1
    sequences (llama_memory_seq_cp: cell tags in a unified cache, a stream copy otherwise), then one llama_decode of
    N tokens per step, sampling each with its own seeded chain."""
    L, ctx, mem = b._L, raw.ctx, raw.mem
    L.llama_memory_clear(mem, True)
    tokens = b.tokenize(PROMPT)
    t0 = time.perf_counter()
    batch = L.llama_batch_init(max(len(tokens), N), 0, 1)
    try:
        for i, tok in enumerate(tokens):
            batch.token[i], batch.pos[i], batch.n_seq_id[i] = tok, i, 1
            batch.seq_id[i][0] = 0
            batch.logits[i] = i == len(tokens) - 1
        batch.n_tokens = len(tokens)
        if L.llama_decode(ctx, batch) != 0:
            raise RuntimeError("prefill failed")
        for s in range(1, N):
            L.llama_memory_seq_cp(mem, 0, s, -1, -1)
        samplers = []
        for s in range(N):
            ch = L.llama_sampler_chain_init(L.llama_sampler_chain_default_params())
            L.llama_sampler_chain_add(ch, L.llama_sampler_init_temp(0.8))
            L.llama_sampler_chain_add(ch, L.llama_sampler_init_dist(s))
            samplers.append(ch)
        idx = [len(tokens) - 1] * N
        pos, gen = len(tokens), 0
        buf = ctypes.create_string_buffer(64)
        for _ in range(NEW):
            batch.n_tokens = 0
            for s in range(N):
                tok = L.llama_sampler_sample(samplers[s], ctx, idx[s])
                L.llama_token_to_piece(b._vocab, tok, buf, 64, 0, False)  # detokenise, as any caller must
                gen += 1
                k = batch.n_tokens
                batch.token[k], batch.pos[k], batch.n_seq_id[k] = tok, pos, 1
                batch.seq_id[k][0] = s
                batch.logits[k] = True
                idx[s] = k
                batch.n_tokens += 1
            pos += 1
            if gen >= N * NEW:
                break
            if L.llama_decode(ctx, batch) != 0:
                raise RuntimeError("decode failed")
        for ch in samplers:
            L.llama_sampler_free(ch)
    finally:
        L.llama_batch_free(batch)
        L.llama_memory_clear(mem, True)
    return gen, time.perf_counter() - t0


def sweep_reference(b: LlamaCppBackend, repeats: int) -> tuple[dict[str, object], list[dict[str, object]]]:
    """Every VARIANTS setting, then the best value of each factor together; returns (best settings, all rows)."""
    rows: list[dict[str, object]] = []

    def measure(settings: dict[str, object]) -> float:
        raw = RawContext(b, settings)
        try:
            rates = []
            for _ in range(repeats):
                gen, sec = run_reference(b, raw)
                if gen != N * NEW:
                    raise SystemExit(f"reference {settings} generated {gen} tokens, expected {N * NEW}")
                rates.append(gen / sec)
        finally:
            raw.close()
        rate = statistics.median(rates)
        rows.append({"settings": settings, "tok_s": round(rate, 2), "runs_tok_s": [round(x, 2) for x in rates]})
        print(f"reference {settings}: {rate:6.1f} tok/s", flush=True)
        return rate

    base_rate = measure(dict(BASE))
    best_of: dict[str, tuple[float, object]] = {}
    for v in VARIANTS[1:]:
        rate = measure(BASE | v)
        for k, val in v.items():
            if rate > best_of.get(k, (base_rate, BASE[k]))[0]:
                best_of[k] = (rate, val)
    combined = BASE | {k: val for k, (_, val) in best_of.items()}
    if combined["kv_type"] != "f16":
        combined["flash_attn"] = "on"  # a quantized V cache needs flash attention
    if combined != BASE and all(combined != r["settings"] for r in rows):
        measure(combined)
    best = max(rows, key=lambda r: float(r["tok_s"]))  # type: ignore[arg-type]
    return dict(best["settings"]), rows  # type: ignore[call-overload]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="qwen2.5-coder-0.5b")
    ap.add_argument("--repeats", type=int, default=2, help="runs of each method (median reported)")
    ap.add_argument("--sweep-repeats", type=int, default=1, help="runs of each reference setting in the sweep")
    ap.add_argument("--conditions", default="", help="what else ran on the machine, recorded with the numbers")
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "sampling.json"))
    args = ap.parse_args()
    load_before = os.getloadavg()
    b = LlamaCppBackend(resolve(args.model), n_ctx=4096, n_seq_max=16)
    n_prompt = len(b.tokenize(PROMPT))
    with NoEos(b):
        run_batched(b)  # warm-up: first decodes allocate compute buffers
        best, sweep = sweep_reference(b, args.sweep_repeats)
        raw = RawContext(b, best)
        runs: dict[str, list[float]] = {"sequential": [], "batched": [], "reference": []}
        fns = {"sequential": run_sequential, "batched": run_batched,
               "reference": lambda b: run_reference(b, raw)}
        for r in range(args.repeats):
            for name, fn in fns.items():  # interleaved, so drift in machine load hits all three alike
                gen, sec = fn(b)
                if gen != N * NEW:
                    raise SystemExit(f"{name} generated {gen} tokens, expected {N * NEW}")
                runs[name].append(gen / sec)
                print(f"run {r + 1} {name:>10}: {gen} tokens in {sec:6.2f} s = {gen / sec:6.1f} tok/s", flush=True)
        raw.close()
    med = {k: statistics.median(v) for k, v in runs.items()}
    result = {
        "sequential_tok_s": round(med["sequential"], 2),
        "batched_tok_s": round(med["batched"], 2),
        "reference_tok_s": round(med["reference"], 2),
        "batched_over_sequential": round(med["batched"] / med["sequential"], 3),
        "batched_over_reference": round(med["batched"] / med["reference"], 3),
        "reference_over_sequential": round(med["reference"] / med["sequential"], 3),
        "runs_tok_s": {k: [round(x, 2) for x in v] for k, v in runs.items()},
        "reference_settings": best, "reference_sweep": sweep,
        "backend_settings": {"n_ctx": b.n_ctx, "unified": True, "flash_attn": b.flash_attn, "threads": b.n_threads,
                             "n_batch": b.n_batch},
        "model": args.model, "n_params": b.n_params, "prompt_tokens": n_prompt, "samples": N, "new_tokens": NEW,
        "threads": b.n_threads, "machine": f"{platform.machine()} {platform.processor() or ''}".strip(),
        "cpus": os.cpu_count(), "loadavg_before": load_before, "loadavg_after": os.getloadavg(),
        "conditions": args.conditions,
        "command": f"python bench/sampling.py --model {args.model} --repeats {args.repeats} "
                   f"--sweep-repeats {args.sweep_repeats}",
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: result[k] for k in list(result)[:6]}, indent=2))
    b.close()


if __name__ == "__main__":
    main()
