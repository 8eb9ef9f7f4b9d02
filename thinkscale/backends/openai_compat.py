"""OpenAICompatBackend: any server speaking the OpenAI HTTP API (vLLM, SGLang, llama-server, Ollama,
llama-cpp-python's server, thinkscale's own server).

``base_url`` includes the API version prefix, as in the OpenAI SDK: ``http://127.0.0.1:8000/v1``; chat requests go
to ``{base_url}/chat/completions`` and raw-prompt requests to ``{base_url}/completions``.

Servers differ in what they honour, so this backend trusts nothing it can check:
- every sampling parameter is sent explicitly (llama-cpp-python's server defaults to top_k 40, min_p 0.05 and
  repeat_penalty 1.1, which would silently change the distribution);
- the number of returned choices is counted: llama-cpp-python's server ignores ``n`` and returns one, so the missing
  samples are requested one call each, with their own seeds;
- usage comes only from the server's ``usage`` object; what it does not report stays ``None``.
A request with a ``confidence_stop`` (DeepConf online) streams each sample in its own call, checks the rule on
every token's logprob as it arrives, and closes the stream when it fires (servers stop generating a request whose
client went away): the sample ends with finish reason ``low_confidence``, holding the tokens received, and its
usage is what the stream said (``completion_tokens`` is the tokens it delivered; ``prompt_tokens`` only if the
server sends usage in every chunk, as vLLM does with ``extra_body={"stream_options": {"continuous_usage_stats":
True}}``; otherwise unknown).
Transient failures (429, 5xx, timeouts, resets, truncated bodies) are retried with bounded exponential backoff;
a failed attempt is never charged, so a retried sample is counted once.

Several base URLs make an endpoint pool (``thinkscale.backends.pool``): each call goes to the least loaded healthy
server, a failed call is retried at once on another one, and a server that failed rests and is health-checked
before it gets calls again. The servers must serve the same model with the same settings: a sample's seed, not
its server, decides what it is only where the servers are alike.
"""

from __future__ import annotations

import email.utils
import json
import logging
import math
import threading
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Literal

import httpx

from thinkscale.backends.base import BackendError, BaseBackend, Capabilities, ModelInfo, check_requests
from thinkscale.backends.pool import EndpointPool, check_urls
from thinkscale.types import Completion, ConfidenceStop, FinishReason, GenRequest, Sample, Usage

log = logging.getLogger(__name__)

Endpoint = Literal["chat", "completions"]

_FINISH: dict[str, FinishReason] = {"stop": "stop", "eos": "stop", "stop_sequence": "stop", "length": "length"}
# Fields this backend owns: letting extra_body override them would break sample counting, seeding or parsing.
# (``stream_options`` may be set: a confidence-stop stream adds ``include_usage`` to what is given.)
_RESERVED = frozenset({"model", "messages", "prompt", "n", "seed", "stream", "logprobs", "top_logprobs", "echo"})
_LOW_CONFIDENCE = "low_confidence"  # the finish reason of a stream this backend closed (never a server's)


@dataclass(frozen=True)
class _Call:
    """One HTTP call: ``n`` samples of request ``req_index``, the first being sample ``first``."""

    req_index: int
    first: int
    n: int


@dataclass(frozen=True)
class _CallResult:
    samples: tuple[Sample, ...]
    usage: Usage


class _Retryable(Exception):
    def __init__(self, message: str, *, retry_after: float | None = None, refused: bool = False) -> None:
        super().__init__(message)
        self.retry_after = retry_after
        self.refused = refused


