"""One line per field error of a pydantic validation, each naming where it was (``sweep.toml: budgets: ...``): how
every strict config of the package (sweep files, auto policies) reports what is wrong with it."""

from __future__ import annotations

from pydantic import ValidationError


def format_validation_error(e: ValidationError, where: str) -> str:
    lines = []
    for err in e.errors():
        loc = ".".join(str(x) for x in err["loc"]) or "(top level)"
        lines.append(f"{where}: {loc}: {err['msg']}")
    return "\n".join(lines)
