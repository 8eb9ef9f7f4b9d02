"""ScriptedBackend: a deterministic fake that makes strategies testable in milliseconds.

It implements the real protocol: it honours ``n``, ``max_tokens``, ``stop`` and ``confidence_stop``, records every
request, and reports usage from a simple, documented tokenizer: one token per whitespace-separated word. Its prefix
cache mirrors the embedded backend's: a prompt's longest common word prefix with any earlier prompt counts as cached.
When the script runs out it raises ``ScriptExhausted``: a strategy that asks for more than the test planned is a bug
the test must see, never something to paper over by cycling the script. With ``seconds_per_token`` it sleeps as long
as the tokens would take, and like the embedded backend, ``close`` fails the calls in flight at once
(``BackendError``).
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from thinkscale.backends.base import BackendError, BaseBackend, Capabilities, HiddenStates, ModelInfo, check_requests
from thinkscale.types import Completion, GenRequest, Message, Sample, Scored, ScoreRequest, Usage


class ScriptExhausted(RuntimeError):
    """The fake was asked for more samples than its script holds."""


@dataclass(frozen=True)
class ScriptItem:
    text: str
    logprobs: tuple[float, ...] | None = None  # one per word; default -0.1 each when logprobs are asked


ScriptEntry = str | ScriptItem | Callable[[GenRequest, int], "str | ScriptItem"]


def words(text: str) -> list[str]:
    return text.split()


def render(messages: Sequence[Message] | None, prompt: str | None) -> str:
    """The fake's 'chat template': role-tagged lines. Deterministic and word-countable."""
    if prompt is not None:
        return prompt
    assert messages is not None
    return "\n".join(f"<{m.role}> {m.content}" for m in messages)