class OpenAICompatBackend(BaseBackend):
    """Generate through an OpenAI-compatible HTTP server.

    Args:
        base_url: the API root including ``/v1``, e.g. ``http://127.0.0.1:8000/v1``; a list of them is a pool of
            servers of the same model (see the module doc).
        model: the model name the server expects in ``"model"``.
        api_key: sent as ``Authorization: Bearer``; None sends no header.
        endpoint: ``"chat"``: the server has both ``/chat/completions`` and ``/completions`` (chat and raw-prompt
            requests both work). ``"completions"``: only ``/completions`` (chat requests are refused).
        supports_n: True: ask for ``n`` choices in one call. False: one call per sample. None: try ``n`` and
            fall back to False for later calls once the server returns fewer choices than asked.
        max_concurrency: HTTP calls in flight at once (across all ``generate`` calls on this backend and all
            servers of a pool); None: 8 per server.
        timeout_s: per-operation HTTP timeout (connect, write, and waiting for the answer).
        max_retries: retries after the first attempt for retryable failures.
        backoff_s / max_backoff_s: exponential backoff base and cap; ``Retry-After`` is honoured up to the cap.
        n_params: model parameters, for FLOPs (None: FLOPs unknown).
        extra_body: extra JSON fields merged into every request body, last (e.g. ``{"top_k": -1}`` for a
            server that wants -1 for "off"); the fields that drive sample counting and parsing cannot be set here.

    Example::

        with OpenAICompatBackend("http://127.0.0.1:8000/v1", "qwen2.5-0.5b") as b:
            [c] = b.generate([GenRequest(prompt="2+2=", n=4, max_tokens=8, seed=0)])
    """

    capabilities = Capabilities(logprobs=True, score=False, tokenize=False, prefix_cache=False, chat=True,
                                raw_prompt=True, continue_final=False, confidence_stop=True)

    def __init__(self, base_url: str | Sequence[str], model: str, *, api_key: str | None = None,
                 endpoint: Endpoint = "chat", supports_n: bool | None = None, max_concurrency: int | None = None,
                 timeout_s: float = 120.0,
                 max_retries: int = 4, backoff_s: float = 0.5, max_backoff_s: float = 8.0,
                 n_params: int | None = None, extra_body: dict[str, Any] | None = None) -> None:
        urls = [base_url] if isinstance(base_url, str) else base_url
        if not isinstance(urls, (list, tuple)) or not all(isinstance(u, str) for u in urls):
            raise ValueError(f"base_url must be an http(s) URL such as 'http://127.0.0.1:8000/v1', got {base_url!r}")
        base_urls = check_urls(urls)
        if max_concurrency is None:
            max_concurrency = 8 * len(base_urls)
        if not isinstance(model, str) or not model:
            raise ValueError("model must be a non-empty string (the name the server expects in 'model')")
        if endpoint not in ("chat", "completions"):
            raise ValueError(f"endpoint must be 'chat' or 'completions', got {endpoint!r}")
        if supports_n is not None and not isinstance(supports_n, bool):
            raise ValueError(f"supports_n must be True, False or None (detect), got {supports_n!r}")
        if not _is_int(max_concurrency) or max_concurrency < 1:
            raise ValueError(f"max_concurrency must be an integer >= 1, got {max_concurrency!r}")
        if not _is_num(timeout_s) or timeout_s <= 0:
            raise ValueError(f"timeout_s must be a finite number > 0, got {timeout_s!r}")
        if not _is_int(max_retries) or max_retries < 0:
            raise ValueError(f"max_retries must be an integer >= 0, got {max_retries!r}")
        if not _is_num(backoff_s) or backoff_s < 0:
            raise ValueError(f"backoff_s must be a finite number >= 0, got {backoff_s!r}")
        if not _is_num(max_backoff_s) or max_backoff_s < backoff_s:
            raise ValueError(f"max_backoff_s must be a finite number >= backoff_s ({backoff_s}), got {max_backoff_s!r}")
        if n_params is not None and (not _is_int(n_params) or n_params <= 0):
            raise ValueError(f"n_params must be a positive integer or None (unknown), got {n_params!r}")
        if extra_body is not None:
            if not isinstance(extra_body, dict) or not all(isinstance(k, str) for k in extra_body):
                raise ValueError("extra_body must be a dict with string keys")
            bad = sorted(_RESERVED & extra_body.keys())
            if bad:
                raise ValueError(f"extra_body cannot set {bad}: the backend sets these itself")

        self.base_urls = base_urls
        self.base_url = ",".join(base_urls)  # one URL, or the pool's (in messages and the fingerprint)
        self.model = model
        self.endpoint: Endpoint = endpoint
        self.max_concurrency = max_concurrency
        self.timeout_s = float(timeout_s)
        self.max_retries = max_retries
        self.backoff_s = float(backoff_s)
        self.max_backoff_s = float(max_backoff_s)
        self.n_params = n_params
        self.extra_body = dict(extra_body or {})
        self._supports_n = supports_n
        self.capabilities = Capabilities(logprobs=True, score=False, tokenize=False, prefix_cache=False,
                                         chat=endpoint == "chat", raw_prompt=True, continue_final=False,
                                         confidence_stop=True)
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._client = httpx.Client(
            timeout=httpx.Timeout(self.timeout_s), headers=headers,
            limits=httpx.Limits(max_connections=max_concurrency, max_keepalive_connections=max_concurrency))
        self._executor: ThreadPoolExecutor | None = None
        self._lock = threading.Lock()
        self._closed = False
        self.pool = EndpointPool(base_urls, self._healthy)

    @property
    def supports_n(self) -> bool | None:
        """What the backend currently believes: None until a call with n > 1 has shown it."""
        return self._supports_n

    # ---- generate -------------------------------------------------------------------------------------------

    def generate(self, requests: Sequence[GenRequest]) -> list[Completion]:
        check_requests(self, requests)
        if self._closed:
            raise BackendError("OpenAICompatBackend is closed")
        requests = list(requests)
        got: list[list[_CallResult]] = [[] for _ in requests]

        first_wave: list[_Call] = []
        for i, r in enumerate(requests):
            if r.n == 1 or (self._supports_n is not False and r.confidence_stop is None):
                first_wave.append(_Call(i, 0, r.n))
            else:  # a confidence stop closes one sample's stream: one call per sample
                first_wave.extend(_Call(i, j, 1) for j in range(r.n))
        for call, res in zip(first_wave, self._run(requests, first_wave), strict=True):
            got[call.req_index].append(res)

        # Servers may return fewer choices than asked (llama-cpp-python ignores n): request each missing sample
        # on its own, with that sample's seed, so the result does not depend on whether n was honoured.
        second_wave: list[_Call] = []
        for i, r in enumerate(requests):
            have = sum(len(c.samples) for c in got[i])
            if have < r.n:
                if self._supports_n is None:
                    log.info("%s returned %d of %d choices: sending one call per sample from now on",
                             self.base_url, have, r.n)
                    self._supports_n = False
                second_wave.extend(_Call(i, j, 1) for j in range(have, r.n))
        for call, res in zip(second_wave, self._run(requests, second_wave), strict=True):
            got[call.req_index].append(res)
        if self._supports_n is None and any(r.n > 1 for r in requests):
            self._supports_n = True

        out = []
        for results in got:
            samples = tuple(s for c in results for s in c.samples)
            out.append(Completion(samples, Usage.total(c.usage for c in results)))
        return out

    def _run(self, requests: list[GenRequest], calls: list[_Call]) -> list[_CallResult]:
        if not calls:
            return []
        # Even a single call goes through the pool: it is what bounds concurrency across threads calling generate.
        pool = self._pool()
        futures: list[Future[_CallResult]] = [pool.submit(self._call, requests[c.req_index], c) for c in calls]
        try:
            return [f.result() for f in futures]
        except BaseException:
            for f in futures:
                f.cancel()
            raise

    def _pool(self) -> ThreadPoolExecutor:
        with self._lock:
            if self._executor is None:
                self._executor = ThreadPoolExecutor(self.max_concurrency, thread_name_prefix="openai-compat")
            return self._executor

    def _body(self, req: GenRequest, call: _Call) -> tuple[str, dict[str, Any]]:
        chat = req.messages is not None
        body: dict[str, Any] = {"model": self.model}
        if req.messages is not None:
            body["messages"] = [{"role": m.role, "content": m.content} for m in req.messages]
        else:
            body["prompt"] = req.prompt
        body.update({
            "n": call.n, "max_tokens": req.max_tokens, "temperature": req.temperature, "top_p": req.top_p,
            "top_k": req.top_k, "min_p": req.min_p, "stop": list(req.stop), "stream": False,
            # Both spellings: llama.cpp servers read repeat_penalty, vLLM/SGLang repetition_penalty.
            "repeat_penalty": 1.0, "repetition_penalty": 1.0, "frequency_penalty": 0.0, "presence_penalty": 0.0,
        })
        seed = req.sample_seed(call.first)
        if seed is not None:
            body["seed"] = seed
        if req.logprobs:
            body.update({"logprobs": True, "top_logprobs": 0} if chat else {"logprobs": 0})
        body.update(self.extra_body)
        return ("/chat/completions" if chat else "/completions"), body

    def _call(self, req: GenRequest, call: _Call) -> _CallResult:
        path, body = self._body(req, call)
        rule = req.confidence_stop
        if rule is None:
            data, seconds = self._post(path, body)
        else:
            body["stream"] = True
            body["stream_options"] = {**(body.get("stream_options") or {}), "include_usage": True}
            data, seconds = self._post(path, body, stream=rule)
        url = self.base_url + path
        choices = data.get("choices")
        if not isinstance(choices, list) or not choices:
            raise BackendError(f"{url} answered without choices: {_short(data)}")
        if len(choices) > call.n:
            raise BackendError(f"{url} returned {len(choices)} choices for n={call.n}: the server does not honour "
                               "n; pass supports_n=False")
        if all(isinstance(c, dict) and _is_int(c.get("index")) for c in choices):
            choices = sorted(choices, key=lambda c: c["index"])
        usage = _usage(data.get("usage"), seconds, self.n_params)
        samples = tuple(_sample(c, url, req, chat=req.messages is not None,
                                call_tokens=usage.completion_tokens if len(choices) == 1 else None)
                        for c in choices)
        return _CallResult(samples, usage)

    # ---- HTTP with retries ----------------------------------------------------------------------------------

    def _post(self, path: str, body: dict[str, Any], *, stream: ConfidenceStop | None = None
              ) -> tuple[dict[str, Any], float]:
        """POST with bounded retries; returns the JSON object (for a ``stream``, the streamed choice assembled as a
        non-streamed answer would hold it) and the seconds the successful attempt took."""
        attempts = self.max_retries + 1
        refused_every_time = True
        last = ""
        tried: set[str] = set()  # the pool's endpoints this call failed on: a retry goes elsewhere when it can
        retry_after: float | None = None
        for attempt in range(attempts):
            base = self.pool.acquire(frozenset(tried))
            url = base + path
            failed = False
            try:
                return self._attempt(url, body) if stream is None else self._attempt_stream(url, body, stream)
            except _Retryable as e:
                failed = True
                last = str(e) if len(self.base_urls) == 1 else f"{base}: {e}"
                refused_every_time &= e.refused
                retry_after = e.retry_after
            finally:
                self.pool.release(base, failed=failed)
            tried.add(base)
            if attempt + 1 == attempts:
                break
            if self.pool.any_up(frozenset(tried)):
                log.warning("POST %s failed (%s); retry %d/%d on another server", url, last, attempt + 1,
                            self.max_retries)
                continue
            delay = min(self.max_backoff_s,
                        retry_after if retry_after is not None else self.backoff_s * 2 ** attempt)
            log.warning("POST %s failed (%s); retry %d/%d in %.2fs", url, last, attempt + 1, self.max_retries,
                        delay)
            time.sleep(delay)
        if refused_every_time:
            raise BackendError(f"cannot reach {self.base_url}: {last} ({attempts} attempts); is the server running? "
                               "Start it or fix base_url")
        raise BackendError(f"POST {self.base_url}{path} failed after {attempts} attempts; last error: {last}. Check "
                           "the server's log; if it is just slow or busy, raise timeout_s or max_retries, or lower "
                           "max_concurrency")

    def _healthy(self, base: str) -> bool:
        """The pool's health check: ``GET {base}/models`` answers (a 5xx other than 501, or no answer: down)."""
        try:
            resp = self._client.get(base + "/models", timeout=min(self.timeout_s, 5.0))
        except httpx.HTTPError:
            return False
        return resp.status_code < 500 or resp.status_code == 501

    @contextmanager
    def _transport_errors(self) -> Iterator[None]:
        """httpx's failures to reach the server or to read its answer, as retryable errors."""
        try:
            yield
        except httpx.ConnectError as e:
            raise _Retryable(f"connection failed: {e}", refused=True) from e
        except httpx.TimeoutException as e:
            raise _Retryable(f"timed out after {self.timeout_s}s ({type(e).__name__})") from e
        except httpx.TransportError as e:  # resets, truncated bodies or streams, protocol errors
            raise _Retryable(f"{type(e).__name__}: {e}") from e

    def _attempt(self, url: str, body: dict[str, Any]) -> tuple[dict[str, Any], float]:
        t0 = time.perf_counter()
        with self._transport_errors():
            resp = self._client.post(url, json=body)
        seconds = time.perf_counter() - t0
        _check_status(url, resp)
        try:
            data = resp.json()
        except ValueError as e:
            raise _Retryable(f"malformed JSON body ({len(resp.content)} bytes): {e}") from e
        if not isinstance(data, dict):
            raise _Retryable(f"JSON body is a {type(data).__name__}, expected an object")
        return data, seconds

    def _attempt_stream(self, url: str, body: dict[str, Any], rule: ConfidenceStop) -> tuple[dict[str, Any], float]:
        """One streamed sample (server-sent events), closed as soon as ``rule`` fires on the received tokens'
        logprobs. A stream that breaks off is retryable: the sample is requested again with its seed."""
        got = _StreamedSample(url, "messages" in body, rule)
        t0 = time.perf_counter()
        with self._transport_errors(), self._client.stream("POST", url, json=body) as resp:
            if resp.status_code != 200:
                resp.read()  # the error body, for the message
            _check_status(url, resp)
            for line in resp.iter_lines():
                if got.feed(line):
                    break  # leaving the block closes the connection: the server stops generating
        return got.as_answer(), time.perf_counter() - t0

    # ---- rest of the protocol -------------------------------------------------------------------------------

    def info(self) -> ModelInfo:
        return ModelInfo(name=self.model, n_params=self.n_params, n_ctx=None, chat_template=None,
                         fingerprint=f"openai:{self.base_url}:{self.model}")

    def close(self) -> None:
        self._closed = True
        with self._lock:
            if self._executor is not None:
                self._executor.shutdown(wait=True, cancel_futures=True)
                self._executor = None
        self._client.close()


