"""What every ``thinkscale`` command shares: how it fails, how it checks a path it will write before any work, and
how it shows that long work is still going. Imports typer, rich and the standard library only, so any command module
can use it without pulling in another part of thinkscale."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import NoReturn

import typer
from rich.console import Console
from rich.markup import escape

err = Console(stderr=True)


def fail(message: str, code: int = 2) -> NoReturn:
    """Print ``error: MESSAGE`` as one line on stderr and exit with ``code`` (2: bad input, 1: the work failed).
    The message is printed as it is (no markup, no emoji codes): it often quotes user input or model output, where
    ``[red]`` or ``:x:`` is text. It stays one line (``one_line``), whatever the input it quotes."""
    err.print(f"[bold red]error:[/] {escape(one_line(message))}", highlight=False, emoji=False, soft_wrap=True)
    raise typer.Exit(code)


MAX_MESSAGE = 1000  # characters of an error message; the middle of a longer one is cut


def one_line(message: str) -> str:
    """``message`` as one printable line: the lines of a message written on several (a list of differences) are
    joined with "; ", and every other control or format character, including the ones Python and terminals also
    break lines at (U+001C-U+001E, U+0085, U+2028, U+2029) and escape sequences, is written as its escape
    (``\\x1b``), so a quoted path or answer can neither break the line nor drive the terminal. Past
    ``MAX_MESSAGE`` characters the middle is cut."""
    parts = [p.strip() for p in message.split("\n")]
    text = ""
    for p in filter(None, parts):
        text += p if not text else (" " if text.endswith(":") else "; ") + p
    text = "".join(c if c == " " or c.isprintable() and c not in "\u2028\u2029" else
                   c.encode("unicode_escape").decode("ascii") for c in text)
    if len(text) > MAX_MESSAGE:  # a quoted input of 100 KB: its start, and the end that says what is allowed
        cut = len(text) - MAX_MESSAGE + 40
        text = f"{text[:MAX_MESSAGE * 2 // 3]} [... {cut} characters ...] {text[MAX_MESSAGE * 2 // 3 + cut:]}"
    return text


def os_reason(e: OSError) -> str:
    """What went wrong with a file, in words: the system's reason and the file it concerns."""
    reason = e.strerror or str(e) or type(e).__name__
    return f"{reason} ({e.filename})" if e.filename else reason


def _nearest(path: Path) -> Path | None:
    return next((p for p in (path, *path.parents) if p.exists()), None)


def _read_only(p: Path) -> bool:
    return not os.access(p, os.W_OK | (os.X_OK if p.is_dir() else 0))


def unwritable_folder(folder: Path, *, create: bool = False) -> str | None:
    """Why files cannot be written in ``folder`` (made when missing, with its parents), or None when they can.
    ``create``: make it now; else nothing is made, and the nearest part of the path that exists is looked at.
    The reason reads after the path: ``f"--out {folder} {reason}"``."""
    try:
        return _unwritable_folder(folder, create)
    except (OSError, ValueError) as e:  # a name too long, a NUL in it
        return f"cannot be used ({os_reason(e) if isinstance(e, OSError) else e})"


def _unwritable_folder(folder: Path, create: bool) -> str | None:
    if create and not folder.is_file():
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            return f"cannot be created ({os_reason(e)})"
    existing = _nearest(folder)
    if existing is None:
        return None
    if not existing.is_dir():
        return "is a file, not a folder" if existing == folder else f"cannot be created: {existing} is a file"
    if _read_only(existing):
        return "cannot be written (read-only file system or permissions)" if existing == folder else \
            f"cannot be created: {existing} cannot be written (read-only file system or permissions)"
    return None


def unwritable_file(path: Path) -> str | None:
    """Why ``path`` cannot be written as a file (its folder must exist), or None when it can; nothing is made.
    The reason reads after the path."""
    try:
        return _unwritable_file(path)
    except (OSError, ValueError) as e:  # a name too long, a NUL in it
        return f"cannot be used ({os_reason(e) if isinstance(e, OSError) else e})"


def _unwritable_file(path: Path) -> str | None:
    if path.is_dir():
        return "is a folder; give a file name"
    if path.exists():
        return "cannot be written (read-only file system or permissions)" if _read_only(path) else None
    folder = path.parent
    if not folder.is_dir():
        existing = _nearest(folder)
        return f"cannot be created: {existing} is a file" if existing is not None and not existing.is_dir() else \
            f"cannot be created: its folder {folder} does not exist"
    if _read_only(folder):
        return f"cannot be created: {folder} cannot be written (read-only file system or permissions)"
    return None


@contextmanager
def working(message: str, *, after: float = 2.0, console: Console | None = None) -> Iterator[None]:
    """While the block runs, once it has taken ``after`` seconds: a spinner with ``message`` and the seconds so far
    on stderr (``console``, default ``err``), gone when the block ends. Quick work shows nothing; rich draws it only
    on a terminal, so pipes and files never get it."""
    con = console if console is not None else err
    t0 = time.monotonic()
    done = threading.Event()

    def show() -> None:
        if done.wait(after):
            return
        with con.status(escape(message), spinner="dots") as status:
            while not done.wait(0.25):
                status.update(escape(f"{message} ({time.monotonic() - t0:.0f} s)"))

    shower = threading.Thread(target=show, name="thinkscale-working", daemon=True)
    shower.start()
    try:
        yield
    finally:
        done.set()
        shower.join()
