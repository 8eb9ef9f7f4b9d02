"""Chat templates: the model's own Jinja template from its GGUF metadata, rendered in a sandbox.

``continue_final`` renders every message but the last as usual, opens the assistant turn, and appends the last
(assistant) message's content verbatim, so generation continues that turn: the basis of step-level search.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from jinja2 import TemplateError
from jinja2.sandbox import ImmutableSandboxedEnvironment

from thinkscale.types import Message


class ChatTemplateError(ValueError):
    pass


def _raise_exception(message: str) -> None:
    raise ChatTemplateError(f"the model's chat template refused the messages: {message}")


class ChatTemplate:
    def __init__(self, source: str, *, bos_token: str = "", eos_token: str = "") -> None:
        # Default (lenient) undefined, as Hugging Face renders them: templates test optional variables like `tools`.
        env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
        env.globals["raise_exception"] = _raise_exception
        env.globals["strftime_now"] = lambda fmt: datetime.now().strftime(fmt)
        try:
            self._template = env.from_string(source)
        except TemplateError as e:
            raise ChatTemplateError(f"cannot parse the chat template: {e}") from e
        self.source = source
        self.bos_token = bos_token
        self.eos_token = eos_token

    def render(self, messages: Sequence[Message], *, continue_final: bool = False) -> str:
        msgs = list(messages)
        tail = ""
        if continue_final:
            if not msgs or msgs[-1].role != "assistant":
                raise ChatTemplateError("continue_final needs the last message to be an assistant turn")
            tail = msgs.pop().content
        try:
            text = self._template.render(
                messages=[{"role": m.role, "content": m.content} for m in msgs],
                add_generation_prompt=True,
                bos_token=self.bos_token,
                eos_token=self.eos_token,
            )
        except ChatTemplateError:
            raise
        except TemplateError as e:
            raise ChatTemplateError(f"cannot render the chat template: {e}") from e
        return text + tail
