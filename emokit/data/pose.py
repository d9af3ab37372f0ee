"""6-DoF head pose per frame: MediaPipe face mesh landmarks + a 3D face model + solvePnP.

The 3D model is 12 vertices of MediaPipe's canonical face model (canonical_face_model.obj in
mediapipe/modules/face_geometry/data of the MediaPipe source; the 0.10.21 wheel does not ship the
file, so the coordinates are copied below, indices = face-mesh landmark indices). Units are the
model's (about centimetres), so the translation is in those units too.

Camera: pinhole with focal length = crop width and the principal point at the crop centre (face
crops are taken without knowing the source camera; the crop is fixed per clip, so the translation
is consistent within a clip).

Method (measured in benchmarks/bench_pose.py, figures in BENCHMARKS.md): every frame is measured on
its own (face mesh in static-image mode, a fresh PnP), then :func:`smooth_poses` low-passes the
series over its distinct frames before velocities are taken. Fitting more landmarks did not help:
PnP on all 468 against a mean mesh shape and a rigid (Procrustes) fit of the mesh's 3D landmarks
were as noisy as the 12 points below, because the jitter is common to all landmarks of a frame.

Angle convention (degrees), all 0 for a face looking straight into the camera:
- yaw   + = the face turns toward the image's right (the nose moves right in the picture);
- pitch + = the face tilts up (the nose moves up in the picture);
- roll  + = the head tilts counter-clockwise as seen in the picture (the same sign as the angle of
  ``cv2.getRotationMatrix2D``).
R = Ry(-yaw) · Rx(-pitch) · Rz(-roll) in OpenCV camera axes (x right, y down, z forward), i.e. the
rotation taking the model (x right, y down, z into the scene, looking at the camera) to the camera.
"""

from __future__ import annotations

from fractions import Fraction
from typing import NamedTuple

import cv2
import numpy as np

# Canonical face model vertices (x right, y up, z toward the viewer), by face-mesh index.
_CANONICAL = {
    1: (0.000000, -1.126865, 7.475604),  # nose tip
    6: (0.000000, 2.473255, 5.788627),  # nose bridge between the eyes
    10: (0.000000, 8.261778, 4.481535),  # forehead top
    152: (0.000000, -9.403378, 4.264492),  # chin
    33: (-4.445859, 2.663991, 3.173422),  # eye outer corner (image left)
    263: (4.445859, 2.663991, 3.173422),  # eye outer corner (image right)
    133: (-1.856432, 2.585245, 3.757904),  # eye inner corner
    362: (1.856432, 2.585245, 3.757904),
    61: (-2.456206, -4.342621, 4.283884),  # mouth corner
    291: (2.456206, -4.342621, 4.283884),
    127: (-7.743095, 2.364999, -2.005167),  # face side, by the ear
    356: (7.743095, 2.364999, -2.005167),
}
MESH_INDICES = np.array(list(_CANONICAL), dtype=np.int64)
# In OpenCV axes (y down, z away from the camera): a proper rotation of the model's axes.
MODEL_POINTS = np.array(list(_CANONICAL.values()), dtype=np.float64) * np.array([1.0, -1.0, -1.0])
# Gaussian sigma, in distinct frames, of the filter applied before differencing (smooth_poses).
POSE_SMOOTH_SIGMA = 1.5


class Pose(NamedTuple):
    """Head pose: yaw, pitch, roll in degrees (see module docstring), tx, ty, tz in model units."""

    yaw: float
    pitch: float
    roll: float
    tx: float
    ty: float
    tz: float


class PoseError(ValueError):
    """Unusable pose input (one-line reason)."""


def _rx(a: np.ndarray) -> np.ndarray:
    c, s, o, z = np.cos(a), np.sin(a), np.ones_like(a), np.zeros_like(a)
    return np.stack([o, z, z, z, c, -s, z, s, c], -1).reshape(a.shape + (3, 3))