def _check_status(url: str, resp: httpx.Response) -> None:
    """Retryable for 429/408/5xx, a BackendError naming the status for any other answer than 200."""
    status = resp.status_code
    if status == 429 or status == 408 or status >= 500:
        raise _Retryable(f"HTTP {status}: {_error_message(resp)}", retry_after=_retry_after(resp))
    if status >= 400:
        raise BackendError(f"POST {url} was rejected with HTTP {status}: {_error_message(resp)}")
    if status != 200:
        raise BackendError(f"POST {url} answered HTTP {status}, expected 200: {resp.text[:300]!r}")


def _is_int(x: object) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def _is_num(x: object) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def _count(v: object) -> int | None:
    return v if isinstance(v, int) and not isinstance(v, bool) and v >= 0 else None


def _short(data: object) -> str:
    s = repr(data)
    return s if len(s) <= 300 else s[:300] + "..."


def _usage(raw: object, seconds: float, n_params: int | None) -> Usage:
    """One call's usage, from the server's ``usage`` object only; what it does not report is None."""
    raw = raw if isinstance(raw, dict) else {}
    details = raw.get("prompt_tokens_details")
    prompt = _count(raw.get("prompt_tokens"))
    completion = _count(raw.get("completion_tokens"))
    cached = _count(details.get("cached_tokens")) if isinstance(details, dict) else None
    flops = None
    if n_params is not None and prompt is not None and cached is not None and completion is not None:
        flops = 2.0 * n_params * (prompt - cached + completion)
    return Usage(prompt_tokens=prompt, cached_prompt_tokens=cached, completion_tokens=completion, calls=1,
                 seconds=seconds, flops=flops)