class ScriptedBackend(BaseBackend):
    capabilities = Capabilities(logprobs=True, score=True, tokenize=True, prefix_cache=True, continue_final=True,
                                hidden_states=True, confidence_stop=True)

    def __init__(self, script: Iterable[ScriptEntry] = (), *, n_params: int = 1_000_000,
                 score_fn: Callable[[str, str], tuple[float, ...]] | None = None,
                 seconds_per_token: float = 0.0,
                 hidden_fn: Callable[[str, str], Sequence[float]] | None = None, n_embd: int = 8) -> None:
        self._script: list[ScriptEntry] = list(script)
        self._pos = 0
        self.requests: list[GenRequest] = []
        self.score_requests: list[ScoreRequest] = []
        self.calls = 0
        self.n_params = n_params
        self._score_fn = score_fn
        self._seen_prompts: list[list[str]] = []
        self._seconds_per_token = seconds_per_token
        self._hidden_fn = hidden_fn
        self.n_embd = n_embd
        self.hidden_requests: list[ScoreRequest] = []
        self._closed = threading.Event()

    def enqueue(self, *entries: ScriptEntry) -> None:
        self._script.extend(entries)

    @property
    def remaining(self) -> int:
        return len(self._script) - self._pos

    def _next(self, req: GenRequest, j: int) -> ScriptItem:
        if self._pos >= len(self._script):
            raise ScriptExhausted(
                f"script exhausted after {self._pos} samples (request {len(self.requests)}, sample {j})")
        entry = self._script[self._pos]
        self._pos += 1
        if callable(entry):
            entry = entry(req, j)
        return entry if isinstance(entry, ScriptItem) else ScriptItem(entry)

    def _cached(self, prompt_words: list[str]) -> int:
        best = 0
        for seen in self._seen_prompts:
            k = 0
            for a, b in zip(seen, prompt_words, strict=False):
                if a != b:
                    break
                k += 1
            best = max(best, k)
        self._seen_prompts.append(prompt_words)
        # Like llama.cpp, at least the last prompt token is recomputed to get next-token logits.
        return min(best, len(prompt_words) - 1) if prompt_words else 0

    def _prompt_usage(self, text: str, completion_tokens: int) -> Usage:
        pw = words(text)
        cached = self._cached(pw)
        computed = len(pw) - cached + completion_tokens
        return Usage(prompt_tokens=len(pw), cached_prompt_tokens=cached, completion_tokens=completion_tokens,
                     calls=1, seconds=computed * self._seconds_per_token, flops=2.0 * self.n_params * computed)

    def generate(self, requests: Sequence[GenRequest]) -> list[Completion]:
        check_requests(self, requests)
        self.calls += 1
        out = []
        for req in requests:
            self.requests.append(req)
            samples = []
            for j in range(req.n):
                item = self._next(req, j)
                samples.append(_cut(item, req))
            ctoks = sum(s.completion_tokens or 0 for s in samples)
            out.append(Completion(tuple(samples), self._prompt_usage(render(req.messages, req.prompt), ctoks)))
        if self._seconds_per_token and self._closed.wait(sum((c.usage.seconds or 0.0) for c in out)):
            raise BackendError("the backend was closed while generating")
        return out

    def close(self) -> None:
        self._closed.set()

    def score(self, requests: Sequence[ScoreRequest]) -> list[Scored]:
        if self._score_fn is None:
            raise NotImplementedError("ScriptedBackend was built without score_fn=")
        out = []
        for r in requests:
            self.score_requests.append(r)
            prompt = render(r.messages, r.prompt)
            lps = tuple(self._score_fn(prompt, r.continuation))
            toks = tuple(words(r.continuation))
            if len(lps) != len(toks):
                raise ValueError(f"score_fn returned {len(lps)} logprobs for {len(toks)} continuation words")
            pw = words(prompt)
            out.append(Scored(lps, toks, Usage(prompt_tokens=len(pw) + len(toks),
                                              cached_prompt_tokens=self._cached(pw + list(toks)),
                                              completion_tokens=0, calls=1, seconds=0.0,
                                              flops=2.0 * self.n_params * (len(pw) + len(toks)))))
        return out

    def hidden_states(self, requests: Sequence[ScoreRequest]) -> HiddenStates:
        """One vector per request: ``hidden_fn(prompt, continuation)`` when given, else ``n_embd`` numbers in
        [-1, 1) drawn from a sha256 of the rendered prompt and continuation (same text, same vector). Usage is
        counted like ``score``: the prompt's and the continuation's words."""
        out = np.empty((len(requests), self.n_embd), dtype=np.float32)
        usage = Usage.zero()
        for i, r in enumerate(requests):
            self.hidden_requests.append(r)
            prompt = render(r.messages, r.prompt)
            if self._hidden_fn is not None:
                vec = np.asarray(self._hidden_fn(prompt, r.continuation), dtype=np.float32)
                if vec.shape != (self.n_embd,):
                    raise ValueError(f"hidden_fn returned shape {vec.shape}, expected ({self.n_embd},)")
            else:
                seed = int.from_bytes(hashlib.sha256(f"{prompt}\x00{r.continuation}".encode()).digest()[:8], "big")
                vec = np.random.default_rng(seed).uniform(-1.0, 1.0, self.n_embd).astype(np.float32)
            out[i] = vec
            tw = words(prompt) + words(r.continuation)
            usage = usage + Usage(prompt_tokens=len(tw), cached_prompt_tokens=self._cached(tw), completion_tokens=0,
                                  calls=1, seconds=0.0, flops=2.0 * self.n_params * len(tw))
        return HiddenStates(out, usage)

    def tokenize(self, text: str) -> list[int]:
        return [hash(w) & 0xFFFF for w in words(text)]

    def info(self) -> ModelInfo:
        return ModelInfo(name="scripted", n_params=self.n_params, n_ctx=None, chat_template=None,
                         fingerprint=f"scripted:{self.n_params}")


def _cut(item: ScriptItem, req: GenRequest) -> Sample:
    """Apply stop strings and max_tokens to a scripted text, as a real backend would."""
    text, finish = item.text, "stop"
    hits = [text.find(s) for s in req.stop if s in text]
    if hits:
        text = text[: min(hits)]
    w = words(text)
    if len(w) > req.max_tokens:
        w = w[: req.max_tokens]
        text = " ".join(w)
        finish = "length"
    lps = None
    if req.logprobs:
        lps = item.logprobs[: len(w)] if item.logprobs is not None else tuple(-0.1 for _ in w)
        if len(lps) != len(w):
            raise ValueError(f"script item has {len(item.logprobs or ())} logprobs for {len(w)} words")
        at = req.confidence_stop.stops(lps) if req.confidence_stop is not None else None
        if at is not None:  # the words after the stop were never generated
            w, lps, finish = w[:at], lps[:at], "low_confidence"
            text = " ".join(w)
    return Sample(text=text, completion_tokens=len(w), finish_reason=finish, logprobs=lps)  # type: ignore[arg-type]
