"""`emokit evaluate`: PSNR/SSIM, mouth-motion correlation, A/V sync and head speed of a generated
video against a real one; FID/FVD/Sync-C/D/CSIM with user-supplied weights."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from emokit.cli import app
from emokit.cli.common import fail

_WEIGHTS = "local file or hub id; computed only when given"


def _fmt(x) -> str:
    if x is None:
        return "-"
    if isinstance(x, float):
        return f"{x:.4g}"
    if isinstance(x, dict):
        return " ".join(f"{k} {v:.3g}" for k, v in x.items())
    return str(x)


@app.command("evaluate")
def evaluate_command(
    generated: Annotated[Path, typer.Argument(help="The generated video (mp4).")],
    reference: Annotated[Path, typer.Option("--reference", "-r", help="The real video to compare with.")],
    audio: Annotated[
        Path | None, typer.Option("--audio", help="Speech it was generated from (default: its own track).")
    ] = None,
    out: Annotated[Path | None, typer.Option("--out", "-o", help="Write the report as JSON here.")] = None,
    syncnet: Annotated[str | None, typer.Option("--syncnet", help=f"SyncNet weights ({_WEIGHTS}).")] = None,
    inception: Annotated[
        str | None, typer.Option("--inception", help=f"Inception TorchScript for FID ({_WEIGHTS}).")
    ] = None,
    i3d: Annotated[str | None, typer.Option("--i3d", help=f"I3D TorchScript for FVD ({_WEIGHTS}).")] = None,
    arcface: Annotated[
        str | None, typer.Option("--arcface", help=f"ArcFace TorchScript for CSIM ({_WEIGHTS}).")
    ] = None,
) -> None:
    """Compare a generated talking-head video with a real one; print a table, optionally JSON.

    Example: emokit evaluate out.mp4 --reference real.mp4 --audio speech.wav -o report.json
    """
    from dataclasses import asdict

    from emokit.data.syncnet import SyncNetError
    from emokit.evaluate import EvaluateError, evaluate
    from emokit.evaluate.features import FeatureNetError

    try:
        report = evaluate(generated, reference, audio, syncnet, inception, i3d, arcface)
    except (EvaluateError, SyncNetError, FeatureNetError) as e:
        fail(str(e), code=2)
    rows = {k: v for k, v in asdict(report).items() if k not in ("generated", "reference", "notes")}
    width = max(map(len, rows))
    typer.echo(f"{report.generated} vs {report.reference}")
    for key, value in rows.items():
        typer.echo(f"  {key:<{width}}  {_fmt(value)}")
    for note in report.notes:
        typer.echo(f"  note: {note}")
    if out is not None:
        report.to_json(out)
        typer.echo(f"report: {out}")
