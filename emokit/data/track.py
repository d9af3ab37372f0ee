"""Follow one main face through a clip's per-frame detections.

Detections are first linked into tracklets by overlap/centre continuity. The main face is the
tracklet with the most face area over the clip (largest × longest-lived); time the main tracklet
does not cover is filled the same way from the remaining tracklets, so a jump cut (the same person
suddenly elsewhere) continues the path with one clean step that ``jumpcuts.find_jump_cuts`` sees.
Missed frames inside a tracklet are interpolated linearly and counted (EMO: short gaps are not
fatal; Hallo drops a whole video for one missed frame). Problems come back as values: ``reason``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from emokit.data.faces import FaceBox

NO_FACE = "no face"
FACE_TOO_SMALL = "face too small"
FACE_LEAVES = "face leaves the frame"


def face_missing(seconds: float) -> str:
    return f"face missing for {seconds:.1f}s"


@dataclass
class FaceTrack:
    """The main face of a clip, one box per frame (source pixels), with what was measured."""

    boxes: np.ndarray  # [F, 4] x0, y0, x1, y1; interpolated/held where not detected; NaN if no face
    scores: np.ndarray  # [F] detection score, NaN where not detected
    detected: np.ndarray  # [F] bool, True where the main face was detected in that frame
    face_counts: np.ndarray  # [F] int, raw number of detections per frame
    max_faces: int  # most faces seen together in one frame, counting only faces lasting a while
    gap_frames: int  # frames whose box was interpolated or held
    longest_gap: int  # longest run of consecutive missed frames
    fps: float
    face_frac: float  # median face side / frame short side (NaN without frame_size)
    switches: list[int] = field(default_factory=list)  # frames where the path changed tracklet
    reason: str | None = None  # why the clip is unusable, or None

    @property
    def ok(self) -> bool:
        return self.reason is None

    @property
    def longest_gap_s(self) -> float:
        return self.longest_gap / self.fps


def iou(a: np.ndarray, b: np.ndarray) -> float:
    """Intersection over union of two x0, y0, x1, y1 boxes."""
    iw = min(a[2], b[2]) - max(a[0], b[0])
    ih = min(a[3], b[3]) - max(a[1], b[1])
    if iw <= 0 or ih <= 0:
        return 0.0
    inter = iw * ih
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return float(inter / union) if union > 0 else 0.0


def _side(b: np.ndarray) -> float:
    return float(np.sqrt(max(b[2] - b[0], 0.0) * max(b[3] - b[1], 0.0)))


def _affinity(prev: np.ndarray, cur: np.ndarray) -> float:
    """How well ``cur`` continues ``prev``: IoU, or centre closeness for small fast faces; 0 = no."""
    overlap = iou(prev, cur)
    if overlap >= 0.3:
        return overlap
    sp, sc = _side(prev), _side(cur)
    if sp <= 0 or sc <= 0 or not 2 / 3 <= sc / sp <= 1.5:
        return 0.0
    dist = np.hypot((prev[0] + prev[2] - cur[0] - cur[2]) / 2, (prev[1] + prev[3] - cur[1] - cur[3]) / 2)
    return 0.29 * (1.0 - dist / (0.5 * sp)) if dist < 0.5 * sp else 0.0


def _tracklets(dets: list[np.ndarray]) -> list[dict[int, int]]:
    """Greedy linking: each tracklet maps frame → index of its detection in that frame."""
    tracks: list[dict[int, int]] = []
    last: list[np.ndarray] = []
    for t, boxes in enumerate(dets):
        pairs = []
        for k, prev in enumerate(last):
            for j, box in enumerate(boxes):
                a = _affinity(prev, box)
                if a > 0:
                    pairs.append((a, k, j))
        pairs.sort(reverse=True)
        used_t: set[int] = set()
        used_d: set[int] = set()
        for _, k, j in pairs:
            if k in used_t or j in used_d:
                continue
            used_t.add(k)
            used_d.add(j)
            tracks[k][t] = j
            last[k] = boxes[j]
        for j, box in enumerate(boxes):
            if j not in used_d:
                tracks.append({t: j})
                last.append(box)
    return tracks


def _fill(
    tracks: list[dict[int, int]], areas: list[dict[int, float]], n: int, min_len: int
) -> list[tuple[int, int, int]]:
    """Main path as (tracklet, first, last) spans: biggest tracklet first, then the gaps around it."""
    spans: list[tuple[int, int, int]] = []
    todo = [(0, n)]
    while todo:
        a, b = todo.pop()
        best, best_w, best_frames = -1, 0.0, []
        for k, tr in enumerate(tracks):
            frames = [t for t in tr if a <= t < b]
            if len(frames) < min_len:
                continue
            w = sum(areas[k][t] for t in frames)
            if w > best_w:
                best, best_w, best_frames = k, w, frames
        if best < 0:
            continue
        first, last = min(best_frames), max(best_frames)
        spans.append((best, first, last))
        todo += [(a, first), (last + 1, b)]
    return sorted(spans, key=lambda s: s[1])


def _runs(mask: np.ndarray) -> list[tuple[int, int]]:
    """Runs of True in a bool array as (start, stop) pairs."""
    padded = np.concatenate([[False], mask, [False]]).astype(np.int8)
    edges = np.flatnonzero(np.diff(padded))
    return list(zip(edges[0::2].tolist(), edges[1::2].tolist(), strict=True))


def _touches(box: np.ndarray, frame_size: tuple[int, int], margin: float = 1.5) -> bool:
    w, h = frame_size
    return bool(box[0] <= margin or box[1] <= margin or box[2] >= w - margin or box[3] >= h - margin)


def track_main_face(
    detections: Sequence[Sequence[FaceBox]],
    fps: float,
    max_gap_s: float,
    frame_size: tuple[int, int] | None = None,
    min_face_frac: float = 0.0,
) -> FaceTrack:
    """The clip's main face track from per-frame detections (see module docstring).

    ``frame_size=(w, h)`` enables the "face too small" (median side / short side <
    ``min_face_frac``) and "face leaves the frame" checks.
    """
    if fps <= 0:
        raise ValueError(f"fps must be positive, got {fps}")
    n = len(detections)
    dets = [np.array([b[:4] for b in frame], dtype=np.float64).reshape(-1, 4) for frame in detections]
    scores_in = [np.array([b[4] for b in frame], dtype=np.float64) for frame in detections]
    counts = np.array([len(d) for d in dets], dtype=np.int64)
    boxes = np.full((n, 4), np.nan)
    scores = np.full(n, np.nan)
    detected = np.zeros(n, dtype=bool)
    max_gap = max(0, int(round(max_gap_s * fps)))

    if n == 0 or counts.sum() == 0:
        return FaceTrack(
            boxes=boxes,
            scores=scores,
            detected=detected,
            face_counts=counts,
            max_faces=0,
            gap_frames=n,
            longest_gap=n,
            fps=fps,
            face_frac=float("nan"),
            reason=NO_FACE,
        )

    tracks = _tracklets(dets)
    areas = [
        {t: (dets[t][j, 2] - dets[t][j, 0]) * (dets[t][j, 3] - dets[t][j, 1]) for t, j in tr.items()}
        for tr in tracks
    ]
    persist = min(max(3, int(round(0.1 * fps))), n)
    min_len = persist if any(len(tr) >= persist for tr in tracks) else 1
    spans = _fill(tracks, areas, n, min_len)

    switches = []
    for i, (k, first, last) in enumerate(spans):
        if i > 0:
            switches.append(first)
        known = sorted(t for t in tracks[k] if first <= t <= last)
        kb = np.array([dets[t][tracks[k][t]] for t in known])
        for c in range(4):
            boxes[first : last + 1, c] = np.interp(np.arange(first, last + 1), known, kb[:, c])
        for t in known:
            scores[t] = scores_in[t][tracks[k][t]]
            detected[t] = True
    # Frames no tracklet covers hold the nearest earlier box (later one at the start): a step, so a
    # switch between tracklets stays one sudden jump instead of a smeared ramp.
    have = np.flatnonzero(np.isfinite(boxes[:, 0]))
    idx = np.maximum.accumulate(np.where(np.isfinite(boxes[:, 0]), np.arange(n), -1))
    idx[idx < 0] = have[0]
    boxes = boxes[idx]

    gaps = _runs(~detected)
    longest = max((e - s for s, e in gaps), default=0)

    # Faces seen together, counting only tracklets that last ``persist`` frames (one-frame false
    # positives, e.g. a hand read as a face, must not flag a single-speaker clip).
    together = np.zeros(n, dtype=np.int64)
    for tr in tracks:
        if len(tr) >= persist:
            together[list(tr)] += 1
    max_faces = int(together.max()) if together.any() else int(counts.max() > 0)

    face_frac = float("nan")
    reason: str | None = None
    if frame_size is not None:
        sides = np.maximum(boxes[detected, 2] - boxes[detected, 0], boxes[detected, 3] - boxes[detected, 1])
        face_frac = float(np.median(sides) / min(frame_size))
    if longest > max_gap:
        s, e = max(gaps, key=lambda r: r[1] - r[0])
        at_edge = s == 0 or e == n
        if frame_size is not None and at_edge and _touches(boxes[s - 1 if e == n else e], frame_size):
            reason = FACE_LEAVES
        else:
            reason = face_missing((e - s) / fps)
    elif frame_size is not None:
        touching = np.array([detected[t] and _touches(boxes[t], frame_size) for t in range(n)])
        if max((e - s for s, e in _runs(touching)), default=0) > max_gap:
            reason = FACE_LEAVES
        elif face_frac < min_face_frac:
            reason = FACE_TOO_SMALL
    return FaceTrack(
        boxes=boxes,
        scores=scores,
        detected=detected,
        face_counts=counts,
        max_faces=max_faces,
        gap_frames=int(n - detected.sum()),
        longest_gap=int(longest),
        fps=fps,
        face_frac=face_frac,
        switches=switches,
        reason=reason,
    )
