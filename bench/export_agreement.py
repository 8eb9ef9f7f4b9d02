"""Does a GGUF written by `thinkscale train export` say what the transformers model it came from says? Greedy tokens
of transformers (the catalog GGUF dequantized to fp32, as training loads it) against llama.cpp on an exported GGUF
and on the catalog file, up to the first near tie (top-2 logprobs within 0.3, where rounding may pick either).

    .venv/bin/python bench/export_agreement.py runs/rl/grpo-0.5b-boxed/model-0.gguf --model qwen2.5-coder-0.5b
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from thinkscale.rl.agreement import cpp_greedy, hf_greedy  # noqa: E402
from thinkscale.rl.weights import load_gguf_model  # noqa: E402

PROMPTS = ["Natalia sold clips to 48 of her friends in April, and then she sold half as many clips in May. How many "
           "clips did Natalia sell altogether in April and May?",
           "What is 17 * 23?", "Write one sentence about rain.",
           "A train travels 60 km in 1.5 hours. What is its speed?"]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("gguf", type=Path, help="an exported GGUF (thinkscale train export)")
    ap.add_argument("--model", default="qwen2.5-coder-0.5b", help="the catalog model it was trained from")
    ap.add_argument("--tokens", type=int, default=40)
    args = ap.parse_args()
    loaded = load_gguf_model(args.model)
    model = loaded.model.eval()
    hf = [hf_greedy(model, loaded.tokenizer, p, args.tokens, tie=0.3) for p in PROMPTS]
    for name, path in (("export", args.gguf), ("catalog", loaded.gguf)):
        cpp = cpp_greedy(path, PROMPTS, args.tokens)
        agree = sum(bool(h.until_tie) and c.startswith(h.until_tie) for h, c in zip(hf, cpp, strict=True))
        same = sum(c == h.text for h, c in zip(hf, cpp, strict=True))
        print(f"{name} ({path}): {agree}/{len(PROMPTS)} agree up to the first near tie, {same}/{len(PROMPTS)} "
              f"identical over {args.tokens} tokens")
    return 0


if __name__ == "__main__":
    sys.exit(main())