def _sample(choice: object, url: str, req: GenRequest, *, chat: bool, call_tokens: int | None) -> Sample:
    """``call_tokens``: the call's completion tokens when it produced only this choice, else None."""
    if not isinstance(choice, dict):
        raise BackendError(f"{url} returned a malformed choice: {_short(choice)}")
    if chat:
        message = choice.get("message")
        text = message.get("content") if isinstance(message, dict) else None
    else:
        text = choice.get("text")
    if not isinstance(text, str):
        raise BackendError(f"{url} returned a choice without text (a tool call or reasoning-only answer?): "
                           f"{_short(choice)}")
    raw_finish = choice.get("finish_reason")
    finish = _FINISH.get(raw_finish) if isinstance(raw_finish, str) else None
    if raw_finish == _LOW_CONFIDENCE and choice.get("closed_by_client") is True:
        finish = "low_confidence"  # this backend closed the stream (_StreamedSample); a server never says so
    if finish is None:
        raise BackendError(f"{url} returned finish_reason {raw_finish!r}; expected 'stop' or 'length'")
    logprobs = _logprobs(choice.get("logprobs"), url, chat=chat) if req.logprobs else None
    if call_tokens is not None:
        tokens: int | None = call_tokens
    else:
        # Several choices share one usage total; a logprob per token is the only per-sample count the server gives.
        tokens = len(logprobs) if logprobs is not None else None
    return Sample(text=text, completion_tokens=tokens, finish_reason=finish, logprobs=logprobs)


