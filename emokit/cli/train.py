"""`emokit train`: one EMO training stage over label shards; rerun to resume."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from emokit.cli import app
from emokit.cli.common import ConfigFile, Quiet, Verbose, Workers, fail, setup


@app.command("train")
def train_command(
    dataset: Annotated[Path, typer.Argument(help="Dataset folder with shards/ (from `emokit label`).")],
    stage: Annotated[int, typer.Option("--stage", help="EMO stage: 1 images, 2 video+audio, 3 speed.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Run folder (created, or resumed).")],
    preset: Annotated[
        str | None,
        typer.Option("--preset", help="Model size: tiny, tiny-face (learns one face on CPU) or sd15."),
    ] = None,
    init: Annotated[
        str | None, typer.Option("--init", help="Stage 1: diffusers SD1.5 folder or hub id.")
    ] = None,
    motion_adapter: Annotated[
        str | None,
        typer.Option("--motion-adapter", help="Stage 1: AnimateDiff MotionAdapter folder or hub id."),
    ] = None,
    max_steps: Annotated[int | None, typer.Option("--max-steps", help="Steps of this stage.")] = None,
    batch_size: Annotated[int | None, typer.Option("--batch-size", help="Clips per GPU.")] = None,
    lr: Annotated[float | None, typer.Option("--lr", help="AdamW learning rate (EMO: 1e-5).")] = None,
    checkpoint_every: Annotated[
        int | None, typer.Option("--checkpoint-every", help="Steps between checkpoints.")
    ] = None,
    time_limit: Annotated[
        float | None,
        typer.Option("--time-limit", help="Minutes; then the stage ends, finished at the step reached."),
    ] = None,
    cache_latents: Annotated[
        bool | None,
        typer.Option(
            "--cache-latents/--no-cache-latents",
            help="Encode each clip's frames with the VAE once (DATASET/latents) instead of every step.",
        ),
    ] = None,
    grad_accum: Annotated[
        int | None,
        typer.Option(
            "--grad-accum", help="Micro-batches per optimizer step (batch = GPUs x batch-size x this)."
        ),
    ] = None,
    warmup_steps: Annotated[
        int | None, typer.Option("--warmup-steps", help="Linear learning-rate warm-up over N steps.")
    ] = None,
    mixed_precision: Annotated[
        str | None,
        typer.Option(
            "--mixed-precision", help="auto (bf16 on a bf16 GPU, else fp32), no, fp16 (CUDA) or bf16."
        ),
    ] = None,
    log_with: Annotated[
        str | None,
        typer.Option("--log-with", help="tensorboard (RUN/tensorboard) and/or wandb, comma-separated."),
    ] = None,
    sample_every: Annotated[
        int | None,
        typer.Option(
            "--sample-every", help="Every K steps a sample of the validation clip (RUN/stageN/samples)."
        ),
    ] = None,
    device: Annotated[str, typer.Option("--device", help="auto, cpu or cuda.")] = "auto",
    workers: Workers = None,
    config: ConfigFile = None,
    verbose: Verbose = False,
    quiet: Quiet = False,
) -> None:
    """Train one EMO stage; stage k+1 starts from stage k in the same run folder.

    Example: emokit train data/mydataset --stage 1 --preset tiny -o runs/demo --max-steps 200

    Multi-GPU: accelerate launch --multi_gpu --num_processes 8 -m emokit train DATA --stage 2 -o RUN
    """
    recipe = setup(config, verbose, quiet)
    from emokit.train.checkpoint import CheckpointError
    from emokit.train.dataset import DatasetError
    from emokit.train.loop import TrainError, train, with_overrides

    cfg = with_overrides(
        recipe.train,
        preset=preset,
        max_steps=max_steps,
        batch_size=batch_size,
        lr=lr,
        checkpoint_every=checkpoint_every,
        cache_latents=cache_latents,
        grad_accum=grad_accum,
        warmup_steps=warmup_steps,
        mixed_precision=mixed_precision,
        log_with=log_with,
        sample_every=sample_every,
    )
    try:
        r = train(
            dataset,
            out,
            stage,
            cfg,
            init=init,
            motion_adapter=motion_adapter,
            device=device,
            workers=workers,
            progress=not quiet,
            log=(lambda _: None) if quiet else typer.echo,
            time_limit_s=None if time_limit is None else time_limit * 60,
        )
    except (TrainError, DatasetError, CheckpointError, ValueError, OSError) as e:
        fail(str(e), code=2)
    if not r.main:  # other ranks of a multi-process run stay quiet
        return
    if r.already_finished:
        typer.echo(f"stage {stage} already finished at step {r.step}: {r.final}")
        return
    resumed = f", resumed from step {r.start_step}" if r.start_step else ""
    trained = r.step - r.start_step
    rate = f", {r.seconds / trained:.2f} s/step" if trained else ""
    last = f", last loss {r.losses[-1]:.4f}" if r.losses else ""
    typer.echo(
        f"stage {stage}: step {r.step}{resumed}{last} in {r.seconds:.1f} s{rate} "
        f"({r.world_size} process(es))\nfinal: {r.final}"
    )
