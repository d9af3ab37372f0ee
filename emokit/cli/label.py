"""`emokit label`: clip windows → 30 FPS face crops, pose, velocities, Wav2Vec tokens → shards."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Annotated, Any

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
    setup,
)


DROPS_SHOWN = 5  # windows whose dropped frames the summary spells out


@app.command("label")
def label_command(
    dataset: Annotated[Path, typer.Argument(help="Dataset folder made by `emokit ingest`.")],
    size: Annotated[int | None, typer.Option("--size", help="Crop side in pixels (default 512).")] = None,
    audio_model: Annotated[
        str | None,
        typer.Option(
            "--audio-model",
            help="Wav2Vec2 hub id or local folder (default facebook/wav2vec2-base-960h), or logmel "
            "(weight-free log-mel features: the CPU learn recipe).",
        ),
    ] = None,
    shard_size: Annotated[int | None, typer.Option("--shard-size", help="Clips per shard.")] = None,
    audio_device: Annotated[
        str,
        typer.Option(
            "--audio-device", help="Where Wav2Vec2 runs: auto (CUDA if available), cpu, cuda, cuda:N."
        ),
    ] = "auto",
    syncnet: Annotated[
        str | None,
        typer.Option("--syncnet", help="SyncNet weights (file, folder or hub id) for the A/V sync label."),
    ] = None,
    workers: Workers = None,
    engine: Engine = "local",
    config: ConfigFile = None,
    strict: Strict = False,
    verbose: Verbose = False,
    quiet: Quiet = False,
) -> None:
    """Crop faces at 30 FPS, estimate head pose and speed, embed audio; write Parquet shards.

    Example: emokit label data/mydataset --audio-model ./wav2vec2-base-960h --workers 2
    """
    from emokit.data.audio_model import AudioModelError
    from emokit.data.label import label  # heavy (mediapipe, av): import when the command runs

    recipe = setup(config, verbose, quiet)
    overrides: dict[str, Any] = {
        k: v
        for k, v in dict(size=size, audio_model=audio_model, shard_size=shard_size, syncnet=syncnet).items()
        if v is not None
    }
    cfg = dataclasses.replace(recipe.label, **overrides)
    bounds = (recipe.ingest.min_clip_s, recipe.ingest.max_clip_s)
    try:
        s = label(
            dataset,
            cfg,
            bounds,
            workers=workers,
            engine=engine,
            progress=not quiet,
            audio_device=audio_device,
        )
    except (AudioModelError, ValueError, RuntimeError, OSError) as e:
        fail(str(e), code=2)
    typer.echo(
        f"{s.windows} windows -> {s.clips} clips, {s.clip_seconds:.1f} s "
        f"({s.split_windows} windows split at jump cuts); {len(s.rejected)} rejected\n"
        f"shards: {s.shards_dir} ({s.shards_written} written, {s.shards_skipped} already done)"
    )
    if s.dropped_frames:
        typer.echo(
            f"jump cuts dropped {s.dropped_frames} frames ({s.dropped_frames / cfg.fps:.2f} s) "
            f"in {len(s.drop_reasons)} window(s):"
        )
        for parent, why in list(s.drop_reasons.items())[:DROPS_SHOWN]:
            typer.echo(f"  {parent}: {why}")
        if len(s.drop_reasons) > DROPS_SHOWN:
            typer.echo(f"  ... and {len(s.drop_reasons) - DROPS_SHOWN} more (shard column drop_reason)")
    if s.flags:
        typer.echo("flags: " + ", ".join(f"{k} {v}" for k, v in s.flags.most_common()))
    print_reasons("rejected by reason:", s.rejected_by_reason)
    if s.clips == 0:
        fail("no clip was labelled")
    if strict and s.rejected:
        fail(f"--strict: {len(s.rejected)} window(s) rejected")
