"""Experiment trackers for `emokit train --log-with`: accelerate's own TensorBoard and W&B
trackers, configured for a run folder (rank 0 writes; accelerate's ``log`` is main-process only).

TensorBoard writes through tensorboardX when the ``tensorboard`` package is absent (accelerate's
fallback), to RUN/tensorboard/stage{k}: ``tensorboard --logdir RUN/tensorboard`` shows the stages
side by side. A resumed stage purges events past the checkpoint's step, as log.csv drops its
rows. W&B runs offline unless an API key is configured and the Hub is not offline.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path
from typing import Any

import numpy as np

from accelerate.tracking import GeneralTracker, TensorBoardTracker, WandBTracker

TRACKERS = ("tensorboard", "wandb")
PROJECT = "emokit"


class TrackerError(ValueError):
    """A --log-with value that cannot be used here (unknown name, package not installed)."""


def parse_log_with(value: str) -> tuple[str, ...]:
    """ "" → (), "tensorboard,wandb" → both; unknown names are an error."""
    names = tuple(dict.fromkeys(n.strip() for n in value.split(",") if n.strip()))
    unknown = [n for n in names if n not in TRACKERS]
    if unknown:
        raise TrackerError(f"--log-with takes {', '.join(TRACKERS)} (comma-separated), got {unknown[0]!r}")
    return names


def check_installed(names: tuple[str, ...]) -> None:
    """One line naming the missing package, before any training starts."""
    need = {"tensorboard": ("tensorboard", "tensorboardX"), "wandb": ("wandb",)}
    for name in names:
        if not any(importlib.util.find_spec(m) for m in need[name]):
            pkg = "tensorboardX" if name == "tensorboard" else "wandb"
            raise TrackerError(f"--log-with {name} needs the {pkg} package: pip install {pkg}")


def wandb_mode() -> str:
    """WANDB_MODE when set; else "offline" without an API key or with HF_HUB_OFFLINE, "online" otherwise."""
    if os.environ.get("WANDB_MODE"):
        return os.environ["WANDB_MODE"]
    offline_hub = os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on")
    netrc = Path(os.environ.get("NETRC", Path.home() / ".netrc"))
    has_key = bool(os.environ.get("WANDB_API_KEY")) or (
        netrc.is_file() and "api.wandb.ai" in netrc.read_text(errors="replace")
    )
    return "offline" if offline_hub or not has_key else "online"


def make_trackers(names: tuple[str, ...], run_dir: Path, stage: int, start: int) -> list[GeneralTracker]:
    """Tracker instances for ``Accelerator(log_with=...)``; ``start`` is the step a resumed stage
    continues from (TensorBoard drops its events after it)."""
    check_installed(names)
    out: list[GeneralTracker] = []
    for name in names:
        if name == "tensorboard":
            kwargs: dict[str, Any] = {"flush_secs": 30}
            if start:
                kwargs["purge_step"] = start + 1
            out.append(TensorBoardTracker(f"stage{stage}", run_dir / "tensorboard", **kwargs))
        else:
            out.append(
                WandBTracker(
                    PROJECT,
                    name=f"{run_dir.name}-stage{stage}",
                    dir=str(run_dir),
                    mode=wandb_mode(),
                )
            )
    return out


def flat_config(values: dict[str, Any]) -> dict[str, bool | int | float | str]:
    """Config values TensorBoard's hparams accept (scalars and strings; sequences joined)."""
    return {
        k: v
        if isinstance(v, bool | int | float | str)
        else ",".join(map(str, v))
        if isinstance(v, tuple | list)
        else str(v)
        for k, v in values.items()
    }


def log_image(acc: Any, name: str, image: np.ndarray, step: int) -> None:
    """An RGB uint8 [h, w, 3] image to every tracker that takes images (rank 0 only)."""
    if not acc.is_main_process:
        return
    for tracker in acc.trackers:
        if isinstance(tracker, TensorBoardTracker):
            tracker.log_images({name: image[None]}, step, dataformats="NHWC")
        elif isinstance(tracker, WandBTracker):
            tracker.log_images({name: [image]}, step)


def finish_trackers(acc: Any) -> None:
    """Close the trackers (rank 0's files flushed). Not ``Accelerator.end_training``: that also
    destroys the process group, which a caller training the next stage in-process still needs."""
    if acc.is_main_process:
        for tracker in acc.trackers:
            tracker.finish()