def _ry(a: np.ndarray) -> np.ndarray:
    c, s, o, z = np.cos(a), np.sin(a), np.ones_like(a), np.zeros_like(a)
    return np.stack([c, z, s, z, o, z, -s, z, c], -1).reshape(a.shape + (3, 3))


def _rz(a: np.ndarray) -> np.ndarray:
    c, s, o, z = np.cos(a), np.sin(a), np.ones_like(a), np.zeros_like(a)
    return np.stack([c, -s, z, s, c, z, z, z, o], -1).reshape(a.shape + (3, 3))


def euler_to_matrix(angles: np.ndarray) -> np.ndarray:
    """Rotation matrices [..., 3, 3] from yaw, pitch, roll degrees [..., 3] (module convention)."""
    r = -np.radians(np.asarray(angles, dtype=np.float64))
    return _ry(r[..., 0]) @ _rx(r[..., 1]) @ _rz(r[..., 2])


def matrix_to_euler(rot: np.ndarray) -> np.ndarray:
    """Yaw, pitch, roll degrees [..., 3] of rotation matrices [..., 3, 3] (module convention)."""
    rot = np.asarray(rot, dtype=np.float64)
    a = np.arctan2(rot[..., 0, 2], rot[..., 2, 2])
    b = np.arcsin(np.clip(-rot[..., 1, 2], -1.0, 1.0))
    c = np.arctan2(rot[..., 1, 0], rot[..., 1, 1])
    return -np.degrees(np.stack([a, b, c], -1))


def relative_rotation_deg(angles: np.ndarray) -> np.ndarray:
    """Angle (degrees) of R_{t-1}^T R_t for t = 1..F-1 from yaw, pitch, roll [F, 3]."""
    rot = euler_to_matrix(angles)
    rel = np.swapaxes(rot[:-1], -1, -2) @ rot[1:]
    cos = (np.trace(rel, axis1=-2, axis2=-1) - 1.0) / 2.0
    return np.degrees(np.arccos(np.clip(cos, -1.0, 1.0)))


