"""`emokit ingest`: videos → clip windows in DATASET/manifest.parquet."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Annotated

import typer

from emokit.cli import app
from emokit.cli.common import (
    ConfigFile,
    Engine,
    Quiet,
    Strict,
    Verbose,
    Workers,
    fail,
    print_reasons,
    print_rejected,
    setup,
)
from emokit.data.ingest import InputError, ingest


@app.command("ingest")
def ingest_command(
    inputs: Annotated[list[Path], typer.Argument(help="Video files or folders (searched recursively).")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Dataset folder to create or resume.")],
    workers: Workers = None,
    engine: Engine = "local",
    config: ConfigFile = None,
    detector: Annotated[
        str | None, typer.Option("--detector", help="Scene detector: adaptive or content.")
    ] = None,
    replace: Annotated[
        bool,
        typer.Option("--replace", help="Start the manifest over instead of adding to an existing one."),
    ] = False,
    strict: Strict = False,
    verbose: Verbose = False,
    quiet: Quiet = False,
) -> None:
    """Find scenes in raw videos and cut them into 3-12 s clip windows.

    Example: emokit ingest ~/videos talk.mp4 -o data/mydataset --workers 4
    """
    recipe = setup(config, verbose, quiet)
    cfg = recipe.ingest if detector is None else dataclasses.replace(recipe.ingest, detector=detector)
    try:
        s = ingest(inputs, out, cfg, workers=workers, engine=engine, progress=not quiet, replace=replace)
    except (InputError, ValueError, RuntimeError, OSError) as e:
        fail(str(e), code=2)
    if s.replaced:
        typer.echo(f"--replace: {s.replaced} source(s) of the previous manifest dropped")
    if s.kept:
        typer.echo(f"added to the existing dataset: {s.kept} source(s) already in the manifest kept")
    typer.echo(
        f"{s.sources} videos ({s.cached} already done) -> {s.clips} clip windows, "
        f"{s.clip_seconds:.1f} s in the manifest; {len(s.rejected)} rejected\nmanifest: {s.manifest}"
    )
    print_reasons("rejected by reason:", s.rejected_by_reason)
    if s.rejected:
        typer.echo("rejected:")
        print_rejected(s.rejected)
    if s.clips == 0:
        fail("no usable clip windows were produced")
    if strict and s.rejected:
        fail(f"--strict: {len(s.rejected)} input(s) rejected")
