"""Embedded llama.cpp backend (llama-cpp-python's low-level API): the default, and built for speed.

How it is fast:
- **One prefill, N samples.** A request's prompt is computed once into a prompt sequence; each of its ``n`` samples
  gets a copy of that KV (``llama_memory_seq_cp`` shares the cells, it copies nothing) and samples its first
  token from the prompt's last logits. Then all active samples, of all requests in the call, decode together:
  one ``llama_decode`` per step with one token per sequence (llama.cpp ``examples/batched``, ``examples/parallel``).
- **Prefix reuse.** Every sequence that has been computed stays in the unified KV cache as an idle entry, with its
  exact token list. A new prompt is matched against all of them; the longest common token prefix is copied and only
  the rest is computed (a search tree's next step, a revision round, P(yes) after the solution). Idle entries are
  evicted least-recently-used first when sequence ids or KV cells run short, so the cache is bounded by ``n_ctx``;
  an entry others were copied from goes only after them (until then its cells are not freed).
- **Admission control.** Samples are admitted while their worst case (``max_tokens`` cells each) fits in the
  context; the rest wait and start as others finish, so ``n * max_tokens`` may exceed ``n_ctx``.

Determinism. llama.cpp's numbers depend on how tokens are batched (a matmul over 8 rows is not bit-identical to one
over 1), so concurrent calls that share decode steps, or a prompt continued from a prefix another call computed,
can change a greedy chain. ``deterministic=True`` makes a call's output a function of the call alone: calls run one
at a time and each starts from an empty KV cache (no prefix reuse across calls; within a call, as usual). It costs
the cross-call batching and prefix reuse (``bench/determinism.py`` measures it).

Sampling runs llama.cpp's own sampler chain per sequence (top-k -> top-p -> min-p -> temperature -> seeded dist, or
greedy at temperature 0). Reported logprobs are the raw model log-probabilities (temperature 1, no filtering) of
the sampled tokens. Token counts are the tokens this backend actually sampled and computed; nothing is estimated.
"""

from __future__ import annotations

import codecs
import contextlib
import ctypes
import hashlib
import itertools
import logging
import os
import threading
import time
from collections import deque
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from thinkscale.backends.base import (
    BackendError,
    BaseBackend,
    Cancelled,
    Capabilities,
    HiddenStates,
    ModelInfo,
    check_requests,
)
from thinkscale.backends.chat_template import ChatTemplate
from thinkscale.backends.fair_lock import FairLock
from thinkscale.types import Completion, GenRequest, Message, Sample, Scored, ScoreRequest, Usage

log = logging.getLogger(__name__)

_native: dict[str, object] = {}
# Requests whose last tokens decode together in one hidden_states() batch (each holds a sequence id meanwhile).
_HIDDEN_GROUP = 16


def _llama():  # lazy: importing thinkscale must not load the native library
    import llama_cpp

    if "log_callback" not in _native:
        # llama.cpp logs to stderr by default; route it to logging: GGML_LOG_LEVEL_ERROR (4) stays visible, the rest
        # (info, and warnings such as "n_ctx_seq > n_ctx_train", moot for our short sequences) is debug.
        @llama_cpp.llama_log_callback
        def _log(level: int, text: bytes, user_data: ctypes.c_void_p) -> None:
            log.log(logging.ERROR if level == 4 else logging.DEBUG, "%s", text.decode("utf-8", "replace").rstrip())

        _native["log_callback"] = _log  # keep a reference: C holds only the function pointer
        llama_cpp.llama_log_set(_log, ctypes.c_void_p(0))
        llama_cpp.llama_backend_init()
    return llama_cpp


def quantize_model(src: str | os.PathLike[str], out: str | os.PathLike[str], ftype: int, *, threads: int = 0) -> None:
    """llama.cpp's ``llama_model_quantize``: the GGUF ``src`` (f32/f16/q8_0) written to ``out`` as llama_ftype
    ``ftype`` (e.g. 15 = Q4_K_M). ``threads`` 0 = every core."""
    L = _llama()
    params = L.llama_model_quantize_default_params()
    params.nthread = threads
    params.ftype = ftype
    rc = L.llama_model_quantize(os.fsencode(src), os.fsencode(out), ctypes.byref(params))
    if rc != 0:
        raise BackendError(f"llama_model_quantize failed (code {rc}) on {src} -> {out} (ftype {ftype})")


def _default_threads() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - non-Linux
        return max(1, os.cpu_count() or 1)


def common_prefix_len(a: Sequence[int] | np.ndarray, b: Sequence[int] | np.ndarray) -> int:
    n = min(len(a), len(b))
    if n == 0:
        return 0
    x = np.asarray(a[:n]) != np.asarray(b[:n])
    i = int(np.argmax(x))
    return n if not x[i] else i


@dataclass(eq=False)
class _KvSeq:
    """A sequence id in the KV cache and exactly the tokens whose KV it holds (positions 0..len-1).

    A sequence copied from another (``parent``) shares its first ``base`` cells with it: llama.cpp tags those cells
    with both ids and frees a cell only when no id holds it. So a sequence's own cells (``exclusive``) are freed by
    dropping it only while nothing was copied from it (``children``): eviction takes such leaves only, and dropping
    a parent otherwise hands the cells its children still hold over to them."""

    seq_id: int
    tokens: list[int]
    exclusive: int  # cells not shared with the parent (for admission estimates; a running sample: its reserve)
    pinned: int = 0  # > 0 while a request is using it; only unpinned (idle) sequences are evicted
    last_used: int = 0
    parent: _KvSeq | None = field(default=None, repr=False)
    base: int = 0  # leading cells shared with the parent
    children: list[_KvSeq] = field(default_factory=list, repr=False)


