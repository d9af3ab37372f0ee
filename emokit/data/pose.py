"""6-DoF head pose per frame: MediaPipe face mesh landmarks + a 3D face model + solvePnP.

The 3D model is 12 vertices of MediaPipe's canonical face model (canonical_face_model.obj in
mediapipe/modules/face_geometry/data of the MediaPipe source; the 0.10.21 wheel does not ship the
file, so the coordinates are copied below, indices = face-mesh landmark indices). Units are the
model's (about centimetres), so the translation is in those units too.

Camera: pinhole with focal length = crop width and the principal point at the crop centre (face
crops are taken without knowing the source camera; the crop is fixed per clip, so the translation
is consistent within a clip). The mesh runs in tracking mode and PnP starts from the previous
frame's solution, which keeps consecutive poses stable (velocity is a difference of poses).

Angle convention (degrees), all 0 for a face looking straight into the camera:
- yaw   + = the face turns toward the image's right (the nose moves right in the picture);
- pitch + = the face tilts up (the nose moves up in the picture);
- roll  + = the head tilts counter-clockwise as seen in the picture (the same sign as the angle of
  ``cv2.getRotationMatrix2D``).
R = Ry(-yaw) · Rx(-pitch) · Rz(-roll) in OpenCV camera axes (x right, y down, z forward), i.e. the
rotation taking the model (x right, y down, z into the scene, looking at the camera) to the camera.
"""

from __future__ import annotations

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


class HeadPoseEstimator:
    """Callable on consecutive RGB crops of one clip → Pose, or None where no face mesh is found.

    Stateful (mesh tracking and the PnP initial guess carry over between calls): call ``reset()``
    before a new clip. Use as a context manager or call ``close()``.
    """

    def __init__(self, min_confidence: float = 0.5) -> None:
        self.min_confidence = min_confidence
        self._mesh = None
        self._guess: tuple[np.ndarray, np.ndarray] | None = None
        self.last_landmarks: np.ndarray | None = None  # [468, 2] pixels of the last found face
        self.reset()

    def reset(self) -> None:
        """Forget the previous clip: new mesh tracker, no PnP initial guess."""
        import mediapipe as mp

        if self._mesh is not None:
            self._mesh.close()
        self._mesh = mp.solutions.face_mesh.FaceMesh(
            static_image_mode=False,
            max_num_faces=1,
            refine_landmarks=False,
            min_detection_confidence=self.min_confidence,
            min_tracking_confidence=self.min_confidence,
        )
        self._guess = None
        self._tracking = False
        self.last_landmarks = None

    def landmarks(self, crop: np.ndarray) -> np.ndarray | None:
        """Face mesh landmarks [468, 2] in crop pixels, or None."""
        if crop.ndim != 3 or crop.shape[2] != 3 or crop.dtype != np.uint8:
            raise PoseError(f"expected an RGB uint8 crop HxWx3, got {crop.shape} {crop.dtype}")
        if self._mesh is None:
            raise PoseError("HeadPoseEstimator is closed")
        crop = np.ascontiguousarray(crop)
        res = self._mesh.process(crop)
        if not res.multi_face_landmarks:
            self._tracking = False
            return None
        if not self._tracking:
            # The tracker's first answer comes from its face detector's ROI, later ones from the
            # previous landmarks; running the first frame twice puts it in the same regime as the
            # rest, otherwise frame 0 → 1 shows a fake ~0.7° rotation on a still head.
            res = self._mesh.process(crop)
            self._tracking = True
            if not res.multi_face_landmarks:
                return None
        h, w = crop.shape[:2]
        lm = res.multi_face_landmarks[0].landmark
        return np.array([(p.x * w, p.y * h) for p in lm], dtype=np.float64)

    def __call__(self, crop: np.ndarray) -> Pose | None:
        pts = self.landmarks(crop)
        if pts is None:
            self._guess = None
            return None
        self.last_landmarks = pts
        h, w = crop.shape[:2]
        try:
            pose, self._guess = solve_pose(pts[MESH_INDICES], (w, h), self._guess)
        except PoseError:
            self._guess = None
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
