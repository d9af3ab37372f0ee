"""Cached VAE latents for training: each clip's frames encoded once, not at every step.

A training step otherwise decodes 16 frames + the reference from H.264 and runs the VAE encoder on
all 17 at full resolution (at 512² that is a large share of the step). The cache stores, per
clip, the VAE posterior's *moments* (mean and log-variance, [num_frames, 2·C, h, w] float16) of
every frame, so a step samples the latent from them exactly as ``EMOModel.encode(x, gen)`` does
(same generator draws, same shapes): the training noise on the latent stays, and only the fp16
rounding of the moments differs from the on-the-fly path.

Layout: ``<dataset>/latents/<key>/<clip_id>-<clip key>.npy`` where ``key`` hashes the VAE's
weights and config and the training resolution, and the clip key hashes the clip's identity
(id, frame count, fps, crop side): a changed VAE, resolution or re-cropped clip gets a new file,
never a stale one. Each file is written atomically; a rerun skips the ones already there, so a
killed cache build resumes where it stopped.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from diffusers.models.autoencoders.vae import DiagonalGaussianDistribution

from emokit.data.atomic import atomic_path
from emokit.models import EMOModel
from emokit.train.dataset import Clip, ClipError, clip_media, decode_frames, pixels_of

FORMAT = 1  # bump when the file layout or what is stored changes
ENCODE_BATCH = 8  # frames per VAE encoder call while building (its activations are the peak)

__all__ = ["FORMAT", "build_cache", "cache_root", "clip_path", "load_moments", "sample_latents", "vae_key"]


def cache_root(dataset: str | Path) -> Path:
    """``<dataset>/latents`` (beside the shards folder when given the shards folder or a shard)."""
    root = Path(dataset)
    if root.is_file():
        root = root.parent
    if root.name == "shards" and not (root / "shards").is_dir():
        root = root.parent
    return root / "latents"


def vae_key(model: EMOModel, resolution: int) -> str:
    """A hash of everything a cached latent depends on: the VAE weights and config, the training
    resolution, the cache format. Two runs with the same VAE share the cache; any change misses."""
    if model.config.latent != "kl":
        raise ValueError(
            "cached latents need the KL VAE (latent = 'kl'); the pixel latent is exact and costs "
            "nothing to compute"
        )
    h = hashlib.sha256(json.dumps([FORMAT, resolution, model.config.vae_kwargs()], sort_keys=True).encode())
    for name, tensor in sorted(model.vae.state_dict().items()):
        t = tensor.detach().to("cpu", torch.float32).contiguous()
        h.update(f"{name}:{tuple(t.shape)}".encode())
        h.update(t.numpy().tobytes())
    return h.hexdigest()[:20]


def clip_path(folder: Path, clip: Clip) -> Path:
    """The cache file of ``clip``: its id plus a hash of what would change its frames."""
    ident = json.dumps([clip.clip_id, clip.num_frames, clip.fps, clip.size])
    return folder / f"{clip.clip_id}-{hashlib.sha256(ident.encode()).hexdigest()[:12]}.npy"


@torch.no_grad()
def encode_moments(model: EMOModel, pixels: torch.Tensor) -> np.ndarray:
    """VAE posterior moments [n, 2C, h, w] (float16) of pixels [n, 3, H, W] in [-1, 1], in fp32."""
    device = next(model.vae.parameters()).device
    out = []
    for i in range(0, pixels.shape[0], ENCODE_BATCH):
        x = pixels[i : i + ENCODE_BATCH].to(device, torch.float32)
        moments = model.vae.encode(x).latent_dist.parameters  # type: ignore[union-attr]
        out.append(moments.float().cpu().numpy())
    moments = np.concatenate(out)
    if not np.isfinite(moments).all() or np.abs(moments).max() > np.finfo(np.float16).max:
        raise ValueError("VAE moments do not fit float16 (a broken VAE?)")
    return moments.astype(np.float16)


def build_cache(
    model: EMOModel,
    clips: Sequence[Clip],
    resolution: int,
    root: Path,
    *,
    rank: int = 0,
    world: int = 1,
    log: Callable[[str], None] = print,
) -> Path:
    """Encode every clip of ``clips`` not cached yet (rank r takes clips r, r+world, …) and return
    the cache folder. The model's VAE must already be on the device it should run on."""
    folder = root / vae_key(model, resolution)
    if rank == 0:
        folder.mkdir(parents=True, exist_ok=True)
        info = folder / "cache.json"
        if not info.is_file():
            with atomic_path(info) as tmp:
                tmp.write_text(
                    json.dumps(
                        {"format": FORMAT, "resolution": resolution, "vae": model.config.vae_kwargs()},
                        indent=1,
                    )
                )
    seen: set[Path] = set()
    todo = []
    for clip in clips:
        path = clip_path(folder, clip)
        if path not in seen:
            seen.add(path)
            todo.append((clip, path))
    mine = [(c, p) for c, p in todo[rank::world] if not p.is_file()]
    if mine and rank == 0:
        log(f"caching VAE latents of {len(todo[rank::world])} clips ({len(mine)} to encode) in {folder}")
    for clip, path in mine:
        video, _ = clip_media(clip, audio=False)
        frames = decode_frames(video, list(range(clip.num_frames)), clip.fps, resolution)
        moments = encode_moments(model, pixels_of(frames))
        with atomic_path(path) as tmp, open(tmp, "wb") as f:
            np.save(f, moments)
    return folder


def load_moments(folder: Path, clip: Clip, indices: Sequence[int]) -> torch.Tensor:
    """Cached moments of frames ``indices`` of ``clip`` as float32 [len, 2C, h, w] (memory-mapped:
    only those frames are read)."""
    path = clip_path(folder, clip)
    try:
        moments = np.load(path, mmap_mode="r")
    except (OSError, ValueError) as e:
        raise ClipError(f"no usable cached latents {path} ({e}); rerun with --cache-latents") from None
    if moments.ndim != 4 or moments.shape[0] != clip.num_frames:
        raise ClipError(f"{path}: cached latents of shape {moments.shape}, clip has {clip.num_frames} frames")
    return torch.from_numpy(np.asarray(moments[list(indices)], dtype=np.float32))


def sample_latents(moments: torch.Tensor, gen: torch.Generator | None, scaling_factor: float) -> torch.Tensor:
    """Scaled latents from moments [B, 2C, h, w]: the posterior sample (mean without ``gen``), the
    same draw ``EMOModel.encode(pixels, gen)`` makes from the same generator state."""
    dist = DiagonalGaussianDistribution(moments)
    latents = dist.mean if gen is None else dist.sample(gen)
    return latents * scaling_factor