@dataclass(eq=False)
class _Call:
    """One generate() call: its caller waits on ``done``."""

    cancel: threading.Event | None = None
    remaining: int = 0
    jobs: list[_Job] = field(default_factory=list)
    done: threading.Event = field(default_factory=threading.Event)
    error: Exception | None = None


@dataclass(eq=False)
class _Job:
    index: int
    req: GenRequest
    prompt: list[int]
    call: _Call
    cached: int = 0
    seconds: float = 0.0  # wall time attributed to this request
    finished: bool = False
    prompt_seq: _KvSeq | None = None
    started: int = 0  # samples started so far
    computed: int = 0  # tokens this job submitted to llama_decode
    samples: list[Sample | None] = field(default_factory=list)


@dataclass(eq=False)
class _Active:
    job: _Job
    j: int
    kv: _KvSeq
    sampler: int
    pending: int = -1  # token sampled but not yet decoded
    generated: int = 0
    text: str = ""
    decoder: codecs.IncrementalDecoder = field(default_factory=lambda: codecs.getincrementaldecoder("utf-8")("replace"))
    logprobs: list[float] | None = None
    token_ids: list[int] = field(default_factory=list)
    window_logprob: float = 0.0  # sum of the last ConfidenceStop.window logprobs (when the request sets one)


