"""Report functions longer than a limit (default 100 lines, from ``def`` to the last line of the body).

    python scripts/check_function_length.py                 # walks thinkscale/
    python scripts/check_function_length.py --max 80 thinkscale/server thinkscale/cli.py

Prints one ``path:line name length`` per offender (nested functions and methods are checked too, each on its own;
their lines also count towards the function that contains them) and exits 1 when there is any, else 0.
Decorators are not counted: a long option list is in the signature, which is.
"""

from __future__ import annotations

import argparse
import ast
import sys
from collections.abc import Iterator
from pathlib import Path

DEFAULT_MAX_LINES = 100


def function_lengths(source: str, filename: str = "<string>") -> Iterator[tuple[int, str, int]]:
    """(line of ``def``, qualified name, length in lines) of every function and method in ``source``."""
    tree = ast.parse(source, filename=filename)

    def walk(node: ast.AST, prefix: str) -> Iterator[tuple[int, str, int]]:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef):
                name = f"{prefix}{child.name}"
                end = child.end_lineno if child.end_lineno is not None else child.lineno
                yield child.lineno, name, end - child.lineno + 1
                yield from walk(child, f"{name}.")
            elif isinstance(child, ast.ClassDef):
                yield from walk(child, f"{prefix}{child.name}.")
            else:
                yield from walk(child, prefix)

    yield from walk(tree, "")


def python_files(paths: list[Path]) -> Iterator[Path]:
    for p in paths:
        if p.is_dir():
            yield from sorted(f for f in p.rglob("*.py") if ".venv" not in f.parts and "__pycache__" not in f.parts)
        else:
            yield p


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("paths", nargs="*", type=Path, help="files or folders (default: thinkscale/)")
    parser.add_argument("--max", type=int, default=DEFAULT_MAX_LINES, dest="max_lines",
                        help=f"longest allowed function, in lines (default {DEFAULT_MAX_LINES})")
    args = parser.parse_args(argv)
    root = Path(__file__).resolve().parent.parent
    paths = args.paths or [root / "thinkscale"]
    offenders = 0
    for path in python_files(paths):
        for line, name, length in function_lengths(path.read_text(encoding="utf-8"), str(path)):
            if length > args.max_lines:
                full = path.resolve()
                shown = full.relative_to(root) if full.is_relative_to(root) else path
                print(f"{shown}:{line} {name} {length}")
                offenders += 1
    return 1 if offenders else 0


if __name__ == "__main__":
    sys.exit(main())
