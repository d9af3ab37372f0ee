"""Mouth opening per frame from MediaPipe face-mesh landmarks: the lip-motion signal.

Why: EMO's audio layers must move the mouth. The opening of the inner lips, divided by the face's
size, is a scale-free per-frame number that both lip-sync checks (emokit.data.avsync) and the
generated-vs-real comparison (emokit.evaluate) read.

Landmarks are MediaPipe face mesh's 468 points (``refine_landmarks=False`` indices; the refined
478-point mesh keeps the same first 468). Inner-lip pairs (upper, lower), from the centre outwards:
13–14 (centre), 82–87 and 312–317 (either side). Face size: the distance between the outer eye
corners 33 and 263, which does not change when the jaw opens (the forehead–chin height would).
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

INNER_LIP_PAIRS = np.array([(13, 14), (82, 87), (312, 317)], dtype=np.int64)
EYE_CORNERS = (33, 263)

__all__ = [
    "EYE_CORNERS",
    "INNER_LIP_PAIRS",
    "mouth_correlation",
    "mouth_opening",
    "mouth_opening_series",
]


def mouth_opening(landmarks: np.ndarray) -> float:
    """Mean inner-lip gap of the three pairs / outer eye-corner distance (0 = lips closed).

    ``landmarks``: [N >= 468, 2 or 3] face-mesh points in any pixel or normalised units (x, y are
    used; the ratio cancels the scale). NaN when the eye distance is 0.
    """
    pts = np.asarray(landmarks, dtype=np.float64)
    if pts.ndim != 2 or pts.shape[0] < 468 or pts.shape[1] < 2:
        raise ValueError(f"expected face-mesh landmarks [468+, 2|3], got shape {pts.shape}")
    xy = pts[:, :2]
    gap = np.linalg.norm(xy[INNER_LIP_PAIRS[:, 0]] - xy[INNER_LIP_PAIRS[:, 1]], axis=1).mean()
    eyes = float(np.linalg.norm(xy[EYE_CORNERS[0]] - xy[EYE_CORNERS[1]]))
    return float(gap / eyes) if eyes > 0 else float("nan")


def mouth_opening_series(frames: Iterable[np.ndarray]) -> np.ndarray:
    """Per-frame :func:`mouth_opening` of RGB uint8 frames [F] (float64), NaN where no face.

    The mesh runs per frame as emokit.data.pose's estimator runs it (static-image mode), so a
    held frame reads exactly the same as its original."""
    from emokit.data.pose import HeadPoseEstimator  # the project's one way to run the face mesh

    out = []
    with HeadPoseEstimator() as est:
        for frame in frames:
            pts = est.mesh(frame)
            out.append(np.nan if pts is None else mouth_opening(pts))
    return np.array(out, dtype=np.float64)


STILL_STD = 0.005  # opening std (eye-distance units) below which a mouth counts as not moving
MIN_COMMON_FRAMES = 10


def mouth_correlation(a: np.ndarray, b: np.ndarray) -> float | None:
    """Pearson correlation of two per-frame opening series over the frames where both have a face.

    Defined explicitly where Pearson is not: None when fewer than ``MIN_COMMON_FRAMES`` frames
    have a face in both; 0.0 when either mouth does not move (std < ``STILL_STD``: a still carries
    no lip signal, and the ratio of two tiny tracker jitters would be any number in [-1, 1]).
    """
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    n = min(len(a), len(b))
    a, b = a[:n], b[:n]
    both = np.isfinite(a) & np.isfinite(b)
    if both.sum() < MIN_COMMON_FRAMES:
        return None
    a, b = a[both], b[both]
    if a.std() < STILL_STD or b.std() < STILL_STD:
        return 0.0
    return float(np.corrcoef(a, b)[0, 1])
