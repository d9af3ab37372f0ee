"""Training checkpoints: atomic folders, resume, and loading a trained run for inference.

Layout of one run (``RUN``)::

    RUN/stage{k}/step-00000500/   model/ (EMOModel.save_pretrained), ema/ema.safetensors,
                                  scheduler/, state.pt (optimizer + step), train.json
    RUN/stage{k}/final/           once the stage finished: an EMOPipeline folder (model_index.json,
                                  one diffusers folder per component, scheduler/) + train.json
    RUN/stage{k}/log.csv          step, loss, lr, seconds

A final folder's default weight files hold the EMA weights (what inference and the next stage use);
components that have EMA parameters also keep the raw training weights as the diffusers variant
``raw`` (``diffusion_pytorch_model.raw.safetensors``: ``EMOPipeline.from_pretrained(final,
variant="raw")``, ``load_checkpoint_model(final, ema=False)``). Step folders keep the one-file model
and the EMA subset: exact resume needs nothing else.

A checkpoint folder is written under a hidden temp name and renamed into place, so a run killed at
any moment leaves the previous checkpoint intact; older step folders are removed only after the new
one exists. Several files cannot be swapped at once in place, hence one folder per checkpoint.

Integrity: ``train.json`` lists the SHA-256 of every other file of its folder; loading verifies
them and checks the weights are finite, so a damaged file is one line naming it, never a silent
NaN model. The two newest step folders are kept, so a corrupt latest one falls back to the one
before it (with a warning); a corrupt ``final`` is not taken as a finished stage.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from diffusers import DDPMScheduler
from safetensors.torch import save_file

# CheckpointError: one error type for every unusable checkpoint
from emokit.data.atomic import fsync_dir
from emokit.models import CheckpointError, EMOConfig, EMOModel, read_config
from emokit.models.parts import RAW_VARIANT, load_parts, part_of, read_parts_config, split_model, weights_file
from emokit.models.pretrained import load_tensors
from emokit.train.noise import SCHEDULER_DIR

log = logging.getLogger(__name__)

FINAL = "final"
KEEP_STEPS = 2  # step folders kept: the latest and one to fall back to when it is damaged
HASHES = "sha256"  # train.json key: relative path -> SHA-256 of every other file of the folder
STEP_PREFIX = "step-"
TMP_PREFIX = ".tmp-"
MODEL_DIR, EMA_FILE, STATE_FILE, INFO_FILE = "model", "ema/ema.safetensors", "state.pt", "train.json"
PIPELINE_INDEX = "model_index.json"  # diffusers' pipeline index: a final folder in the pipeline layout


def stage_dir(run_dir: str | Path, stage: int) -> Path:
    return Path(run_dir) / f"stage{stage}"


def step_name(step: int) -> str:
    return f"{STEP_PREFIX}{step:08d}"


def latest_checkpoint(sdir: Path) -> Path | None:
    """The newest complete step folder of a stage (temp folders are never complete)."""
    steps = sorted(p for p in sdir.glob(f"{STEP_PREFIX}*") if p.is_dir() and (p / INFO_FILE).is_file())
    return steps[-1] if steps else None


def final_checkpoint(run_dir: str | Path, stage: int) -> Path | None:
    path = stage_dir(run_dir, stage) / FINAL
    return path if (path / INFO_FILE).is_file() else None


def read_info(checkpoint: Path) -> dict[str, Any]:
    return json.loads((checkpoint / INFO_FILE).read_text(encoding="utf-8"))


def write_checkpoint(
    dest: Path,
    model: EMOModel,
    ema: dict[str, torch.Tensor],
    scheduler: DDPMScheduler,
    info: dict[str, Any],
    state: dict[str, Any] | None = None,
) -> Path:
    """Write a whole checkpoint folder at ``dest`` atomically (temp folder, then rename).

    ``train.json`` is written last, so a folder is complete exactly when it is visible under its
    final name; an existing ``dest`` is replaced only after the new one is fully on disk.
    """
    tmp = dest.parent / f"{TMP_PREFIX}{dest.name}-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    if dest.name == FINAL:
        _write_pipeline(tmp, model, ema, scheduler, int(info.get("stage", 3)))
    else:
        model.save_pretrained(tmp / MODEL_DIR)
        (tmp / EMA_FILE).parent.mkdir()
        save_file({k: v.detach().contiguous().cpu() for k, v in ema.items()}, tmp / EMA_FILE)
        scheduler.save_pretrained(tmp / SCHEDULER_DIR)
    if state is not None:
        torch.save(state, tmp / STATE_FILE)
    info = {**info, HASHES: file_hashes(tmp)}
    (tmp / INFO_FILE).write_text(json.dumps(info, indent=2), encoding="utf-8")
    _fsync_tree(tmp)
    if dest.exists():  # same name again: move the old one aside first, drop it after the swap
        old = dest.parent / f"{TMP_PREFIX}old-{dest.name}-{os.getpid()}"
        os.replace(dest, old)
        os.replace(tmp, dest)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, dest)
    fsync_dir(dest.parent)
    return dest


def _write_pipeline(
    folder: Path, model: EMOModel, ema: dict[str, torch.Tensor], scheduler: DDPMScheduler, stage: int
) -> None:
    """A finished stage as an EMOPipeline folder: EMA weights as the default files, the raw ones
    as variant ``raw`` of the components that have EMA parameters."""
    from emokit.pipeline import EMOPipeline  # the pipeline imports the generator, which imports us

    parts = split_model(model)
    for name in sorted({part_of(n) for n in ema}):
        parts[name].save_pretrained(folder / name, variant=RAW_VARIANT)
    with _ema_applied(model, ema):
        EMOPipeline.from_model(model, scheduler, trained_stage=stage).save_pretrained(folder)


@contextlib.contextmanager
def _ema_applied(model: EMOModel, ema: dict[str, torch.Tensor]) -> Iterator[None]:
    """``model`` with its EMA weights for the duration of the block, its own weights after."""
    params = dict(model.named_parameters())
    raw = {name: params[name].detach().clone() for name in ema if name in params}
    apply_ema(model, ema)
    try:
        yield
    finally:
        apply_ema(model, raw)


def is_pipeline(checkpoint: Path) -> bool:
    """Whether a checkpoint folder is a finished stage in the EMOPipeline layout."""
    return (checkpoint / PIPELINE_INDEX).is_file()


def _fsync_tree(folder: Path) -> None:
    """Flush file contents before the rename publishes them (a crash must not expose empty files)."""
    for path in folder.rglob("*"):
        if path.is_file():
            with open(path, "rb") as f:
                os.fsync(f.fileno())


def prune(sdir: Path, keep: Path | None) -> None:
    """Remove temp folders of killed runs and old step folders: ``keep`` and the newest one
    before it stay (``KEEP_STEPS``), to fall back to if ``keep`` is damaged; ``keep=None``
    (the stage finished) removes every step folder."""
    for path in sdir.glob(f"{TMP_PREFIX}*"):
        shutil.rmtree(path, ignore_errors=True)
    steps = sorted(p for p in sdir.glob(f"{STEP_PREFIX}*") if p.is_dir())
    older = [] if keep is None else [p for p in steps if p.name < keep.name][-(KEEP_STEPS - 1) :]
    for path in steps:
        if keep is None or (path.name != keep.name and path not in older):
            shutil.rmtree(path, ignore_errors=True)


def file_hashes(folder: Path) -> dict[str, str]:
    """SHA-256 of every file under ``folder`` except train.json, by relative POSIX path."""
    return {
        p.relative_to(folder).as_posix(): _sha256(p)
        for p in sorted(folder.rglob("*"))
        if p.is_file() and p.name != INFO_FILE
    }


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


_verified: set[tuple[str, int]] = set()  # (folder, train.json mtime): hashed once per process


def verify_checkpoint(checkpoint: Path) -> None:
    """Raise CheckpointError naming the first file of ``checkpoint`` that is missing or differs
    from the SHA-256 its train.json recorded (folders written before checksums pass)."""
    info_path = checkpoint / INFO_FILE
    try:
        key = (str(checkpoint.resolve()), info_path.stat().st_mtime_ns)
        info = json.loads(info_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CheckpointError(f"{info_path}: unreadable checkpoint info ({e})") from None
    if key in _verified:
        return
    for rel, digest in (info.get(HASHES) or {}).items():
        path = checkpoint / rel
        try:
            ok = _sha256(path) == digest
        except OSError as e:
            raise CheckpointError(f"{path}: missing or unreadable checkpoint file ({e.strerror})") from None
        if not ok:
            raise CheckpointError(f"{path}: checksum mismatch, the checkpoint file is corrupt")
    _verified.add(key)


def check_finite(tensors: dict[str, torch.Tensor], path: Path) -> None:
    """Refuse weights with NaN/inf: they give black videos or NaN losses, never an error."""
    for name, value in tensors.items():
        if value.is_floating_point() and not bool(torch.isfinite(value).all()):
            raise CheckpointError(f"{path}: weight {name} has NaN or infinite values")


def usable_checkpoint(checkpoint: Path) -> bool:
    """Whether ``checkpoint`` verifies; a damaged one is a warning naming its file."""
    try:
        verify_checkpoint(checkpoint)
    except CheckpointError as e:
        log.warning("%s; not using it", e)
        return False
    return True


def latest_usable_checkpoint(sdir: Path) -> Path | None:
    """The newest step folder that verifies, falling back past damaged ones with a warning;
    CheckpointError when step folders exist but none verifies (nothing is silently restarted)."""
    steps = sorted(p for p in sdir.glob(f"{STEP_PREFIX}*") if p.is_dir() and (p / INFO_FILE).is_file())
    for path in reversed(steps):
        if usable_checkpoint(path):
            return path
    if steps:
        raise CheckpointError(
            f"{sdir}: every step checkpoint is damaged ({', '.join(p.name for p in steps)})"
        )
    return None


def verified_final(run_dir: str | Path, stage: int) -> Path | None:
    """The stage's final folder if it verifies; None when there is none, or when it is damaged
    and a step folder is left to resume from (a warning names the file). Damaged with nothing to
    resume from: CheckpointError (the user decides whether to train the stage again)."""
    final = final_checkpoint(run_dir, stage)
    if final is None or usable_checkpoint(final):
        return final
    if latest_checkpoint(stage_dir(run_dir, stage)) is None:
        verify_checkpoint(final)  # raises the one-line reason naming the damaged file
    return None


def load_ema(checkpoint: Path) -> dict[str, torch.Tensor]:
    path = checkpoint / EMA_FILE
    if not path.is_file():
        return {}
    verify_checkpoint(checkpoint)
    try:
        ema = load_tensors(path)
    except Exception as e:  # noqa: BLE001 — safetensors raises its own error types
        raise CheckpointError(f"{path}: unreadable weights ({e})") from None
    check_finite(ema, path)
    return ema


def load_state(checkpoint: Path, device: torch.device | str = "cpu") -> dict[str, Any]:
    """Optimizer state and step of a step checkpoint (plain tensors and numbers only)."""
    verify_checkpoint(checkpoint)
    return torch.load(checkpoint / STATE_FILE, map_location=device, weights_only=True)


def apply_ema(model: EMOModel, ema: dict[str, torch.Tensor]) -> None:
    """Copy EMA weights (a subset of the model's parameters, by name) into ``model``."""
    params = dict(model.named_parameters())
    unknown = sorted(set(ema) - set(params))
    if unknown:
        raise CheckpointError(f"EMA weights name parameters the model lacks: {unknown[:3]}")
    with torch.no_grad():
        for name, value in ema.items():
            params[name].copy_(value.to(params[name].device, params[name].dtype))


def load_checkpoint_model(checkpoint: Path, ema: bool = True) -> EMOModel:
    """The model of a checkpoint folder, with its EMA weights applied when ``ema``."""
    verify_checkpoint(checkpoint)
    if is_pipeline(checkpoint):  # a finished stage: EMA weights are the default files
        variant = None if ema else RAW_VARIANT
        model = load_parts(checkpoint, variant=variant)
        for name, part in split_model(model).items():
            own = variant if (checkpoint / name / weights_file(variant)).is_file() else None
            check_finite(dict(part.named_parameters()), checkpoint / name / weights_file(own))
        return model
    model = EMOModel.from_pretrained(checkpoint / MODEL_DIR)
    check_finite(dict(model.named_parameters()), checkpoint / MODEL_DIR)
    if ema:
        apply_ema(model, load_ema(checkpoint))
    return model


def inference_config(run_dir: str | Path) -> EMOConfig:
    """The model config :func:`load_for_inference` would load, without reading weights."""
    if not Path(run_dir).is_dir():
        raise CheckpointError(f"checkpoint not found: {run_dir}")
    stage = latest_finished_stage(run_dir)
    if stage is None or (final := final_checkpoint(run_dir, stage)) is None:
        raise CheckpointError(f"{run_dir}: no finished stage (run `emokit train ... --stage 1`)")
    return read_parts_config(final) if is_pipeline(final) else read_config(final / MODEL_DIR)


def latest_finished_stage(run_dir: str | Path) -> int | None:
    stages = [k for k in (3, 2, 1) if final_checkpoint(run_dir, k) is not None]
    return stages[0] if stages else None


def load_for_inference(run_dir: str | Path, stage: int | None = None, ema: bool = True) -> EMOModel:
    """The trained model of a run: its latest finished stage (or ``stage``), EMA weights, eval mode.

    Each stage starts from the previous stage's EMA weights, so the last stage's folder already
    holds every part the way inference should see it.
    """
    run_dir = Path(run_dir)
    stage = latest_finished_stage(run_dir) if stage is None else stage
    checkpoint = final_checkpoint(run_dir, stage) if stage is not None else None
    if checkpoint is None:
        what = f"stage {stage}" if stage is not None else "any stage"
        raise CheckpointError(
            f"{run_dir} has no finished {what} (train with `emokit train DATASET --stage 1 -o {run_dir}`)"
        )
    return load_checkpoint_model(checkpoint, ema=ema).eval()


# Settings a run may change when it resumes or reruns a finished stage: how long and how often it
# logs or saves, and memory/speed-only switches. Every other TrainConfig field changes what is learned.
RESUMABLE_CHANGES = frozenset(
    {
        "max_steps",
        "checkpoint_every",
        "log_every",
        "log_with",
        "sample_every",
        "sample_steps",
        "sample_frames",
        "gradient_checkpointing",
    }
)


def recipe_changes(info: dict[str, Any], train_config: dict[str, Any]) -> list[str]:
    """What ``train_config`` changes against the settings a checkpoint was trained with ("key
    old → new"), ignoring RESUMABLE_CHANGES and keys one side does not know (older runs): a finished
    stage or a resume under another recipe would otherwise hand back weights that recipe never made."""
    saved = info.get("train_config") or {}
    return [
        f"{k} {saved[k]!r} → {v!r}"
        for k, v in train_config.items()
        if k in saved and k not in RESUMABLE_CHANGES and _norm(saved[k]) != _norm(v)
    ]


def check_recipe(checkpoint: Path | None, train_config: dict[str, Any]) -> None:
    """Refuse to resume or rerun ``checkpoint`` (None: nothing to check) under other settings."""
    changes = recipe_changes(read_info(checkpoint), train_config) if checkpoint else []
    if changes:
        raise CheckpointError(
            f"{checkpoint} was trained with other settings ({'; '.join(changes)}): train into a new "
            "-o folder, or rerun with the settings it was trained with"
        )


def _norm(v: Any) -> Any:
    return list(v) if isinstance(v, (list, tuple)) else v
