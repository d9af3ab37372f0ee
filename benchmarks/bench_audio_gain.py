"""Did a trained run's audio path learn? Its denoising error with the clip's own audio, moved audio
and no audio, on the same noise.

    PYTHONPATH=. .venv/bin/python benchmarks/bench_audio_gain.py --run WORK/run --dataset WORK/dataset

For ``--samples`` draws of a training window (12 frames + 4 motion frames, as stage 2 samples
them), noise level and noise, the run's final model (EMA weights) predicts its target with
  own      the window's own audio tokens,
  moved    the same tokens moved by ``--shift`` frames (wrapping round the window),
  none     the null tokens (what classifier-free guidance's unconditional branch sees),
and the mean squared error is taken over the whole latent and over the mouth region of the face
box only. Every variant sees the same draws, so the differences are the audio's doing alone. A run
whose audio path learned nothing reads a gain of ~0 %; the issue-13 probe found ~1 % (whole
latent). bench_learn's mouth r says whether the mouth follows the audio in generated video; this
says whether the model uses the audio at all, and where.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import default_collate

from emokit.generate.generator import load_run
from emokit.train.dataset import ClipDataset, index_clips
from emokit.train.loss import DiffusionLoss
from emokit.train.weighting import mouth_mask, weighted_mse


def errors(model, scheduler, batch: dict, seed: int) -> tuple[float, float]:
    """(whole-latent MSE, mouth-region MSE) of one batch, every draw from ``seed``: the training
    loss's own prediction and target (no condition or motion dropout)."""
    loss = DiffusionLoss(model, scheduler, 2, 0.0)
    with torch.no_grad():
        pred, target = loss.predict(batch, torch.Generator().manual_seed(seed))
    mouth = torch.nn.functional.adaptive_avg_pool2d(mouth_mask(batch["face_mask"]), pred.shape[-2:])
    return float(weighted_mse(pred, target, None)), float(weighted_mse(pred, target, mouth))


def audio_gain(run: Path, dataset: Path, samples: int = 64, shift: int = 6) -> dict[str, dict[str, float]]:
    """Per variant (own, moved, none): mean MSE, mouth MSE and their % gain over own audio."""
    model, scheduler = load_run(run)
    model.eval()
    clips, _ = index_clips(dataset, 2, 12, 4)
    res = model.config.sample_size * model.config.vae_factor
    data = ClipDataset(clips, 2, res, 12, 4, 0, model.config.audio_window, model.config.speed_window)
    rows: dict[str, list[tuple[float, float]]] = {"own": [], "moved": [], "none": []}
    for k in range(samples):
        batch = default_collate([data[k]])
        moved = dict(batch, audio=torch.roll(batch["audio"], shift, dims=1))
        silent = {key: v for key, v in batch.items() if key != "audio"}
        for name, b in (("own", batch), ("moved", moved), ("none", silent)):
            rows[name].append(errors(model, scheduler, b, seed=k))
    own = np.array(rows["own"]).mean(axis=0)
    out = {}
    for name, r in rows.items():
        e = np.array(r).mean(axis=0)
        gain = (e - own) / own * 100
        out[name] = {"mse": e[0], "mouth_mse": e[1], "gain_pct": gain[0], "mouth_gain_pct": gain[1]}
    return {k: {m: float(x) for m, x in v.items()} for k, v in out.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", type=Path, required=True, help="a bench_learn / emokit train run folder")
    ap.add_argument("--dataset", type=Path, required=True, help="the labelled dataset it trained on")
    ap.add_argument("--samples", type=int, default=64)
    ap.add_argument("--shift", type=int, default=6, help="frames the moved audio is moved by")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    rows = audio_gain(args.run, args.dataset, args.samples, args.shift)
    print(f"{args.run}: {args.samples} stage-2 draws, audio moved by {args.shift} frames")
    print(f"{'audio':<8}{'MSE':>10}{'mouth MSE':>12}{'gain':>9}{'mouth gain':>12}")
    for name, r in rows.items():
        print(
            f"{name:<8}{r['mse']:>10.5f}{r['mouth_mse']:>12.5f}{r['gain_pct']:>8.1f}%{r['mouth_gain_pct']:>11.1f}%"
        )


if __name__ == "__main__":
    sys.exit(main())
