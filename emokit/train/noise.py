"""The training noise schedule, written next to every checkpoint so sampling uses the same betas."""

from __future__ import annotations

from pathlib import Path

from diffusers import DDPMScheduler

SCHEDULER_DIR = "scheduler"


PREDICTION_TYPES = ("epsilon", "v_prediction", "sample")


def training_scheduler(prediction_type: str = "epsilon", zero_terminal_snr: bool = False) -> DDPMScheduler:
    """SD1.5's training schedule (scaled-linear betas 0.00085-0.012, 1000 steps, eps prediction).

    EMO fine-tunes SD1.5 weights, which only denoise well under the schedule they were trained on.
    A model trained from scratch (the tiny presets) learns faster with ``v_prediction`` and a
    zero terminal SNR (Lin et al. 2024, "Common Diffusion Noise Schedules and Sample Steps are
    Flawed"): the last step then is pure noise, as sampling starts, and predicting v there means
    predicting the clean frame, not an eps whose error DDIM multiplies by 1/sqrt(alpha_bar) ≈ 15.
    """
    if prediction_type not in PREDICTION_TYPES:
        raise ValueError(f"prediction_type must be one of {PREDICTION_TYPES}, got {prediction_type!r}")
    if zero_terminal_snr and prediction_type == "epsilon":
        raise ValueError(
            "zero_terminal_snr needs prediction_type v_prediction or sample (eps is undefined at SNR 0)"
        )
    return DDPMScheduler(
        num_train_timesteps=1000,
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        prediction_type=prediction_type,
        rescale_betas_zero_snr=zero_terminal_snr,
        clip_sample=False,
        steps_offset=1,
    )


def load_scheduler(checkpoint: str | Path) -> DDPMScheduler:
    """The schedule a checkpoint folder was trained with (``checkpoint/scheduler``)."""
    folder = Path(checkpoint) / SCHEDULER_DIR
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder} not found (not an emokit checkpoint?)")
    return DDPMScheduler.from_pretrained(folder)
