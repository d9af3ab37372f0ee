"""Face boxes per frame with MediaPipe face detection, run on a downscaled copy of the frame.

Why downscale: MediaPipe resizes every input to 128² (short range) or 192² (full range) anyway, so
a 1080×1920 frame only adds the copy into its graph; a bilinear ``detect_width`` copy finds the
same boxes (within a few % of the face size) at ~2.3 ms instead of 3–4.5 ms per frame here.
Boxes come back in full-resolution source pixels.

Model choice (measured on the shared test videos, see tests/test_faces.py): the short-range model
finds every frame of the close/medium talking heads (speaker_a/b 1080×1920 with a ~260 px face,
head_turn 224², speaker_c/d, the 720×1280 selfie) while the full-range model misses 5–20 % of the
close-up frames (head_turn, speaker_d); the full-range model is the only one that finds the small
faces of the crowd video. ``model="auto"`` (default) runs short range and falls back to full range
on frames where short range finds nothing, so talking heads cost one short-range pass per frame
and small/distant faces are still found (and flagged by the tracker).
"""

from __future__ import annotations

from typing import Literal, NamedTuple

import cv2
import numpy as np

ModelChoice = Literal["short", "full", "auto"]


class FaceDetectionError(ValueError):
    """Bad input to the face detector (one-line reason)."""


class FaceBox(NamedTuple):
    """A face box in source pixels (x1/y1 exclusive edges, clipped to the frame)."""

    x0: float
    y0: float
    x1: float
    y1: float
    score: float

    @property
    def width(self) -> float:
        return self.x1 - self.x0

    @property
    def height(self) -> float:
        return self.y1 - self.y0

    @property
    def area(self) -> float:
        return max(0.0, self.width) * max(0.0, self.height)

    @property
    def center(self) -> tuple[float, float]:
        return (0.5 * (self.x0 + self.x1), 0.5 * (self.y0 + self.y1))

    def xyxy(self) -> np.ndarray:
        """The box as a float64 array [x0, y0, x1, y1]."""
        return np.array([self.x0, self.y0, self.x1, self.y1], dtype=np.float64)


def check_rgb(frame: np.ndarray) -> None:
    """Raise FaceDetectionError unless ``frame`` is an HxWx3 uint8 image."""
    if not isinstance(frame, np.ndarray) or frame.ndim != 3 or frame.shape[2] != 3:
        shape = getattr(frame, "shape", None)
        raise FaceDetectionError(f"expected an RGB frame HxWx3, got shape {shape}")
    if frame.dtype != np.uint8:
        raise FaceDetectionError(f"expected a uint8 RGB frame, got dtype {frame.dtype}")
    if frame.shape[0] < 2 or frame.shape[1] < 2:
        raise FaceDetectionError(f"frame too small: {frame.shape[1]}x{frame.shape[0]}")


def downscale(
    frame: np.ndarray, width: int, interpolation: int = cv2.INTER_LINEAR
) -> tuple[np.ndarray, float]:
    """A copy at most ``width`` wide and the factor back to source pixels.

    Bilinear by default: measured here, INTER_AREA at a non-integer factor (1080 → 320) costs
    ~18 ms per frame, 8× more than bilinear plus the detection itself, and MediaPipe resamples
    its input bilinearly to 128² anyway.
    """
    h, w = frame.shape[:2]
    if width <= 0 or w <= width:
        return np.ascontiguousarray(frame), 1.0
    height = max(1, round(h * width / w))
    small = cv2.resize(frame, (width, height), interpolation=interpolation)
    return small, w / width


class FaceDetector:
    """MediaPipe face detection on downscaled frames; callable on an RGB frame → list[FaceBox].

    Boxes are sorted by area, largest first, in full-resolution pixels clipped to the frame.
    Use as a context manager or call ``close()``: the MediaPipe graphs hold native resources.
    """

    def __init__(
        self,
        min_confidence: float = 0.5,
        detect_width: int = 320,
        model: ModelChoice = "auto",
    ) -> None:
        if model not in ("short", "full", "auto"):
            raise FaceDetectionError(f"model must be 'short', 'full' or 'auto', got {model!r}")
        if not 0.0 <= min_confidence <= 1.0:
            raise FaceDetectionError(f"min_confidence must be in [0, 1], got {min_confidence}")
        import mediapipe as mp

        self.min_confidence = min_confidence
        self.detect_width = detect_width
        self.model = model
        make = mp.solutions.face_detection.FaceDetection
        self._short = (
            make(model_selection=0, min_detection_confidence=min_confidence)
            if model in ("short", "auto")
            else None
        )
        self._full = (
            make(model_selection=1, min_detection_confidence=min_confidence)
            if model in ("full", "auto")
            else None
        )

    def __call__(self, frame: np.ndarray) -> list[FaceBox]:
        check_rgb(frame)
        small, factor = downscale(frame, self.detect_width)
        h, w = frame.shape[:2]
        boxes: list[FaceBox] = []
        for graph in (self._short, self._full):
            if graph is None:
                continue
            boxes = _run(graph, small, factor, w, h)
            if boxes:
                break
        return boxes

    def close(self) -> None:
        for graph in (self._short, self._full):
            if graph is not None:
                graph.close()
        self._short = self._full = None

    def __enter__(self) -> FaceDetector:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _run(graph: object, small: np.ndarray, factor: float, w: int, h: int) -> list[FaceBox]:
    result = graph.process(small)  # type: ignore[attr-defined]
    sh, sw = small.shape[:2]
    boxes = []
    for det in result.detections or []:
        rel = det.location_data.relative_bounding_box
        x0 = rel.xmin * sw * factor
        y0 = rel.ymin * sh * factor
        x1 = x0 + rel.width * sw * factor
        y1 = y0 + rel.height * sh * factor
        x0, x1 = float(np.clip(x0, 0, w)), float(np.clip(x1, 0, w))
        y0, y1 = float(np.clip(y0, 0, h)), float(np.clip(y1, 0, h))
        if x1 - x0 < 1 or y1 - y0 < 1:
            continue  # entirely outside the frame after clipping
        boxes.append(FaceBox(x0, y0, x1, y1, float(det.score[0])))
    boxes.sort(key=lambda b: b.area, reverse=True)
    return boxes
