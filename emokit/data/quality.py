"""Clip quality signals EMO lists as dataset limitations: hands in frame, burned-in captions.

Both are flags, not rejections: clips keep them so training can filter or mask. Both look at a
subsample of frames (hands every ``every``-th frame; captions on the frames handed in), because
they describe the clip, not each frame.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import cv2
import numpy as np

from emokit.data.faces import check_rgb, downscale


class HandsDetector:
    """Fraction of sampled frames showing at least one hand (MediaPipe hands, still-image mode).

    Feed frames in order with ``add``; every ``every``-th one is looked at (frame 0 first). Still
    image mode because sampled frames are too far apart for landmark tracking to help.
    """

    # 0.7: at 0.5 the palm detector fires on 13 % of the hand-free head_turn frames (white tie),
    # at 0.7 on 3 %, while still finding the gesturing hands of speaker_a/b.
    def __init__(self, every: int = 10, min_confidence: float = 0.7, width: int = 480) -> None:
        if every < 1:
            raise ValueError(f"every must be >= 1, got {every}")
        import mediapipe as mp

        self.every = every
        self.width = width
        self._hands = mp.solutions.hands.Hands(
            static_image_mode=True,
            max_num_hands=2,
            model_complexity=0,
            min_detection_confidence=min_confidence,
        )
        self.reset()

    def reset(self) -> None:
        """Start a new clip."""
        self._seen = 0
        self.sampled = 0
        self.with_hands = 0

    def count(self, frame: np.ndarray) -> int:
        """Number of hands in one RGB frame."""
        check_rgb(frame)
        if self._hands is None:
            raise ValueError("HandsDetector is closed")
        small, _ = downscale(frame, self.width)
        res = self._hands.process(small)
        return len(res.multi_hand_landmarks or [])

    def add(self, frame: np.ndarray) -> None:
        if self._seen % self.every == 0:
            self.sampled += 1
            self.with_hands += self.count(frame) > 0
        self._seen += 1

    @property
    def fraction(self) -> float:
        return self.with_hands / self.sampled if self.sampled else 0.0

    def __call__(self, frames: Iterable[np.ndarray]) -> float:
        """Fraction for one clip's frames (resets first)."""
        self.reset()
        for f in frames:
            self.add(f)
        return self.fraction

    def close(self) -> None:
        if self._hands is not None:
            self._hands.close()
            self._hands = None

    def __enter__(self) -> HandsDetector:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# Caption detection works on frames scaled down to at most this width (thresholds are relative).
_WIDTH = 640
_CONTRAST = 80  # morphological gradient (0..255) of a caption stroke: light text on dark edge


def _strokes(frame: np.ndarray) -> np.ndarray:
    """Binary map (at width <= 640) of high-contrast edges, where caption strokes show up."""
    check_rgb(frame)
    # area averaging keeps thin strokes intact; bilinear aliasing adds text-like edges in crowds
    small, _ = downscale(frame, _WIDTH, cv2.INTER_AREA)
    gray = cv2.cvtColor(small, cv2.COLOR_RGB2GRAY)
    grad = cv2.morphologyEx(gray, cv2.MORPH_GRADIENT, np.ones((3, 3), np.uint8))
    return (grad >= _CONTRAST).astype(np.uint8)


def _lines(strokes: np.ndarray) -> list[tuple[int, int, int, int]]:
    h, w = strokes.shape
    short = min(h, w)
    k = max(3, w // 32)  # bridges letter and word gaps of subtitle-sized text
    blobs = cv2.morphologyEx(strokes, cv2.MORPH_CLOSE, np.ones((1, k), np.uint8))
    blobs = cv2.morphologyEx(blobs, cv2.MORPH_OPEN, np.ones((3, 3), np.uint8))
    n, _, stats, _ = cv2.connectedComponentsWithStats(blobs, connectivity=8)
    lines = []
    for i in range(1, n):
        x, y, bw, bh, _ = stats[i]
        if not (short / 60 <= bh <= short / 8 and bw >= 2.5 * bh and bw >= w / 12):
            continue
        patch = strokes[y : y + bh, x : x + bw]
        if patch.mean() < 0.2:
            continue
        rows = patch[bh // 4 : bh - bh // 4 + 1]
        crossings = np.count_nonzero(np.diff(rows, axis=1) == 1, axis=1).mean()
        if crossings < bw / (1.5 * bh):  # ≥ ~1 stroke per 1.5 text heights, like letters
            continue
        lines.append((int(x), int(y), int(x + bw), int(y + bh)))
    return lines


def text_lines(frame: np.ndarray) -> list[tuple[int, int, int, int]]:
    """Caption-like text lines (x0, y0, x1, y1 in source pixels) in one RGB frame.

    A text line = a horizontal run of high-contrast strokes: the strong morphological gradient
    closed horizontally into one blob, wide (≥ 2.5 × its height), of text height (1/60–1/8 of the
    frame's short side), densely edged, and crossed by many strokes along its middle rows
    (letters, not one edge of an object).
    """
    strokes = _strokes(frame)
    k = frame.shape[1] / strokes.shape[1]
    return [
        (round(x0 * k), round(y0 * k), round(x1 * k), round(y1 * k)) for x0, y0, x1, y1 in _lines(strokes)
    ]


def caption_score(frames: Sequence[np.ndarray], bands: tuple[float, float] = (0.25, 0.35)) -> float:
    """0..1 likelihood of burned-in subtitles/captions in a clip, from a subsample of its frames.

    Captions are overlays: text lines at a fixed height in the top or bottom band (``bands`` = top
    and bottom fractions of the frame) whose strokes stay put between neighbouring samples while
    the picture moves. So lines are looked for among each frame's *static* strokes (present in a
    neighbouring sample too, ±1 px), which drops moving text-like texture (teeth, eyes, hair,
    crowds) and keeps overlays. The score is the largest fraction of frames showing a static text
    line at one height (bins of 1/20 of the frame, ±1 bin). Pass full frames (captions are often
    outside the face crop), 8–16 spread over the clip, so a subtitle usually spans two samples.
    """
    if len(frames) == 0:
        return 0.0
    if len(frames) == 1:
        raise ValueError("caption_score needs at least 2 frames (captions are told by staying still)")
    maps = [_strokes(f) for f in frames]
    if len({m.shape for m in maps}) != 1:
        raise ValueError("caption_score needs frames of one size")
    grown = [cv2.dilate(m, np.ones((3, 3), np.uint8)) for m in maps]
    small_h = maps[0].shape[0]
    bins = 20
    hits = np.zeros(bins)
    for i, m in enumerate(maps):
        near = np.zeros_like(m)
        for j in (i - 1, i + 1):
            if 0 <= j < len(maps):
                near |= grown[j]
        seen = set()
        for _, y0, _, y1 in _lines(m & near):
            yc = 0.5 * (y0 + y1) / small_h
            if yc <= bands[0] or yc >= 1.0 - bands[1]:
                seen.add(min(bins - 1, int(yc * bins)))
        # one bin of vertical tolerance (line heights differ); each frame counts once per bin
        for b in {min(bins - 1, max(0, b + d)) for b in seen for d in (-1, 0, 1)}:
            hits[b] += 1
    return float(hits.max() / len(frames))
