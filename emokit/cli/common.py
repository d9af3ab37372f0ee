"""Options and output helpers every command shares, so flags mean the same everywhere."""

from __future__ import annotations

import logging
from collections import Counter
from pathlib import Path
from typing import Annotated, NoReturn

import typer

from emokit.config import Recipe, load_recipe

Workers = Annotated[
    int | None, typer.Option("--workers", "-w", help="Parallel processes (default: CPU cores).")
]
Engine = Annotated[str, typer.Option("--engine", help="Executor: local (process pool) or ray.")]
ConfigFile = Annotated[
    Path | None, typer.Option("--config", help="Recipe TOML overriding defaults (see pipelines/).")
]
Strict = Annotated[bool, typer.Option("--strict", help="Exit non-zero if any input is rejected.")]
Verbose = Annotated[bool, typer.Option("--verbose", "-v", help="Debug logging.")]
Quiet = Annotated[bool, typer.Option("--quiet", "-q", help="No progress bars; summary only.")]


def fail(message: str, code: int = 1) -> NoReturn:
    """Print one clear line to stderr and exit."""
    typer.echo(f"error: {' '.join(str(message).split())}", err=True)
    raise typer.Exit(code)


def setup(config: Path | None, verbose: bool, quiet: bool) -> Recipe:
    """Logging level and recipe for a command; a bad recipe file is a usage error (exit 2)."""
    level = logging.DEBUG if verbose else logging.WARNING if quiet else logging.INFO
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    try:
        return load_recipe(config)
    except ValueError as e:
        fail(str(e), code=2)


def print_rejected(rejected: dict[str, str], limit: int = 20) -> None:
    """One line per rejected input: path and reason."""
    for i, (path, reason) in enumerate(sorted(rejected.items())):
        if i == limit:
            typer.echo(f"  ... and {len(rejected) - limit} more (see the manifest)")
            break
        typer.echo(f"  {path}: {reason}")


def print_reasons(title: str, reasons: Counter[str]) -> None:
    """A small table of rejection reasons and counts."""
    if not reasons:
        return
    typer.echo(title)
    width = max(len(r) for r in reasons)
    for reason, n in reasons.most_common():
        typer.echo(f"  {reason:<{width}}  {n:>5}")
