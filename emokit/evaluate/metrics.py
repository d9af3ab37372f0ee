"""Frame-quality metrics of generated video against real video: PSNR and SSIM (numpy/OpenCV).

Both take uint8 RGB frames, one [H, W, 3] or a stack [F, H, W, 3] of equal shapes.
"""

from __future__ import annotations

import cv2
import numpy as np

# Wang et al. 2004 ("Image quality assessment: from error visibility to structural similarity"):
# 11×11 Gaussian window σ = 1.5, K1 = 0.01, K2 = 0.03, dynamic range L = 255.
SSIM_WINDOW = 11
SSIM_SIGMA = 1.5
SSIM_K1, SSIM_K2 = 0.01, 0.03
PEAK = 255.0

__all__ = ["psnr", "ssim"]


def _pair(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    a, b = np.asarray(a), np.asarray(b)
    if a.shape != b.shape:
        raise ValueError(f"frames differ in shape: {a.shape} vs {b.shape}")
    if a.dtype != np.uint8 or b.dtype != np.uint8:
        raise ValueError(f"expected uint8 frames, got {a.dtype} and {b.dtype}")
    if a.ndim not in (3, 4) or a.shape[-1] != 3:
        raise ValueError(f"expected RGB frames [H, W, 3] or [F, H, W, 3], got {a.shape}")
    return a, b


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    """Peak signal-to-noise ratio in dB of the mean squared error over every pixel given.

    A stack is one MSE over all its frames (finite unless every frame is identical); identical
    input gives ``inf``.
    """
    a, b = _pair(a, b)
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return float("inf") if mse == 0 else float(10.0 * np.log10(PEAK**2 / mse))


def _ssim_frame(x: np.ndarray, y: np.ndarray) -> float:
    """Mean SSIM of one [H, W, 3] pair: per channel, over the positions where the whole window
    fits in the image (the border of half a window is left out), then averaged over channels."""
    x, y = x.astype(np.float64), y.astype(np.float64)
    k = (SSIM_WINDOW, SSIM_WINDOW)

    def blur(img: np.ndarray) -> np.ndarray:
        return cv2.GaussianBlur(img, k, SSIM_SIGMA, borderType=cv2.BORDER_REFLECT)

    mx, my = blur(x), blur(y)
    sxx = blur(x * x) - mx * mx
    syy = blur(y * y) - my * my
    sxy = blur(x * y) - mx * my
    c1, c2 = (SSIM_K1 * PEAK) ** 2, (SSIM_K2 * PEAK) ** 2
    s = ((2 * mx * my + c1) * (2 * sxy + c2)) / ((mx * mx + my * my + c1) * (sxx + syy + c2))
    r = SSIM_WINDOW // 2
    return float(s[r:-r, r:-r].mean())


def ssim(a: np.ndarray, b: np.ndarray) -> float:
    """Structural similarity (Wang et al. 2004, Gaussian window), mean over frames of a stack.

    Frames must be at least 12 pixels on each side (one full window plus a valid position).
    """
    a, b = _pair(a, b)
    if min(a.shape[-3], a.shape[-2]) <= SSIM_WINDOW:
        raise ValueError(f"frames of {a.shape[-2]}x{a.shape[-3]} are too small for SSIM's 11x11 window")
    if a.ndim == 3:
        return _ssim_frame(a, b)
    return float(np.mean([_ssim_frame(x, y) for x, y in zip(a, b)]))
