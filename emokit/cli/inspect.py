"""`emokit inspect`: contact sheet, pose plots and a table of a dataset."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from emokit.cli import app
from emokit.cli.common import fail


@app.command("inspect")
def inspect_command(
    dataset: Annotated[Path, typer.Argument(help="Dataset folder (after ingest, ideally label).")],
    out: Annotated[Path | None, typer.Option("--out", "-o", help="Where PNGs go.")] = None,
) -> None:
    """Look at a dataset: a table of clips (source, time span, flags), a PNG contact sheet with
    the crop on the source frame and face boxes, and pose/speed plots.

    Example: emokit inspect data/mydataset
    """
    from emokit.data.inspect import clip_table, inspect_dataset

    try:
        r = inspect_dataset(dataset, out)
    except (ValueError, OSError) as e:
        fail(str(e), code=2)
    for line in clip_table(r.clips):
        typer.echo(line)
    for m in r.rejected_inputs:
        typer.echo(f"input rejected: {m['source_path']}: {m['reason']}")
    if r.contact_sheet:
        typer.echo(f"contact sheet: {r.contact_sheet}\npose plots:    {r.pose_plot}")
    else:
        typer.echo("no labelled clips yet: run `emokit label` for the contact sheet and plots")
