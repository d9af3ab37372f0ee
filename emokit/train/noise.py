"""The training noise schedule, written next to every checkpoint so sampling uses the same betas."""

from __future__ import annotations

from pathlib import Path

from diffusers import DDPMScheduler

SCHEDULER_DIR = "scheduler"


def training_scheduler() -> DDPMScheduler:
    """SD1.5's training schedule (scaled-linear betas 0.00085-0.012, 1000 steps, eps prediction).

    EMO fine-tunes SD1.5 weights, which only denoise well under the schedule they were trained on.
    """
    return DDPMScheduler(
        num_train_timesteps=1000,
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        prediction_type="epsilon",
        clip_sample=False,
        steps_offset=1,
    )


def load_scheduler(checkpoint: str | Path) -> DDPMScheduler:
    """The schedule a checkpoint folder was trained with (``checkpoint/scheduler``)."""
    folder = Path(checkpoint) / SCHEDULER_DIR
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder} not found (not an emokit checkpoint?)")
    return DDPMScheduler.from_pretrained(folder)