def _logprobs(raw: object, url: str, *, chat: bool) -> tuple[float, ...]:
    values: object = None
    if isinstance(raw, dict):
        if chat:
            content = raw.get("content")
            if isinstance(content, list):
                values = [t.get("logprob") if isinstance(t, dict) else None for t in content]
        else:
            values = raw.get("token_logprobs")
    if not isinstance(values, list):
        raise BackendError(f"{url}: the server did not return logprobs although they were requested "
                           f"(got {_short(raw)}); for llama-cpp-python's server start it with --logits_all true")
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
        raise BackendError(f"{url} returned non-numeric token logprobs: {_short(values)}")
    return tuple(float(v) for v in values)


def _error_message(resp: httpx.Response) -> str:
    try:
        data = resp.json()
    except ValueError:
        return resp.text[:300] or resp.reason_phrase
    if isinstance(data, dict):
        err = data.get("error")
        if isinstance(err, dict) and isinstance(err.get("message"), str):
            return err["message"]
        if isinstance(err, str):
            return err
        if "detail" in data:  # FastAPI validation errors
            return _short(data["detail"])
        if isinstance(data.get("message"), str):
            return data["message"]
    return _short(data)


def _retry_after(resp: httpx.Response) -> float | None:
    value = resp.headers.get("retry-after")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


