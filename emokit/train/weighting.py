"""Where the diffusion loss looks: per-cell weights from the clip's face-region mask.

Why: in a talking-head crop most latent cells are background, hair and shoulders, which the
reference image already explains; the audio only changes the mouth. With a plain mean the mouth's
few cells carry a tiny share of the gradient, so the audio layers learn slowly (EMO-like models
at full scale face the same ratio). Weighting the cells inside the face box, and more inside its
mouth region, shifts the gradient there. The mouth region is a fixed part of the face box (lower
part, middle of the width), since per-frame landmarks are not in the training sample.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

# The mouth region as fractions of the face box (x0, y0, x1, y1): MediaPipe's detection box runs
# from the brows to the chin, so the mouth sits in its lower part, centred.
MOUTH_BOX = (0.2, 0.55, 0.8, 1.0)


def mouth_mask(face_mask: torch.Tensor) -> torch.Tensor:
    """[b,1,H,W] 0/1 mouth-region mask inside each sample's face box (all zero when no box)."""
    out = torch.zeros_like(face_mask)
    for i in range(face_mask.shape[0]):
        ys, xs = torch.nonzero(face_mask[i, 0] > 0.5, as_tuple=True)
        if ys.numel() == 0:
            continue
        y0, y1 = int(ys.min()), int(ys.max()) + 1
        x0, x1 = int(xs.min()), int(xs.max()) + 1
        fx0, fy0, fx1, fy1 = MOUTH_BOX
        ya, yb = y0 + round(fy0 * (y1 - y0)), y0 + round(fy1 * (y1 - y0))
        xa, xb = x0 + round(fx0 * (x1 - x0)), x0 + round(fx1 * (x1 - x0))
        out[i, 0, ya:yb, xa:xb] = 1.0
    return out


def region_weights(
    face_mask: torch.Tensor, latent_hw: tuple[int, int], face: float, mouth: float
) -> torch.Tensor:
    """Loss weights [b,1,h,w] at latent size: 1 outside the face, ``face`` inside the face box,
    ``mouth`` inside its mouth region (area-averaged onto the latent grid)."""
    w = torch.ones_like(face_mask)
    if face != 1.0:
        w = w + (face - 1.0) * face_mask
    if mouth != 1.0:
        w = torch.where(mouth_mask(face_mask) > 0, torch.full_like(w, mouth), w)
    return F.adaptive_avg_pool2d(w, latent_hw)


def weighted_mse(pred: torch.Tensor, target: torch.Tensor, weights: torch.Tensor | None) -> torch.Tensor:
    """Mean squared error of [b,f,c,h,w] tensors, weighted per cell and normalised by the mean
    weight (so the loss keeps the plain MSE's scale and equals it when all weights are 1)."""
    err = (pred.float() - target.float()) ** 2
    if weights is None:
        return err.mean()
    w = weights[:, None].float().expand_as(err)
    return (err * w).sum() / w.sum()
