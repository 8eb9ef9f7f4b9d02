"""The Backend protocol: every model thinkscale talks to, embedded or remote, looks like this.

Calls are always batched: ``generate`` takes many requests and returns one Completion per request, in order.
What a backend can do is declared in ``Capabilities``; asking for something it cannot do raises
``NotImplementedError`` with a message, never a silent fallback.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from thinkscale.types import Completion, GenRequest, Scored, ScoreRequest, Usage

if TYPE_CHECKING:
    import numpy as np


class BackendError(RuntimeError):
    """A backend could not do what was asked (bad server answer, model failed to load, ...)."""


class Cancelled(BackendError):
    """The caller cancelled a generate() call (e.g. its client disconnected); its remaining work was dropped.
    ``usage``: what the call had computed before it stopped (prompt tokens processed, tokens generated, seconds,
    FLOPs), when the backend can say; None when nothing is known."""

    def __init__(self, message: str = "generation cancelled by the caller", *, usage: Usage | None = None) -> None:
        super().__init__(message)
        self.usage = usage


@dataclass(frozen=True)
class Capabilities:
    logprobs: bool = False  # per-token logprobs of sampled tokens
    score: bool = False  # logprobs of a given continuation (P(yes) verifiers, PRMs)
    tokenize: bool = False
    prefix_cache: bool = False  # a prompt extending a cached prompt computes only its new tokens
    chat: bool = True
    raw_prompt: bool = True
    continue_final: bool = False
    hidden_states: bool = False  # final-layer hidden state at the end of a prompt (features of a trained PRM)
    confidence_stop: bool = False  # GenRequest.confidence_stop: end a sample mid-generation when confidence falls


@dataclass(frozen=True)
class HiddenStates:
    """What ``hidden_states()`` returns: one row per request, in order, and what computing them cost.

    ``vectors``: float32 array of shape ``(len(requests), n_embd)``, the model's final hidden state (after the
    output norm, the input of the LM head) at the last token of each request's prompt + continuation."""

    vectors: np.ndarray
    usage: Usage


@dataclass(frozen=True)
class ModelInfo:
    name: str
    n_params: int | None  # None = unknown (then FLOPs are unknown too)
    n_ctx: int | None
    chat_template: str | None
    fingerprint: str  # identifies model + backend config, for caches keyed by model identity


@runtime_checkable
class Backend(Protocol):
    capabilities: Capabilities

    def generate(self, requests: Sequence[GenRequest]) -> list[Completion]: ...

    def score(self, requests: Sequence[ScoreRequest]) -> list[Scored]: ...

    def tokenize(self, text: str) -> list[int]: ...

    def info(self) -> ModelInfo: ...

    def close(self) -> None: ...


class BackendProxy:
    """A backend that forwards every call and attribute to ``inner``; wrappers (timing, sample sharing) subclass it
    and override only the calls they wrap."""

    def __init__(self, inner: Backend) -> None:
        self.inner = inner
        self.capabilities = inner.capabilities

    def generate(self, requests: Any) -> Any:
        return self.inner.generate(requests)

    def score(self, requests: Any) -> Any:
        return self.inner.score(requests)

    def tokenize(self, text: str) -> list[int]:
        return self.inner.tokenize(text)

    def info(self) -> Any:
        return self.inner.info()

    def close(self) -> None:
        self.inner.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


class BaseBackend:
    """Defaults for optional capabilities: each raises with a message naming the backend."""

    capabilities = Capabilities()

    def generate(self, requests: Sequence[GenRequest]) -> list[Completion]:
        raise NotImplementedError(f"{type(self).__name__} cannot generate")

    def score(self, requests: Sequence[ScoreRequest]) -> list[Scored]:
        raise NotImplementedError(
            f"{type(self).__name__} cannot score continuations (capabilities.score is False); "
            "use the embedded llama.cpp backend or a server with prompt logprobs")

    def tokenize(self, text: str) -> list[int]:
        raise NotImplementedError(f"{type(self).__name__} cannot tokenize (capabilities.tokenize is False)")

    def hidden_states(self, requests: Sequence[ScoreRequest]) -> HiddenStates:
        raise NotImplementedError(
            f"{type(self).__name__} cannot return hidden states (capabilities.hidden_states is False); "
            "use the embedded llama.cpp backend")

    def count_tokens(self, text: str) -> int:
        return len(self.tokenize(text))

    def info(self) -> ModelInfo:
        raise NotImplementedError(f"{type(self).__name__} does not describe its model")

    def close(self) -> None:
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def check_requests(backend: BaseBackend, requests: Sequence[GenRequest]) -> None:
    """Refuse requests a backend cannot honour instead of quietly ignoring a field."""
    caps = backend.capabilities
    for i, r in enumerate(requests):
        if not isinstance(r, GenRequest):
            raise TypeError(f"requests[{i}] is {type(r).__name__}, expected GenRequest")
        if r.logprobs and not caps.logprobs:
            raise NotImplementedError(f"requests[{i}] asks for logprobs; {type(backend).__name__} cannot give them")
        if r.confidence_stop is not None and not caps.confidence_stop:
            raise NotImplementedError(f"requests[{i}] sets confidence_stop; {type(backend).__name__} cannot stop a "
                                      "sample mid-generation (check Capabilities.confidence_stop first)")
        if r.continue_final and not caps.continue_final:
            raise NotImplementedError(
                f"requests[{i}] uses continue_final; {type(backend).__name__} cannot continue an assistant turn")
        if r.messages is not None and not caps.chat:
            raise NotImplementedError(f"requests[{i}] uses chat messages; {type(backend).__name__} has no chat")
        if r.prompt is not None and not caps.raw_prompt:
            raise NotImplementedError(f"requests[{i}] uses a raw prompt; {type(backend).__name__} needs messages")