class _StreamedSample:
    """One sample's server-sent events, fed line by line: text, token logprobs, finish reason and the last usage
    seen, with ``rule`` checked after every token (``ConfidenceStop.step``, as llama.cpp's backend does)."""

    def __init__(self, url: str, chat: bool, rule: ConfidenceStop) -> None:
        self.url, self.chat, self.rule = url, chat, rule
        self.text: list[str] = []
        self.logprobs: list[float] = []
        self.window = 0.0
        self.finish: str | None = None
        self.usage: dict[str, Any] | None = None

    def feed(self, line: str) -> bool:
        """Take one line of the stream; True once the sample is over (the rule fired, or the stream ended)."""
        if not line.startswith("data:"):
            return False  # blank separators, comments, event names
        payload = line[5:].strip()
        if payload == "[DONE]":
            return True
        try:
            chunk = json.loads(payload)
        except ValueError as e:
            raise _Retryable(f"malformed event in the stream: {e}") from e
        if not isinstance(chunk, dict):
            raise _Retryable(f"an event of the stream is a {type(chunk).__name__}, expected an object")
        if chunk.get("error") is not None:
            raise BackendError(f"{self.url} sent an error in the stream: {_short(chunk['error'])}")
        if isinstance(chunk.get("usage"), dict):
            self.usage = chunk["usage"]
        for choice in chunk.get("choices") or ():
            if not isinstance(choice, dict):
                raise BackendError(f"{self.url} streamed a malformed choice: {_short(choice)}")
            if self._choice(choice):
                return True
        return False

    def _choice(self, choice: dict[str, Any]) -> bool:
        if self.chat:
            delta = choice.get("delta")
            piece = delta.get("content") if isinstance(delta, dict) else None
        else:
            piece = choice.get("text")
        piece = piece if isinstance(piece, str) else ""
        entries = _stream_logprobs(choice.get("logprobs"), self.url, chat=self.chat)
        if piece and not entries:
            raise BackendError(f"{self.url} streamed text without its token logprobs ({_short(choice)}); a "
                               "confidence stop needs them (for llama-cpp-python's server: --logits_all true)")
        for k, (_, lp) in enumerate(entries):
            self.logprobs.append(lp)
            self.window, stop = self.rule.step(self.window, self.logprobs)
            if stop:
                names = [t for t, _ in entries if isinstance(t, str)]
                if k + 1 < len(entries) and len(names) == len(entries):
                    self.text.append("".join(names[: k + 1]))  # the tokens up to the stop, by their text
                else:  # the event's text cannot be split by token (or ends here): all of its tokens count
                    self.text.append(piece)
                    self.logprobs.extend(v for _, v in entries[k + 1:])
                self.finish = _LOW_CONFIDENCE
                return True
        self.text.append(piece)
        if isinstance(choice.get("finish_reason"), str):
            self.finish = choice["finish_reason"]
        return False

    def as_answer(self) -> dict[str, Any]:
        """The sample as a non-streamed answer holds it (parsed by ``_sample`` / ``_usage`` like one)."""
        if self.finish is None:
            raise _Retryable("the stream ended before the sample did (no finish reason)")
        text = "".join(self.text)
        lps = [{"logprob": v} for v in self.logprobs] if self.chat else None
        choice: dict[str, Any] = {"index": 0, "finish_reason": self.finish,
                                  "logprobs": {"content": lps} if self.chat else {"token_logprobs": self.logprobs}}
        choice.update({"message": {"role": "assistant", "content": text}} if self.chat else {"text": text})
        if self.finish == _LOW_CONFIDENCE:
            choice["closed_by_client"] = True
        usage = dict(self.usage or {})
        if self.finish == _LOW_CONFIDENCE or _count(usage.get("completion_tokens")) is None:
            # what the stream delivered; a server that stops on the disconnect may have sampled a few more
            usage["completion_tokens"] = len(self.logprobs)
        return {"choices": [choice], "usage": usage}


def _stream_logprobs(raw: object, url: str, *, chat: bool) -> list[tuple[str | None, float]]:
    """(token text or None, logprob) of each token in one streamed event's ``logprobs``."""
    if raw is None:
        return []
    items: list[tuple[object, object]] = []
    if isinstance(raw, dict) and chat and isinstance(raw.get("content"), list):
        items = [(t.get("token"), t.get("logprob")) if isinstance(t, dict) else (None, None) for t in raw["content"]]
    elif isinstance(raw, dict) and not chat and isinstance(raw.get("token_logprobs"), list):
        lps: list[object] = raw["token_logprobs"]
        toks = raw.get("tokens")
        names: list[object] = toks if isinstance(toks, list) and len(toks) == len(lps) else [None] * len(lps)
        items = list(zip(names, lps, strict=True))
    elif raw:
        raise BackendError(f"{url} streamed logprobs in an unknown shape: {_short(raw)}")
    out = []
    for tok, lp in items:
        if not isinstance(lp, (int, float)) or isinstance(lp, bool):
            raise BackendError(f"{url} streamed a non-numeric token logprob: {_short(raw)}")
        out.append((tok if isinstance(tok, str) else None, float(lp)))
    return out
