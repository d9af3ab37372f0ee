"""`emokit generate`: animate one portrait with a speech track → mp4."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from emokit.cli import app
from emokit.cli.common import ConfigFile, Quiet, Verbose, fail, setup


@app.command("generate")
def generate_command(
    portrait: Annotated[Path, typer.Argument(help="Portrait image (any format Pillow reads).")],
    audio: Annotated[Path, typer.Argument(help="Speech or singing: any audio/video file with sound.")],
    checkpoint: Annotated[
        Path,
        typer.Option(
            "--checkpoint",
            help="Run folder from `emokit train` (-o RUN), an EMOPipeline folder or a hub id.",
        ),
    ],
    out: Annotated[Path, typer.Option("--out", "-o", help="Output mp4 (written only when complete).")],
    steps: Annotated[
        int | None, typer.Option("--steps", help="Sampling steps (EMO: 40 DDIM; DPM-Solver++/UniPC: ~20).")
    ] = None,
    scheduler: Annotated[
        str | None,
        typer.Option(
            "--scheduler",
            help="ddim (EMO, default), ddpm (ancestral: fresh noise every step), dpmpp (DPM-Solver++), "
            "unipc or euler.",
        ),
    ] = None,
    cfg: Annotated[
        float | None, typer.Option("--cfg", help="Classifier-free guidance scale (1 = off).")
    ] = None,
    guidance: Annotated[
        str | None,
        typer.Option(
            "--guidance",
            help="What CFG's unconditional branch drops: both (reference + audio, EMO) or audio.",
        ),
    ] = None,
    seed: Annotated[int | None, typer.Option("--seed", help="Noise seed: same seed, same video.")] = None,
    speed: Annotated[
        float | None,
        typer.Option(
            "--speed",
            help="Head rotation speed, degrees per frame (speed layers: needs a run with stage 3).",
        ),
    ] = None,
    size: Annotated[
        int | None, typer.Option("--size", help="Output side in pixels (default: the checkpoint's).")
    ] = None,
    audio_model: Annotated[
        str | None,
        typer.Option(
            "--audio-model",
            help="The audio model the run was trained with: wav2vec2 hub id or local folder, or logmel.",
        ),
    ] = None,
    device: Annotated[str, typer.Option("--device", help="auto, cpu, cuda or cuda:N.")] = "auto",
    dtype: Annotated[str | None, typer.Option("--dtype", help="auto, float32, float16 or bfloat16.")] = None,
    config: ConfigFile = None,
    verbose: Verbose = False,
    quiet: Quiet = False,
) -> None:
    """Generate a talking-head video as long as the audio, with the audio muxed in.

    Example: emokit generate me.jpg speech.wav --checkpoint runs/emo -o me_talking.mp4
    """
    recipe = setup(config, verbose, quiet)
    import torch

    from emokit.data.audio import AudioError
    from emokit.data.wav2vec import open_audio_encoder
    from emokit.generate.generator import Speech, resolve_dtype
    from emokit.generate.portrait import load_portrait
    from emokit.generate.schedulers import check_scheduler_name
    from emokit.pipeline import load_pipeline
    from emokit.train.checkpoint import inference_config, latest_finished_stage

    g, lab = recipe.generate, recipe.label
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        check_scheduler_name(scheduler or g.scheduler)  # a typo fails before anything loads
        # Cheap inputs first: a bad portrait or audio fails before the model loads. Portrait
        # warnings (several faces, small face) are logged as they are found. A run folder is
        # checked from its config files; a pipeline folder or hub id loads first.
        pipe = None
        if checkpoint.is_dir() and any(checkpoint.glob("stage*")):  # a run folder
            trained = inference_config(checkpoint)  # a run with no finished stage fails here
            stage = latest_finished_stage(checkpoint) or 1
        else:
            pipe = load_pipeline(str(checkpoint), progress=not quiet)
            trained, stage = pipe.model.config, int(pipe.config.trained_stage)
        if speed is not None and stage < 3:
            # An error, not a warning: the user asked for a head speed this model cannot follow
            # (only stage 3 trains the speed layers); a video made without it would look like a
            # success in a batch script.
            fail(
                f"--speed needs a run trained through stage 3 (speed layers); {checkpoint} ends "
                f"at stage {stage}: run `emokit train DATASET --stage 3 -o {checkpoint}` or drop --speed",
                code=2,
            )
        if not (size or g.size):  # 0 = the resolution the checkpoint was trained at
            size = trained.sample_size * trained.vae_factor
        face = load_portrait(
            portrait,
            size=size or g.size,
            crop_scale=lab.crop_scale,
            detect_width=lab.detect_width,
            min_confidence=lab.min_face_confidence,
        )
        speech = Speech.load(audio)
        if pipe is None:
            pipe = load_pipeline(checkpoint, progress=not quiet)
        from diffusers.utils import logging as diffusers_logging

        # diffusers 0.42 warns "modules that should be kept in float32: []" on every dtype cast,
        # even with no such module (a line per component, six per generate): errors only while casting.
        level = diffusers_logging.get_verbosity()
        diffusers_logging.set_verbosity_error()
        try:
            pipe.to(device=device, dtype=resolve_dtype(dtype or g.dtype, torch.device(device)))
        finally:
            diffusers_logging.set_verbosity(level)
        pipe.set_audio_encoder(
            open_audio_encoder(
                audio_model or lab.audio_model,
                layers=lab.audio_layers,
                device=device,
                chunk_s=lab.audio_chunk_s,
                overlap_s=lab.audio_overlap_s,
                precision=lab.audio_precision,
            )
        )
        r = pipe(
            face,
            speech,
            out,
            num_inference_steps=steps or g.steps,
            guidance_scale=g.cfg if cfg is None else cfg,
            seed=g.seed if seed is None else seed,
            speed=g.speed if speed is None else speed,
            frames=g.frames,
            motion_frames=g.motion_frames,
            timestep_spacing=g.timestep_spacing,
            crf=g.crf,
            progress=not quiet,
            scheduler=scheduler or g.scheduler,
            guidance=guidance or g.guidance,
        )
    except (ValueError, AudioError, OSError) as e:
        fail(" ".join(str(e).split()))
    typer.echo(
        f"{r.out_path}: {r.frames} frames at {r.fps} FPS ({r.audio_seconds:.2f} s of audio), "
        f"{r.size}x{r.size}, {r.clips} clips x {r.steps} steps, cfg {r.cfg:g}, seed {r.seed}, "
        f"sampler {scheduler or g.scheduler}; "
        f"{r.seconds:.1f} s ({r.seconds / r.frames:.3f} s/frame)"
    )
