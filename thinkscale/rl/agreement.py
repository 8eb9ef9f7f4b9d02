"""Do transformers and llama.cpp say the same thing? Greedy tokens of a transformers model (as training holds it)
against the embedded backend on a GGUF (as ``train export`` writes it): what the GGUF round-trip test and
``bench/export_agreement.py`` compare. Greedy decoding can pick either of two near-tied tokens under different
rounding, so the transformers side also reports its text up to the first near tie."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class HfGreedy:
    """transformers' greedy continuation: ``text``, each generated token's logprob (end-of-turn tokens left out),
    and ``until_tie``: the text up to the first token whose top-2 logprobs were within the tie margin."""

    text: str
    logprobs: list[float]
    until_tie: str


def hf_greedy(model: Any, tokenizer: Any, prompt: str, n: int, tie: float = 0.05) -> HfGreedy:
    """Greedy decode ``n`` tokens of ``prompt`` (one user message, the tokenizer's chat template) with transformers."""
    import torch

    ids = tokenizer.apply_chat_template([{"role": "user", "content": prompt}], add_generation_prompt=True,
                                        return_tensors="pt", return_dict=True)
    out = model.generate(**ids, max_new_tokens=n, do_sample=False, output_scores=True, return_dict_in_generate=True)
    new = out.sequences[0, ids["input_ids"].shape[1]:]
    lps = [torch.log_softmax(s[0].float(), -1) for s in out.scores]
    top2 = [torch.topk(lp, 2).values for lp in lps]
    first_tie = next((i for i, t in enumerate(top2) if float(t[0] - t[1]) < tie), len(new))
    special = set(tokenizer.all_special_ids)  # an end-of-turn token is not part of the text
    return HfGreedy(tokenizer.decode(new, skip_special_tokens=True),
                    [float(lp[t]) for lp, t in zip(lps, new, strict=True) if int(t) not in special],
                    tokenizer.decode(new[:first_tie], skip_special_tokens=True))


def cpp_greedy(path: Path, prompts: Sequence[str], n: int) -> list[str]:
    """Greedy decode ``n`` tokens of each prompt with the embedded llama.cpp backend on the GGUF at ``path``: one
    thread, deterministic (no cross-batch rounding)."""
    from thinkscale.backends.llamacpp import LlamaCppBackend
    from thinkscale.types import GenRequest, Message

    backend = LlamaCppBackend(str(path), n_ctx=1024, n_threads=1, deterministic=True)
    try:
        return [c.samples[0].text for c in backend.generate(
            [GenRequest(messages=(Message("user", p),), temperature=0.0, max_tokens=n) for p in prompts])]
    finally:
        backend.close()
