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
    """Look at a dataset: PNG contact sheet with face boxes, pose/velocity plots, flag counts.

    Example: emokit inspect data/mydataset
    """
    from emokit.data.inspect import inspect_dataset

    try:
        r = inspect_dataset(dataset, out)
    except (ValueError, OSError) as e:
        fail(str(e), code=2)
    typer.echo(f"{'clip':<12} {'status':<8} {'secs':>5} {'faces':>5} {'vel':>5}  flags / reason")
    for c in r.clips:
        if c["status"] == "ok":
            vel = sum(c["velocity"]) / max(1, len(c["velocity"]))
            typer.echo(
                f"{c['clip_id'][:12]:<12} {'ok':<8} {c['num_frames'] / c['fps']:5.1f} "
                f"{c['max_faces']:5d} {vel:5.2f}  {' '.join(c['flags'])}"
            )
        else:
            typer.echo(f"{c['clip_id'][:12]:<12} {'rejected':<8} {'':>5} {'':>5} {'':>5}  {c['reason']}")
    for m in r.rejected_inputs:
        typer.echo(f"input rejected: {m['source_path']}: {m['reason']}")
    if r.contact_sheet:
        typer.echo(f"contact sheet: {r.contact_sheet}\npose plots:    {r.pose_plot}")
    else:
        typer.echo("no labelled clips yet: run `emokit label` for the contact sheet and plots")