class LlamaCppBackend(BaseBackend):
    """Embedded llama.cpp. ``model`` is a GGUF path (use ``thinkscale.models.resolve`` for catalog names)."""

    capabilities = Capabilities(logprobs=True, score=True, tokenize=True, prefix_cache=True, continue_final=True,
                                hidden_states=True, confidence_stop=True)

    def __init__(self, model: str | os.PathLike[str], *, n_ctx: int = 16384, n_threads: int | None = None,
                 n_batch: int = 512, n_seq_max: int = 64, chat_template: str | None = None,
                 flash_attn: bool | None = None, max_active_sequences: int | None = None,
                 name: str | None = None, deterministic: bool = False) -> None:
        path = Path(model)
        if not path.is_file():
            raise BackendError(f"model file not found: {path}")
        if n_ctx < 64:
            raise ValueError(f"n_ctx must be >= 64, got {n_ctx}")
        if not 1 <= n_seq_max <= 256:
            raise ValueError(f"n_seq_max must be in 1..256 (llama.cpp's limit), got {n_seq_max}")
        if n_batch < 1:
            raise ValueError(f"n_batch must be >= 1, got {n_batch}")
        if max_active_sequences is not None and not 1 <= max_active_sequences <= n_seq_max - 1:
            raise ValueError(f"max_active_sequences must be in 1..n_seq_max-1 ({n_seq_max - 1}; one sequence id is "
                             f"kept for prompts), got {max_active_sequences}")
        L = _llama()
        self._L = L
        self.path = path
        self.name = name or path.stem
        self.n_threads = n_threads or _default_threads()
        mparams = L.llama_model_default_params()
        self._model = L.llama_model_load_from_file(str(path).encode(), mparams)
        if not self._model:
            raise BackendError(f"llama.cpp could not load {path}: is it a valid GGUF file?")
        cparams = L.llama_context_default_params()
        cparams.n_ctx = n_ctx
        cparams.n_batch = n_batch
        cparams.n_ubatch = n_batch
        cparams.n_seq_max = n_seq_max
        cparams.n_threads = self.n_threads
        cparams.n_threads_batch = self.n_threads
        cparams.kv_unified = True  # one cell pool for all sequences: needed to share a prefix between them
        cparams.swa_full = True  # sliding-window models keep full KV so cached prefixes stay valid
        cparams.no_perf = False
        if flash_attn is not None:
            cparams.flash_attn_type = (L.LLAMA_FLASH_ATTN_TYPE_ENABLED if flash_attn
                                       else L.LLAMA_FLASH_ATTN_TYPE_DISABLED)
        self._ctx = L.llama_init_from_model(self._model, cparams)
        if not self._ctx:
            L.llama_model_free(self._model)
            raise BackendError(f"llama.cpp could not create a context (n_ctx={n_ctx}) for {path}")
        self._mem = L.llama_get_memory(self._ctx)
        self._vocab = L.llama_model_get_vocab(self._model)
        self.n_vocab = L.llama_vocab_n_tokens(self._vocab)
        self.n_ctx = L.llama_n_ctx(self._ctx)
        self.n_batch = n_batch
        self.n_seq_max = n_seq_max
        self.flash_attn = {None: "auto", True: "on", False: "off"}[flash_attn]  # as asked; llama.cpp decides "auto"
        # Samples decoded together per step. More is not always faster: with the unified KV cache every query token
        # walks the mask over all used cells, so a step costs ~ (tokens in the step) x (cells in use); past the
        # batch size where the matmuls stop gaining (4-32 sequences on a laptop CPU) more concurrency only adds
        # attention work. Later work waits (its prompt is not computed yet) until a running sample finishes.
        self.max_active = max_active_sequences or n_seq_max - 1
        self.peak_active = 0  # most samples decoded in one step so far (tests and benchmarks may reset it)
        self.n_params = int(L.llama_model_n_params(self._model))
        self.n_ctx_train = int(L.llama_model_n_ctx_train(self._model))
        self.n_embd = int(L.llama_model_n_embd_out(self._model))  # size of a hidden_states() row
        self._batch = L.llama_batch_init(n_batch, 0, 1)
        # first come first served: the engine asks for the lock again after every step, and a caller that wants to
        # submit, score or cancel gets it before the engine's next step, not whenever it wins it back from the engine
        self._lock = FairLock()
        self._cv = threading.Condition(self._lock)  # type: ignore[arg-type]  # RLock's protocol (fair_lock.py)
        self.deterministic = deterministic
        self._call_lock = threading.Lock()  # held for a whole call in deterministic mode
        self._pending: deque[_Job] = deque()  # submitted, prompt not computed yet
        self._waiting: deque[_Job] = deque()  # prompt computed, some samples not started (at most one job)
        self._active: list[_Active] = []  # samples being decoded
        self._engine: threading.Thread | None = None
        self._closed = False
        self._lora: Any = None  # the llama_adapter_lora applied by set_lora (freed with the model otherwise)
        self._seqs: dict[int, _KvSeq] = {}
        self._free_ids = list(range(n_seq_max - 1, -1, -1))
        self._clock = itertools.count(1)
        self._piece_cache: dict[int, bytes] = {}
        self._add_bos = bool(L.llama_vocab_get_add_bos(self._vocab))
        self._bos_text = self._token_text(L.llama_vocab_bos(self._vocab))
        self._eos_text = self._token_text(L.llama_vocab_eos(self._vocab))
        src = chat_template if chat_template is not None else self._metadata_template()
        self._template = ChatTemplate(src, bos_token=self._bos_text, eos_token=self._eos_text) if src else None
        if self._template is None:
            self.capabilities = Capabilities(logprobs=True, score=True, tokenize=True, prefix_cache=True,
                                             chat=False, continue_final=False, hidden_states=True,
                                             confidence_stop=True)
        #: What this backend really computed, for tests and benchmarks (llama_decode inputs, not estimates).
        self.counters = {"decode_calls": 0, "tokens_decoded": 0, "prompt_tokens_decoded": 0,
                         "sample_tokens_decoded": 0, "prompt_tokens_reused": 0, "evictions": 0,
                         "hidden_states": 0}
        with open(path, "rb") as f:
            head = f.read(1 << 20)
        self._fingerprint = f"llamacpp:{hashlib.sha256(head).hexdigest()[:16]}:{path.stat().st_size}"

    # ------------------------------------------------------------------ model facts, text <-> tokens

    def _metadata_template(self) -> str | None:
        raw = self._L.llama_model_chat_template(self._model, None)
        return raw.decode("utf-8") if raw else None

    def _token_text(self, token: int) -> str:
        if token < 0:
            return ""
        raw = self._L.llama_vocab_get_text(self._vocab, token)
        return raw.decode("utf-8", "replace") if raw else ""

    def native_counters(self) -> dict[str, int]:
        """llama.cpp's own count of evaluated tokens (prompt-style batches and single-token batches)."""
        self._L.llama_synchronize(self._ctx)
        data = self._L.llama_perf_context(self._ctx)
        return {"n_p_eval": int(data.n_p_eval), "n_eval": int(data.n_eval)}

    def info(self) -> ModelInfo:
        return ModelInfo(name=self.name, n_params=self.n_params, n_ctx=self.n_ctx,
                         chat_template=self._template.source if self._template else None,
                         fingerprint=self._fingerprint)

    def tokenize(self, text: str, *, special: bool = True) -> list[int]:
        """Tokens of ``text`` as the model reads a prompt (BOS added when the model wants one)."""
        add_bos = self._add_bos and not (self._bos_text and text.startswith(self._bos_text))
        return self._tokenize(text, add_special=add_bos, parse_special=special)

    def _tokenize(self, text: str, *, add_special: bool, parse_special: bool) -> list[int]:
        L = self._L
        data = text.encode("utf-8")
        cap = len(data) + 8
        buf = (L.llama_token * cap)()
        n = L.llama_tokenize(self._vocab, data, len(data), buf, cap, add_special, parse_special)
        if n < 0:
            cap = -n
            buf = (L.llama_token * cap)()
            n = L.llama_tokenize(self._vocab, data, len(data), buf, cap, add_special, parse_special)
        if n < 0:
            raise BackendError(f"llama.cpp failed to tokenize {len(data)} bytes")
        return list(buf[:n])

    def _piece(self, token: int) -> bytes:
        piece = self._piece_cache.get(token)
        if piece is None:
            buf = ctypes.create_string_buffer(64)
            n = self._L.llama_token_to_piece(self._vocab, token, buf, 64, 0, False)
            if n < 0:
                buf = ctypes.create_string_buffer(-n)
                n = self._L.llama_token_to_piece(self._vocab, token, buf, -n, 0, False)
            piece = buf.raw[:n]
            self._piece_cache[token] = piece
        return piece

    def detokenize(self, tokens: Sequence[int]) -> str:
        return b"".join(self._piece(t) for t in tokens).decode("utf-8", "replace")

    def render(self, messages: Sequence[Message] | None, prompt: str | None, *, continue_final: bool = False) -> str:
        if prompt is not None:
            return prompt
        if self._template is None:
            raise BackendError(f"{self.name} has no chat template in its GGUF metadata: send a raw prompt, "
                               "or pass chat_template=")
        assert messages is not None
        return self._template.render(messages, continue_final=continue_final)

    # ------------------------------------------------------------------ KV cache bookkeeping

    def _estimated_cells(self) -> int:
        return sum(s.exclusive for s in self._seqs.values())

    def _evict_one(self, *, for_id: bool = False) -> bool:
        """Drop the least recently used idle sequence that nothing was copied from (dropping one that has copies
        would free none of the cells they share with it). ``for_id``: a sequence id is what is short, so when every
        idle sequence has copies, the least recently used of those goes (its copies keep the cells they share):
        a search's or a particle's steps leave a chain of idle ancestors above each active leaf, which once used up
        all ``n_seq_max`` ids ("all sequences are busy") in a two-worker particle-filter sweep."""
        idle = [s for s in self._seqs.values() if not s.pinned and not s.children]
        if not idle and for_id:
            idle = [s for s in self._seqs.values() if not s.pinned]
        if not idle:
            return False
        victim = min(idle, key=lambda s: s.last_used)
        self._drop(victim)
        self.counters["evictions"] += 1
        return True

    def _drop(self, s: _KvSeq) -> None:
        self._L.llama_memory_seq_rm(self._mem, s.seq_id, -1, -1)
        del self._seqs[s.seq_id]
        self._free_ids.append(s.seq_id)
        for c in s.children:  # the cells c shares with s stay in the cache: c holds them now (with its siblings:
            c.exclusive += max(0, c.base - s.base)  # then each counts them, an overestimate that only waits longer)
            c.base = min(c.base, s.base)
            c.parent = s.parent if c.base else None
            if c.parent is not None:
                c.parent.children.append(c)
        if s.parent is not None:
            s.parent.children.remove(s)
        s.children = []

    def _new_seq(self, source: _KvSeq | None, length: int) -> _KvSeq:
        """A fresh pinned sequence holding ``source``'s first ``length`` tokens (shared cells, nothing computed)."""
        if source is not None:
            source.pinned += 1  # keep it from being evicted while we make room
        try:
            while not self._free_ids:
                if not self._evict_one(for_id=True):
                    raise BackendError(f"all {self.n_seq_max} sequences are busy")
        finally:
            if source is not None:
                source.pinned -= 1
        sid = self._free_ids.pop()
        self._L.llama_memory_seq_rm(self._mem, sid, -1, -1)
        tokens: list[int] = []
        if source is not None and length > 0:
            self._L.llama_memory_seq_cp(self._mem, source.seq_id, sid, 0, length)
            tokens = source.tokens[:length]
            source.last_used = next(self._clock)
        s = _KvSeq(sid, tokens, exclusive=0, pinned=1, last_used=next(self._clock))
        if tokens:
            assert source is not None
            s.parent, s.base = source, len(tokens)
            source.children.append(s)
        self._seqs[sid] = s
        return s

    def _best_prefix(self, tokens: Sequence[int]) -> tuple[_KvSeq | None, int]:
        best, best_len = None, 0
        arr = np.asarray(tokens)
        for s in self._seqs.values():
            if s.tokens and s.tokens[0] == tokens[0]:
                k = common_prefix_len(s.tokens, arr)
                if k > best_len:
                    best, best_len = s, k
        return best, best_len

    def _make_room(self, cells: int) -> bool:
        while self._estimated_cells() + cells > self.n_ctx:
            if not self._evict_one():
                return False
        return True

    def _decode(self, entries: list[tuple[int, int, int, bool]]) -> None:
        """Decode (token, pos, seq_id, want_logits) entries in one llama_decode; evict idle KV on a full cache."""
        L, b = self._L, self._batch
        for i, (tok, pos, sid, want) in enumerate(entries):
            b.token[i] = tok
            b.pos[i] = pos
            b.n_seq_id[i] = 1
            b.seq_id[i][0] = sid
            b.logits[i] = want
        b.n_tokens = len(entries)
        while True:
            rc = L.llama_decode(self._ctx, b)
            if rc == 0:
                break
            if rc == 1 and self._evict_one():
                continue
            raise BackendError(f"llama_decode failed (code {rc}) with {len(entries)} tokens; "
                               f"the context (n_ctx={self.n_ctx}) may be too small for this batch")
        self.counters["decode_calls"] += 1
        self.counters["tokens_decoded"] += len(entries)

    def _prefill(self, work: list[tuple[_KvSeq, list[int], bool]]) -> dict[int, int]:
        """Compute ``tokens`` into each sequence, packing several sequences into each n_batch chunk.

        Returns, for sequences that want logits of their last token, the batch index of that token in the
        final chunk that contained it (valid until the next decode)."""
        flat = [(s, tok, want and i == len(toks) - 1) for s, toks, want in work for i, tok in enumerate(toks)]
        out: dict[int, int] = {}
        for start in range(0, len(flat), self.n_batch):
            chunk = flat[start:start + self.n_batch]
            entries = []
            for i, (s, tok, want) in enumerate(chunk):
                entries.append((tok, len(s.tokens), s.seq_id, want))
                s.tokens.append(tok)
                s.exclusive += 1
                if want:
                    out[s.seq_id] = i
            self._decode(entries)
            self.counters["prompt_tokens_decoded"] += len(entries)
        return out

    # ------------------------------------------------------------------ sampling

    def _make_sampler(self, req: GenRequest, j: int) -> int:
        L = self._L
        chain = L.llama_sampler_chain_init(L.llama_sampler_chain_default_params())
        if req.temperature == 0:
            L.llama_sampler_chain_add(chain, L.llama_sampler_init_greedy())
        else:
            if req.top_k > 0:
                L.llama_sampler_chain_add(chain, L.llama_sampler_init_top_k(req.top_k))
            if req.top_p < 1:
                L.llama_sampler_chain_add(chain, L.llama_sampler_init_top_p(req.top_p, 1))
            if req.min_p > 0:
                L.llama_sampler_chain_add(chain, L.llama_sampler_init_min_p(req.min_p, 1))
            L.llama_sampler_chain_add(chain, L.llama_sampler_init_temp(req.temperature))
            seed = req.sample_seed(j)
            L.llama_sampler_chain_add(chain, L.llama_sampler_init_dist(
                L.LLAMA_DEFAULT_SEED if seed is None else seed))
        return chain

    def _logprob(self, idx: int, token: int) -> float:
        row = np.ctypeslib.as_array(self._L.llama_get_logits_ith(self._ctx, idx), shape=(self.n_vocab,))
        m = float(row.max())
        return float(row[token] - m - np.log(np.exp(row - m).sum()))

    def _accept(self, a: _Active, idx: int) -> bool:
        """Sample the next token of ``a`` from batch index ``idx``; return True when the sample is finished."""
        L = self._L
        tok = L.llama_sampler_sample(a.sampler, self._ctx, idx)
        a.generated += 1
        a.token_ids.append(tok)
        if a.logprobs is not None:
            a.logprobs.append(self._logprob(idx, tok))
        req = a.job.req
        if L.llama_vocab_is_eog(self._vocab, tok):
            return self._finish(a, "stop")
        before = len(a.text)
        a.text += a.decoder.decode(self._piece(tok))
        if req.stop:
            lo = max(0, before - max(len(s) for s in req.stop) + 1)
            hits = [i for i in (a.text.find(s, lo) for s in req.stop) if i >= 0]
            if hits:
                a.text = a.text[: min(hits)]
                return self._finish(a, "stop")
        cs = req.confidence_stop
        if cs is not None and a.logprobs is not None:  # the online form of ConfidenceStop.stops, one token at a time
            a.window_logprob, stop = cs.step(a.window_logprob, a.logprobs)
            if stop:
                a.text += a.decoder.decode(b"", final=True)
                return self._finish(a, "low_confidence")
        if a.generated >= req.max_tokens:
            a.text += a.decoder.decode(b"", final=True)
            return self._finish(a, "length")
        a.pending = tok
        return False

    def _finish(self, a: _Active, reason: str) -> bool:
        a.job.samples[a.j] = Sample(text=a.text, completion_tokens=a.generated, finish_reason=reason,  # type: ignore[arg-type]
                                    logprobs=tuple(a.logprobs) if a.logprobs is not None else None,
                                    token_ids=tuple(a.token_ids))
        self._L.llama_sampler_free(a.sampler)
        a.sampler = 0
        a.kv.exclusive = len(a.kv.tokens) - a.kv.base  # the reserve becomes what it holds beyond the prompt
        a.kv.pinned -= 1  # stays cached (idle) for prefix reuse
        a.kv.last_used = next(self._clock)
        return True

    # ------------------------------------------------------------------ generate

    def _job(self, i: int, req: GenRequest, call: _Call) -> _Job:
        text = self.render(req.messages, req.prompt, continue_final=req.continue_final)
        prompt = self.tokenize(text)
        if not prompt:
            raise ValueError(f"requests[{i}] renders to an empty prompt")
        limit = min(self.n_ctx, self.n_ctx_train)
        if len(prompt) + req.max_tokens > limit:
            raise ValueError(f"requests[{i}]: prompt ({len(prompt)} tokens) + max_tokens ({req.max_tokens}) "
                             f"exceeds the {'context n_ctx' if limit == self.n_ctx else 'training context'} "
                             f"of {limit} tokens; shorten it, lower max_tokens or raise n_ctx")
        return _Job(i, req, prompt, call, samples=[None] * req.n)

    def _start_job(self, job: _Job, src: _KvSeq | None, k: int) -> int:
        """Prefill the job's prompt on top of ``k`` tokens reused from ``src``; return the logits index of its
        last token (the last prompt token is always computed: its logits start sampling)."""
        seq = self._new_seq(src, k)
        job.prompt_seq, job.cached = seq, k
        self.counters["prompt_tokens_reused"] += k
        rest = job.prompt[k:]
        job.computed += len(rest)
        return self._prefill([(seq, rest, True)])[seq.seq_id]

    def _start_sample(self, job: _Job, first_idx: int | None, active: list[_Active]) -> _Active:
        """Fork a sample off the job's prompt. With the prompt's logits at hand (``first_idx``) the first token is
        sampled from them; otherwise (a later wave) the last prompt token is decoded again for this sample."""
        assert job.prompt_seq is not None
        j = job.started
        job.started += 1
        n_prompt = len(job.prompt)
        shared = n_prompt if first_idx is not None else n_prompt - 1
        kv = self._new_seq(job.prompt_seq, shared)
        kv.exclusive = job.req.max_tokens  # reserve the worst case while it runs
        a = _Active(job, j, kv, self._make_sampler(job.req, j),
                    logprobs=[] if job.req.logprobs else None)
        if first_idx is None:
            a.pending = job.prompt[-1]
            a.generated = -1  # the re-decoded prompt token is not a generated one
        elif self._accept(a, first_idx):
            return a
        active.append(a)
        return a

    @contextlib.contextmanager
    def _alone(self) -> Iterator[None]:
        """In deterministic mode: this call runs by itself, from an empty KV cache (see the module doc)."""
        if not self.deterministic:
            yield
            return
        with self._call_lock:
            with self._cv:
                while self._evict_one():
                    pass
            yield

    def generate(self, requests: Sequence[GenRequest], *, cancel: threading.Event | None = None) -> list[Completion]:
        """Sample every request. Thread-safe: concurrent callers' requests join the same running batch (continuous
        batching) at the engine's next step, so 8 callers decode together rather than one after another (in
        deterministic mode they take turns). Setting ``cancel`` stops this call's remaining work at the next step
        and raises ``Cancelled``."""
        with self._alone():
            return self._generate(requests, cancel)

    def _generate(self, requests: Sequence[GenRequest], cancel: threading.Event | None) -> list[Completion]:
        check_requests(self, requests)
        call = _Call(cancel=cancel)
        jobs = [self._job(i, r, call) for i, r in enumerate(requests)]
        call.remaining = len(jobs)
        call.jobs = jobs
        if not jobs:
            return []
        with self._cv:
            if self._closed:
                raise BackendError("this LlamaCppBackend is closed")
            self._pending.extend(jobs)
            if self._engine is None or not self._engine.is_alive():
                self._engine = threading.Thread(target=self._engine_loop, name="thinkscale-llamacpp", daemon=True)
                self._engine.start()
            self._cv.notify_all()
        while not call.done.wait(0.5):
            if cancel is not None and cancel.is_set():
                with self._cv:
                    self._cv.notify_all()
        if call.error is not None:
            raise call.error
        out = []
        for job in jobs:
            samples = tuple(s for s in job.samples if s is not None)
            if len(samples) != job.req.n:
                raise BackendError(f"internal error: request {job.index} got {len(samples)} of {job.req.n} samples")
            out.append(Completion(samples, self._job_usage(job, sum(s.completion_tokens or 0 for s in samples))))
        return out

    def _job_usage(self, job: _Job, completion_tokens: int) -> Usage:
        return Usage(prompt_tokens=len(job.prompt), cached_prompt_tokens=job.cached,
                     completion_tokens=completion_tokens, calls=1, seconds=job.seconds,
                     flops=2.0 * self.n_params * job.computed)

    def _engine_loop(self) -> None:
        while True:
            with self._cv:
                while not (self._pending or self._waiting or self._active or self._closed):
                    self._cv.wait()
                if self._closed:
                    return
                try:
                    self._step()
                except BaseException as e:  # noqa: BLE001 - handed to every caller in flight
                    log.exception("llama.cpp engine step failed")
                    self._fail_all(e if isinstance(e, Exception) else BackendError(repr(e)))

    def _step(self) -> None:
        """One scheduling round (caller holds the lock): drop cancelled work, admit what fits, decode one token
        for every active sample."""
        self._drop_cancelled()
        active = self._active
        cap = min(self.max_active, self.n_seq_max - 1)
        while self._waiting and len(active) < cap and self._make_room(self._waiting[0].req.max_tokens):
            job = self._waiting[0]
            t0 = time.perf_counter()
            self._start_sample(job, None, active)
            job.seconds += time.perf_counter() - t0
            if job.started == job.req.n:
                self._waiting.popleft()
                self._release_prompt(job)
        while self._pending and not self._waiting and len(active) < min(cap, self.n_seq_max - 2):
            job = self._pending[0]
            src, k = self._best_prefix(job.prompt)
            k = min(k, len(job.prompt) - 1)
            if src is not None:
                src.pinned += 1  # making room must not evict the prefix we are about to reuse
            fits = self._make_room(len(job.prompt) - k + job.req.max_tokens)
            if src is not None:
                src.pinned -= 1
            if not fits and src is not None:
                # keeping the prefix's sequence (all of it, however few tokens are shared) leaves too little room:
                # compute the whole prompt instead, free to evict that sequence too
                src, k = None, 0
                fits = self._make_room(len(job.prompt) + job.req.max_tokens)
            if not fits:
                if active:
                    break  # wait for running samples to finish and free their cells
                self._pending.popleft()
                self._fail_call(job.call, BackendError(
                    f"request {job.index} needs {len(job.prompt)} prompt + {job.req.max_tokens} new tokens of KV "
                    f"cache; n_ctx={self.n_ctx} is too small"))
                continue
            t0 = time.perf_counter()
            idx = self._start_job(job, src, k)
            self._start_sample(job, idx, active)
            while job.started < job.req.n and len(active) < cap \
                    and self._make_room(job.req.max_tokens):
                self._start_sample(job, idx, active)
            job.seconds += time.perf_counter() - t0
            self._pending.popleft()  # only now: a start that raises leaves it pending, so _fail_all fails its call
            if job.started < job.req.n:
                self._waiting.append(job)
            else:
                self._release_prompt(job)
            self._check_done(job)
        if not active:
            return
        t0 = time.perf_counter()
        entries = [(a.pending, len(a.kv.tokens), a.kv.seq_id, True) for a in active]
        self._decode(entries)
        self.counters["sample_tokens_decoded"] += len(entries)
        self.peak_active = max(self.peak_active, len(entries))
        still: list[_Active] = []
        finished: list[_Job] = []
        for i, a in enumerate(active):
            a.kv.tokens.append(a.pending)
            a.job.computed += 1
            a.generated = max(a.generated, 0)  # -1 marked the re-decoded prompt token of a later-wave sample
            if not self._accept(a, i):
                still.append(a)
            else:
                finished.append(a.job)
        # the step's wall time is shared by the jobs in it, in proportion to their tokens
        share = (time.perf_counter() - t0) / len(active)
        for a in active:
            a.job.seconds += share
        active[:] = still
        for job in finished:
            self._check_done(job)

    def _check_done(self, job: _Job) -> None:
        if job.finished or job.started < job.req.n or any(s is None for s in job.samples):
            return
        job.finished = True
        job.call.remaining -= 1
        if job.call.remaining == 0:
            job.call.done.set()

    def _drop_cancelled(self) -> None:
        cancelled = {id(j.call): j.call for j in (*self._pending, *self._waiting, *(a.job for a in self._active))
                     if j.call.cancel is not None and j.call.cancel.is_set()}
        for call in cancelled.values():
            self._fail_call(call, Cancelled("generation cancelled by the caller", usage=self._partial_usage(call)))

    def _partial_usage(self, call: _Call) -> Usage:
        """What a call stopped midway has cost so far, as its requests' completions would have reported it: for each
        request whose prompt was processed, that prompt, the tokens of its finished samples and of those still being
        decoded, its seconds and FLOPs (a cancelled request's work is spent all the same)."""
        total = Usage.zero()
        for job in call.jobs:
            if job.computed or job.cached:
                done = sum(s.completion_tokens or 0 for s in job.samples if s is not None)
                total += self._job_usage(job, done + sum(max(a.generated, 0) for a in self._active if a.job is job))
        return total

    def _fail_call(self, call: _Call, error: Exception) -> None:
        """Remove every job of ``call`` from the scheduler, free its sequences, and wake its caller."""
        for a in [a for a in self._active if a.job.call is call]:
            self._L.llama_sampler_free(a.sampler)
            a.sampler = 0
            a.kv.pinned -= 1
            self._drop(a.kv)
            self._active.remove(a)
        for q in (self._pending, self._waiting):
            for job in [j for j in q if j.call is call]:
                q.remove(job)
                if job.prompt_seq is not None and job.started < job.req.n:
                    self._release_prompt(job)
        call.error = error
        call.done.set()

    def _fail_all(self, error: Exception) -> None:
        """After a failure mid-step: fail every call in flight and drop all KV state (it is only a cache)."""
        calls = {id(j.call): j.call for j in (*self._pending, *self._waiting, *(a.job for a in self._active))}
        for a in self._active:
            if a.sampler:
                self._L.llama_sampler_free(a.sampler)
        self._active.clear()
        self._pending.clear()
        self._waiting.clear()
        self._L.llama_memory_clear(self._mem, True)
        self._free_ids = list(range(self.n_seq_max - 1, -1, -1))
        self._seqs.clear()
        for call in calls.values():
            call.error = error
            call.done.set()

    def _release_prompt(self, job: _Job) -> None:
        assert job.prompt_seq is not None
        job.prompt_seq.pinned -= 1
        job.prompt_seq.last_used = next(self._clock)

    # ------------------------------------------------------------------ scoring

    def score(self, requests: Sequence[ScoreRequest]) -> list[Scored]:
        with self._alone():
            return self._score(requests)

    def _score(self, requests: Sequence[ScoreRequest]) -> list[Scored]:
        out = []
        with self._lock:
            for r in requests:
                t0 = time.perf_counter()
                prompt = self.tokenize(self.render(r.messages, r.prompt))
                cont = self._tokenize(r.continuation, add_special=False, parse_special=False)
                if not cont:
                    raise ValueError("ScoreRequest.continuation tokenizes to nothing")
                full = prompt + cont
                if len(full) > self.n_ctx:
                    raise ValueError(f"prompt + continuation ({len(full)} tokens) exceed n_ctx={self.n_ctx}")
                src, k = self._best_prefix(full)
                k = min(k, len(prompt) - 1)  # logits are needed from the last prompt token on
                seq = self._new_seq(src, k)
                lps: list[float] = []
                pos = k
                self.counters["prompt_tokens_reused"] += k
                while pos < len(full):
                    chunk = full[pos:pos + self.n_batch]
                    entries = []
                    for i, tok in enumerate(chunk):
                        p = pos + i
                        entries.append((tok, p, seq.seq_id, len(prompt) - 1 <= p < len(full) - 1))
                    self._decode(entries)
                    self.counters["prompt_tokens_decoded"] += len(entries)
                    for i, (_, p, _, want) in enumerate(entries):
                        if want:
                            lps.append(self._logprob(i, full[p + 1]))
                    seq.tokens.extend(chunk)
                    seq.exclusive += len(chunk)
                    pos += len(chunk)
                seq.pinned -= 1
                seq.last_used = next(self._clock)
                computed = len(full) - k
                out.append(Scored(tuple(lps), tuple(self.detokenize([t]) for t in cont), Usage(
                    prompt_tokens=len(full), cached_prompt_tokens=k, completion_tokens=0, calls=1,
                    seconds=time.perf_counter() - t0, flops=2.0 * self.n_params * computed)))
        return out

    # ------------------------------------------------------------------ hidden states

    def hidden_states(self, requests: Sequence[ScoreRequest]) -> HiddenStates:
        with self._alone():
            return self._hidden_states(requests)

    def _hidden_states(self, requests: Sequence[ScoreRequest]) -> HiddenStates:
        """The model's final hidden state (after the output norm: the LM head's input) at the last token of each
        request's prompt + continuation, as a float32 array ``(len(requests), n_embd)``: features for a trained PRM.

        Tokens are those ``score()`` would compute (the rendered prompt, then the continuation tokenised on its own),
        and prefixes are reused the same way. llama.cpp outputs *every* token of a batch while embeddings are on
        (a logits row of n_vocab floats each), so each request's tokens but the last are computed with embeddings
        off; then the last tokens of up to ``_HIDDEN_GROUP`` requests decode together in one batch with embeddings
        on, and embeddings are switched off again before the lock is released: generation never sees them."""
        L = self._L
        if L.llama_pooling_type(self._ctx) != L.LLAMA_POOLING_TYPE_NONE:
            raise NotImplementedError(f"{self.name}: hidden_states needs per-token embeddings (pooling NONE); "
                                      "this model's GGUF asks for pooled embeddings")
        fulls = []
        for i, r in enumerate(requests):
            if not isinstance(r, ScoreRequest):
                raise TypeError(f"requests[{i}] is {type(r).__name__}, expected ScoreRequest")
            cont = self._tokenize(r.continuation, add_special=False, parse_special=False)
            full = self.tokenize(self.render(r.messages, r.prompt)) + cont
            if len(full) > self.n_ctx:
                raise ValueError(f"requests[{i}]: prompt + continuation ({len(full)} tokens) "
                                 f"exceed n_ctx={self.n_ctx}")
            fulls.append(full)
        out = np.empty((len(fulls), self.n_embd), dtype=np.float32)
        usage = Usage.zero()
        with self._lock:
            if self._closed:
                raise BackendError("this LlamaCppBackend is closed")
            for start in range(0, len(fulls), _HIDDEN_GROUP):
                group = fulls[start:start + _HIDDEN_GROUP]
                usage = usage + self._hidden_group(group, out[start:start + len(group)])
        self.counters["hidden_states"] += len(fulls)
        return HiddenStates(out, usage)

    def _hidden_group(self, group: list[list[int]], out: np.ndarray) -> Usage:
        """Fill ``out`` with the hidden states of ``group`` (caller holds the lock); return what it cost."""
        L = self._L
        t0 = time.perf_counter()
        seqs: list[_KvSeq] = []
        cached = computed = 0
        try:
            for full in group:
                src, k = self._best_prefix(full)
                k = min(k, len(full) - 1)  # the last token is always computed: its output is the hidden state
                seq = self._new_seq(src, k)
                seqs.append(seq)
                self.counters["prompt_tokens_reused"] += k
                cached += k
                computed += len(full) - k
                rest = full[k:-1]
                if rest:
                    self._prefill([(seq, rest, False)])
            entries = [(full[-1], len(full) - 1, seq.seq_id, True) for full, seq in zip(group, seqs, strict=True)]
            L.llama_set_embeddings(self._ctx, True)
            try:
                self._decode(entries)
                self.counters["prompt_tokens_decoded"] += len(entries)
                for i, (full, seq) in enumerate(zip(group, seqs, strict=True)):
                    ptr = L.llama_get_embeddings_ith(self._ctx, i)
                    if not ptr:
                        raise BackendError(f"llama.cpp returned no embedding for output {i}")
                    out[i] = np.ctypeslib.as_array(ptr, shape=(self.n_embd,))
                    seq.tokens.append(full[-1])
                    seq.exclusive += 1
            finally:
                L.llama_set_embeddings(self._ctx, False)
        except BaseException:
            for seq in seqs:  # a failed decode leaves their token lists unreliable: forget them
                seq.pinned -= 1
                self._drop(seq)
            raise
        for seq in seqs:
            seq.pinned -= 1  # stays cached (idle) for prefix reuse
            seq.last_used = next(self._clock)
        return Usage(prompt_tokens=sum(len(f) for f in group), cached_prompt_tokens=cached, completion_tokens=0,
                     calls=len(group), seconds=time.perf_counter() - t0, flops=2.0 * self.n_params * computed)

    # ------------------------------------------------------------------ lifecycle

    def set_lora(self, path: str | os.PathLike[str] | None, scale: float = 1.0) -> None:
        """Apply a LoRA adapter (a llama.cpp adapter GGUF for this model) to every later request, replacing the one
        before; ``None`` removes it. Cached prefixes were computed with the old weights, so they are dropped. Refused
        while requests run (they would mix two models)."""
        L = self._L
        with self._cv:
            if self._pending or self._waiting or self._active:
                raise BackendError("cannot change the LoRA adapter while requests run")
            adapter = None
            if path is not None:
                adapter = L.llama_adapter_lora_init(self._model, os.fsencode(path))
                if not adapter:
                    raise BackendError(f"{path}: llama.cpp could not load this LoRA adapter for {self.name}")
            adapters = (L.llama_adapter_lora_p_ctypes * 1)(adapter) if adapter else None
            scales = (ctypes.c_float * 1)(scale) if adapter else None
            rc = L.llama_set_adapters_lora(self._ctx, adapters, 1 if adapter else 0, scales)
            if rc != 0:
                raise BackendError(f"llama_set_adapters_lora failed (code {rc})")
            if self._lora is not None:
                L.llama_adapter_lora_free(self._lora)
            self._lora = adapter
            self.clear_cache()  # nothing runs, so nothing is pinned: every cached prefix goes

    def clear_cache(self) -> None:
        """Forget every cached prefix (the next request computes its whole prompt)."""
        with self._lock:
            for s in list(self._seqs.values()):
                if not s.pinned:
                    self._drop(s)

    def close(self) -> None:
        L = getattr(self, "_L", None)
        if L is None:
            return
        with self._cv:
            self._closed = True
            if self._pending or self._waiting or self._active:
                self._fail_all(BackendError("the backend was closed while generating"))
            self._cv.notify_all()
        if self._engine is not None and self._engine is not threading.current_thread():
            self._engine.join(timeout=30)
        if getattr(self, "_ctx", None):
            L.llama_batch_free(self._batch)
            L.llama_free(self._ctx)
            self._ctx = None
        if getattr(self, "_model", None):
            L.llama_model_free(self._model)
            self._model = None

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # noqa: BLE001 - interpreter shutdown
            pass
