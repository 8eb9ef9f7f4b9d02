"""What every ``thinkscale`` command shares: how it fails. Imports typer, rich and the standard library only, so any
command module can use it without pulling in another part of thinkscale."""

from __future__ import annotations

from typing import NoReturn

import typer
from rich.console import Console
from rich.markup import escape

err = Console(stderr=True)


def fail(message: str, code: int = 2) -> NoReturn:
    """Print ``error: MESSAGE`` as one line on stderr and exit with ``code`` (2: bad input, 1: the work failed).
    The message is printed as it is (no markup, no emoji codes): it often quotes user input or model output, where
    ``[red]`` or ``:x:`` is text."""
    err.print(f"[bold red]error:[/] {escape(message)}", highlight=False, emoji=False, soft_wrap=True)
    raise typer.Exit(code)
