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
OUTER_LIP_PAIRS = np.array([(0, 17), (37, 84), (267, 314)], dtype=np.int64)
EYE_CORNERS = (33, 263)
# The 40 lip-contour landmarks (outer and inner): their box locates the mouth patch of MouthTrack.
LIP_POINTS = np.array(sorted({61, 146, 91, 181, 84, 17, 314, 405, 321, 375, 291, 185, 40, 39, 37, 0, 267,
    269, 270, 409, 78, 95, 88, 178, 87, 14, 317, 402, 318, 324, 308, 191, 80, 81, 82, 13, 312, 311, 310,
    415}), dtype=np.int64)  # fmt: skip
PATCH = (48, 24)  # mouth patch (width, height) in pixels after resizing

__all__ = [
    "EYE_CORNERS",
    "INNER_LIP_PAIRS",
    "MouthTrack",
    "mouth_correlation",
    "mouth_opening",
    "mouth_motion_series",
    "mouth_opening_series",
]


def _xy(landmarks: np.ndarray) -> np.ndarray:
    pts = np.asarray(landmarks, dtype=np.float64)
    if pts.ndim != 2 or pts.shape[0] < 468 or pts.shape[1] < 2:
        raise ValueError(f"expected face-mesh landmarks [468+, 2|3], got shape {pts.shape}")
    return pts[:, :2]


def _gap(xy: np.ndarray, pairs: np.ndarray) -> float:
    gap = np.linalg.norm(xy[pairs[:, 0]] - xy[pairs[:, 1]], axis=1).mean()
    eyes = float(np.linalg.norm(xy[EYE_CORNERS[0]] - xy[EYE_CORNERS[1]]))
    return float(gap / eyes) if eyes > 0 else float("nan")


def mouth_opening(landmarks: np.ndarray) -> float:
    """Mean inner-lip gap of the three pairs / outer eye-corner distance (0 = lips closed).

    ``landmarks``: [N >= 468, 2 or 3] face-mesh points in any pixel or normalised units (x, y are
    used; the ratio cancels the scale). NaN when the eye distance is 0.
    """
    return _gap(_xy(landmarks), INNER_LIP_PAIRS)


class MouthTrack:
    """Per-frame mouth-motion features for the weight-free A/V sync label (emokit.data.avsync).

    Why several: the inner-lip gap alone is a weak, noisy lip signal (the mesh jitters, and the
    lips can move with the gap unchanged). Each frame adds three numbers, all from what label
    already has (the face-mesh landmarks and the crop): the inner and the outer lip gap (13–14,
    82–87, 312–317 and 0–17, 37–84, 267–314) / eye-corner distance, and the mean absolute grey
    change of a 48×24 mouth patch (the lip landmarks' box, 1.3 × their width) from the previous
    frame (0..255; the appearance of teeth and tongue that landmarks miss). NaN where no face
    (or, for the patch, where the patch leaves the crop or the previous frame had no face).
    A frame whose landmarks and crop equal the previous frame's (a held frame) repeats its
    features exactly, so emokit.data.avsync can treat it as a hold.
    """

    def __init__(self) -> None:
        self._rows: list[tuple[float, float, float]] = []
        self._prev_patch: np.ndarray | None = None
        self._prev_marks: np.ndarray | None = None

    def add(self, landmarks: np.ndarray | None, crop: np.ndarray | None = None) -> None:
        """One frame: its face-mesh landmarks in crop pixels (None: no face) and its RGB crop."""
        if landmarks is None:
            self._rows.append((np.nan, np.nan, np.nan))
            self._prev_patch = self._prev_marks = None
            return
        if self._rows and self._prev_marks is not None and np.array_equal(landmarks, self._prev_marks):
            self._rows.append(self._rows[-1])  # a held frame reads what its original read
            return
        xy = _xy(landmarks)
        patch = None if crop is None else _mouth_patch(crop, xy)
        change = np.nan
        if patch is not None and self._prev_patch is not None:
            change = float(np.abs(patch - self._prev_patch).mean())
        self._rows.append((_gap(xy, INNER_LIP_PAIRS), _gap(xy, OUTER_LIP_PAIRS), change))
        self._prev_patch, self._prev_marks = patch, np.asarray(landmarks).copy()

    def series(self) -> np.ndarray:
        """[F, 3] float64: inner gap, outer gap, mouth-patch change per frame."""
        return np.array(self._rows, dtype=np.float64).reshape(-1, 3)


def _mouth_patch(crop: np.ndarray, xy: np.ndarray) -> np.ndarray | None:
    import cv2

    p = xy[LIP_POINTS]
    cx, cy = p.mean(0)
    w = (p[:, 0].max() - p[:, 0].min()) * 1.3
    x0, y0, x1, y1 = int(cx - w / 2), int(cy - w / 4), int(cx + w / 2), int(cy + w / 4)
    if w < 4 or x0 < 0 or y0 < 0 or x1 > crop.shape[1] or y1 > crop.shape[0]:
        return None
    grey = cv2.cvtColor(np.ascontiguousarray(crop[y0:y1, x0:x1]), cv2.COLOR_RGB2GRAY)
    return cv2.resize(grey, PATCH, interpolation=cv2.INTER_AREA).astype(np.float32)


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


def mouth_motion_series(frames: Iterable[np.ndarray]) -> np.ndarray:
    """:class:`MouthTrack` features [F, 3] of RGB uint8 frames, the mesh run as label runs it."""
    from emokit.data.pose import HeadPoseEstimator

    track = MouthTrack()
    with HeadPoseEstimator() as est:
        for frame in frames:
            track.add(est.mesh(frame), frame)
    return track.series()


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