def rotation_velocity(poses: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-frame head rotation speed (EMO's speed signal) and signed per-axis rates.

    ``poses`` [F, 6] (yaw, pitch, roll, tx, ty, tz). ``speed[t]`` = angle of R_{t-1}^T R_t in
    degrees per frame (axis-free, so it does not depend on the Euler convention); ``axes[t]`` =
    yaw/pitch/roll differences from frame t-1 to t, angles unwrapped across ±180°. Frame 0 has no
    predecessor and copies frame 1's values, so a moving head does not start with a fake stop.
    """
    poses = np.asarray(poses, dtype=np.float64)
    if poses.ndim != 2 or poses.shape[1] < 3:
        raise PoseError(f"poses must be [F, 6], got shape {poses.shape}")
    if not np.isfinite(poses[:, :3]).all():
        raise PoseError("poses contain NaN/inf angles; fill missing frames first")
    f = len(poses)
    speed = np.zeros(f)
    axes = np.zeros((f, 3))
    if f < 2:
        return speed, axes
    unwrapped = np.degrees(np.unwrap(np.radians(poses[:, :3]), axis=0))
    speed[1:] = relative_rotation_deg(poses[:, :3])
    axes[1:] = np.diff(unwrapped, axis=0)
    speed[0], axes[0] = speed[1], axes[1]
    return speed, axes


def fill_missing(poses: list[Pose | None]) -> tuple[np.ndarray, np.ndarray]:
    """Poses [F, 6] with missing frames interpolated (angles unwrapped), and the found mask [F]."""
    found = np.array([p is not None for p in poses], dtype=bool)
    if not found.any():
        raise PoseError("no head pose in any frame")
    known = np.array([p for p in poses if p is not None], dtype=np.float64)
    known[:, :3] = np.degrees(np.unwrap(np.radians(known[:, :3]), axis=0))
    t = np.arange(len(poses))
    out = np.stack([np.interp(t, t[found], known[:, c]) for c in range(6)], axis=1)
    out[:, :3] = (out[:, :3] + 180.0) % 360.0 - 180.0
    return out, found


def camera_matrix(width: int, height: int) -> np.ndarray:
    """Pinhole intrinsics for a crop: focal length = width, principal point at the centre."""
    return np.array([[width, 0, width / 2], [0, width, height / 2], [0, 0, 1]], dtype=np.float64)


def solve_pose(
    image_points: np.ndarray,
    size: tuple[int, int],
    guess: tuple[np.ndarray, np.ndarray] | None = None,
) -> tuple[Pose, tuple[np.ndarray, np.ndarray]]:
    """PnP of the 3D model on 2D landmarks (pixels, MESH_INDICES order); returns pose and (rvec, tvec)."""
    cam = camera_matrix(*size)
    pts = np.ascontiguousarray(image_points, dtype=np.float64).reshape(-1, 1, 2)
    obj = MODEL_POINTS.reshape(-1, 1, 3)
    if guess is None:
        # OpenCV's stubs lack None (no distortion) for distCoeffs, which the binding takes.
        ok, rvec, tvec = cv2.solvePnP(obj, pts, cam, None, flags=cv2.SOLVEPNP_SQPNP)  # type: ignore[call-overload]
        if ok:
            ok, rvec, tvec = cv2.solvePnP(obj, pts, cam, None, rvec, tvec, True, cv2.SOLVEPNP_ITERATIVE)  # type: ignore[call-overload]
    else:
        rvec, tvec = guess[0].copy(), guess[1].copy()
        ok, rvec, tvec = cv2.solvePnP(obj, pts, cam, None, rvec, tvec, True, cv2.SOLVEPNP_ITERATIVE)  # type: ignore[call-overload]
    if not ok or not np.isfinite(rvec).all() or not np.isfinite(tvec).all() or tvec[2, 0] <= 0:
        raise PoseError("solvePnP found no pose in front of the camera")
    rot, _ = cv2.Rodrigues(rvec)
    yaw, pitch, roll = matrix_to_euler(rot)
    t = tvec.reshape(3)
    return Pose(float(yaw), float(pitch), float(roll), float(t[0]), float(t[1]), float(t[2])), (rvec, tvec)


def smooth_poses(poses: np.ndarray, holds: np.ndarray, sigma: float = POSE_SMOOTH_SIGMA) -> np.ndarray:
    """Poses [F, 6] low-passed over the clip's distinct frames; held frames keep their pose.

    Why: a per-frame fit of face-mesh landmarks jitters by ~0.3° from frame to frame, as much as a
    talking head turns, so differences of raw poses are mostly noise. Head motion is smooth at
    25–30 frames per second, the jitter is not: a Gaussian of ``sigma`` distinct frames (1.5: the
    amplitude of a 3.1 Hz motion halves for a 25 fps source, 3.7 Hz at 30 fps) keeps the motion and
    removes most of the jitter (chosen on the truths of benchmarks/bench_pose.py).
    ``holds[t]`` marks frame t as a repeat of frame t-1 (a 25 fps frame held to 30 FPS, a frozen
    picture): the filter runs over the other frames only, in their order, and a held frame gets its
    original's filtered pose, so holds keep exactly zero velocity and do not slow the motion around
    them. Rotations are averaged as matrices and projected back onto rotations (SVD), which needs
    no angle unwrapping; translations are averaged plainly. Units stay those of ``poses``.
    """
    poses = np.asarray(poses, dtype=np.float64)
    holds = np.asarray(holds, dtype=bool).copy()
    if poses.ndim != 2 or poses.shape[1] != 6 or holds.shape != (len(poses),):
        raise PoseError(f"poses must be [F, 6] with holds [F], got {poses.shape} and {holds.shape}")
    if len(poses) == 0 or sigma <= 0:
        return poses.copy()
    holds[0] = False
    first = ~holds
    owner = np.cumsum(first) - 1  # frame → index of the distinct frame it shows
    distinct = poses[first]
    m = len(distinct)
    radius = int(np.ceil(3 * sigma))
    w = np.exp(-0.5 * (np.arange(-radius, radius + 1) / sigma) ** 2)
    w /= w.sum()
    # Past either end the motion is mirrored through the end frame (point reflection), so a head
    # turning steadily keeps its speed up to the clip's edges instead of slowing into them.
    j = np.arange(-radius, m + radius)
    src = np.clip(np.where(j < 0, -j, np.where(j > m - 1, 2 * (m - 1) - j, j)), 0, m - 1)
    end = np.where(j < 0, 0, m - 1)
    mirrored = (j < 0) | (j > m - 1)
    rot = euler_to_matrix(distinct[:, :3])
    pad_rot = rot[src].copy()
    e = rot[end[mirrored]]
    pad_rot[mirrored] = e @ np.swapaxes(rot[src[mirrored]], -1, -2) @ e
    pad_t = distinct[src, 3:].copy()
    pad_t[mirrored] = 2 * distinct[end[mirrored], 3:] - pad_t[mirrored]
    win = np.arange(m)[:, None] + np.arange(2 * radius + 1)  # window of each frame in the padding
    mean = np.einsum("j,mjab->mab", w, pad_rot[win])
    u, _, vt = np.linalg.svd(mean)
    fix = np.ones((m, 3))
    fix[:, 2] = np.sign(np.linalg.det(u @ vt))
    out = np.empty_like(distinct)
    out[:, :3] = matrix_to_euler((u * fix[:, None, :]) @ vt)
    out[:, 3:] = np.einsum("j,mjc->mc", w, pad_t[win])
    return out[owner]


def source_times(source: np.ndarray) -> np.ndarray:
    """Time of each output frame's source frame, in output frames (float [F]).

    ``source[t]`` is the decode-order index of the source frame output frame t shows (label's
    sample-and-hold: the latest source frame at or before t). The source rate is taken as
    constant over the clip: p = output frames per source frame, a line fitted through the first
    output frame of each source frame (snapped to a ratio of small integers such as 6/5 when
    within 0.2 %), and source frame k sits at k·p + a, with a the largest offset that keeps every
    source frame at or before the first output frame showing it. A 30 fps source gives t itself;
    a 25 fps source at 30 FPS gives 1.2·k.
    """
    source = np.asarray(source, dtype=np.float64)
    f = len(source)
    if f == 0:
        return source.copy()
    new = np.r_[True, source[1:] != source[:-1]]
    first = np.flatnonzero(new)  # first output frame showing each distinct source frame
    k = source[first]
    if len(first) < 2 or k[-1] <= k[0]:
        return np.arange(f, dtype=np.float64)
    per_out = float(np.polyfit(k, first, 1)[0])  # output frames per source frame
    snapped = float(Fraction(per_out).limit_denominator(50))  # 25 → 30 fps: exactly 6/5
    if abs(snapped - per_out) < 2e-3 * per_out:
        per_out = snapped
    a = float(np.min(first - k * per_out))
    return k[np.cumsum(new) - 1] * per_out + a


def resample_poses(poses: np.ndarray, source: np.ndarray) -> np.ndarray:
    """Poses [F, 6] of distinct source frames moved to the output frames' own times.

    Why: a 25 fps source held to 30 FPS shows every fifth source frame twice, so a head turning
    at constant speed reads 0 on the hold and a double step on the next frame, while generation
    asks for one constant speed. Here each distinct source frame's pose (the first output frame
    showing it, e.g. after :func:`smooth_poses`) is placed at its source time
    (:func:`source_times`) and output frame t gets the rotation slerped between the source frames
    on either side of t (translations linearly), so the velocity is that of the head's motion in
    time, per 30 FPS frame. Past the last source frame the last step continues (at most one
    source step), so the clip does not end in a fake stop. A 30 fps source is returned as is.
    """
    poses = np.asarray(poses, dtype=np.float64)
    source = np.asarray(source)
    if poses.ndim != 2 or poses.shape[1] != 6 or source.shape != (len(poses),):
        raise PoseError(f"poses must be [F, 6] with source [F], got {poses.shape} and {source.shape}")
    f = len(poses)
    new = np.r_[True, source[1:] != source[:-1]] if f else np.zeros(0, bool)
    if new.all():
        return poses.copy()
    first = np.flatnonzero(new)
    if len(first) < 2:
        return poses.copy()
    tau = source_times(source)[first]
    known = poses[first]
    t = np.arange(f, dtype=np.float64)
    j = np.clip(np.searchsorted(tau, t, side="right") - 1, 0, len(first) - 2)
    s = np.clip((t - tau[j]) / np.maximum(tau[j + 1] - tau[j], 1e-9), 0.0, 2.0)
    rot = euler_to_matrix(known[:, :3])
    step = np.swapaxes(rot[:-1], -1, -2) @ rot[1:]  # R_j^T R_{j+1}
    vec = np.stack([cv2.Rodrigues(m)[0].reshape(3) for m in step])
    part = np.stack([cv2.Rodrigues(v)[0] for v in vec[j] * s[:, None]])
    out = np.empty_like(poses)
    out[:, :3] = matrix_to_euler(rot[j] @ part)
    out[:, 3:] = known[j, 3:] + s[:, None] * (known[j + 1, 3:] - known[j, 3:])
    return out


class HeadPoseEstimator:
    """Callable on RGB crops → Pose, or None where the face mesh finds no face.

    Every frame is measured on its own: the face mesh runs in static-image mode (its detector
    places the landmark region from the image itself) and PnP starts fresh. In tracking mode the
    region came from the previous frame's landmarks, so an identical image read differently from
    one frame to the next (0.6–1.1 deg/frame of fake velocity on held frames) and errors carried
    over; now the same image always gives the same landmarks and pose. It costs the mesh's detector
    on every frame (~2 ms of CPU, see BENCHMARKS.md). Smooth the poses with :func:`smooth_poses`
    before differencing them.

    After each call ``landmarks`` holds that frame's 468 face-mesh landmarks [468, 3] float32
    (x, y in crop pixels; z = depth in the same pixel scale, smaller = nearer the camera), or None
    when no face was found. Use as a context manager or call ``close()``.
    """

    def __init__(self, min_confidence: float = 0.5) -> None:
        import mediapipe as mp

        self._mesh = mp.solutions.face_mesh.FaceMesh(
            static_image_mode=True,
            max_num_faces=1,
            refine_landmarks=False,
            min_detection_confidence=min_confidence,
        )
        self.landmarks: np.ndarray | None = None

    def mesh(self, crop: np.ndarray) -> np.ndarray | None:
        """Face mesh landmarks [468, 3] float32 in crop pixels, or None."""
        if crop.ndim != 3 or crop.shape[2] != 3 or crop.dtype != np.uint8:
            raise PoseError(f"expected an RGB uint8 crop HxWx3, got {crop.shape} {crop.dtype}")
        if self._mesh is None:
            raise PoseError("HeadPoseEstimator is closed")
        res = self._mesh.process(np.ascontiguousarray(crop))
        if not res.multi_face_landmarks:
            return None
        h, w = crop.shape[:2]
        lm = res.multi_face_landmarks[0].landmark
        return np.array([(p.x * w, p.y * h, p.z * w) for p in lm], dtype=np.float32)

    def __call__(self, crop: np.ndarray) -> Pose | None:
        self.landmarks = self.mesh(crop)
        if self.landmarks is None:
            return None
        h, w = crop.shape[:2]
        try:
            pose, _ = solve_pose(self.landmarks[MESH_INDICES, :2], (w, h))
        except PoseError:
            return None
        return pose

    def close(self) -> None:
        if self._mesh is not None:
            self._mesh.close()
            self._mesh = None

    def __enter__(self) -> HeadPoseEstimator:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
