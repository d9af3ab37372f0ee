"""Head pose: conventions, velocities, and ground truth from a real still moved by known amounts."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from conftest import read_rgb

from emokit.data.crop import clip_crop_box, crop_square, square_crop_box
from emokit.data.decode import read_frames
from emokit.data.faces import FaceDetector
from emokit.data.pose import (
    MESH_INDICES,
    MODEL_POINTS,
    HeadPoseEstimator,
    PoseError,
    camera_matrix,
    euler_to_matrix,
    fill_missing,
    matrix_to_euler,
    relative_rotation_deg,
    resample_poses,
    rotation_velocity,
    smooth_poses,
    source_times,
    solve_pose,
)
from emokit.data.track import track_main_face


def _project(angles, t=(0.0, 0.0, 40.0), size=512) -> np.ndarray:
    rvec, _ = cv2.Rodrigues(euler_to_matrix(np.array(angles, dtype=float)))
    pts, _ = cv2.projectPoints(MODEL_POINTS, rvec, np.array(t), camera_matrix(size, size), None)
    return pts.reshape(-1, 2)


NOSE, FOREHEAD = list(MESH_INDICES).index(1), list(MESH_INDICES).index(10)


def test_angle_signs_follow_the_documented_convention():
    base = _project([0, 0, 0])
    assert _project([10, 0, 0])[NOSE, 0] > base[NOSE, 0] + 5  # yaw +: nose moves right
    assert _project([0, 10, 0])[NOSE, 1] < base[NOSE, 1] - 5  # pitch +: nose moves up
    # roll +: counter-clockwise in the picture, like cv2.getRotationMatrix2D(angle=+)
    assert _project([0, 0, 10])[FOREHEAD, 0] < base[FOREHEAD, 0] - 5
    rng = np.random.default_rng(1)
    angles = rng.uniform(-70, 70, (200, 3))
    np.testing.assert_allclose(matrix_to_euler(euler_to_matrix(angles)), angles, atol=1e-9)


def test_solve_pose_recovers_a_known_pose_exactly():
    truth = (-25.0, 12.0, 7.0, 1.5, -2.0, 45.0)
    pose, guess = solve_pose(_project(truth[:3], truth[3:]), (512, 512))
    np.testing.assert_allclose(pose, truth, atol=1e-4)
    again, _ = solve_pose(_project(truth[:3], truth[3:]), (512, 512), guess)
    np.testing.assert_allclose(again, truth, atol=1e-4)


def test_rotation_velocity_speed_axes_and_wrap():
    f = 10
    poses = np.zeros((f, 6))
    poses[:, 0] = np.arange(f) * 1.5  # yaw 1.5°/frame
    speed, axes = rotation_velocity(poses)
    np.testing.assert_allclose(speed, 1.5, atol=1e-9)  # frame 0 copies frame 1
    np.testing.assert_allclose(axes, [[1.5, 0, 0]] * f, atol=1e-9)
    # roll across ±180°: 2°/frame, not a 358° jump
    wrap = np.zeros((3, 6))
    wrap[:, 2] = [178.0, -180.0, -178.0]
    speed, axes = rotation_velocity(wrap)
    np.testing.assert_allclose(speed, 2.0, atol=1e-9)
    np.testing.assert_allclose(axes[:, 2], 2.0, atol=1e-9)
    # speed is the angle of the relative rotation, not the sum of the axis rates
    both = np.zeros((2, 6))
    both[1, :2] = [3.0, 4.0]
    speed, _ = rotation_velocity(both)
    assert 4.9 < speed[1] < 5.01
    assert rotation_velocity(np.zeros((1, 6)))[0].tolist() == [0.0]
    with pytest.raises(PoseError):
        rotation_velocity(np.full((3, 6), np.nan))


def test_fill_missing_interpolates_unwrapped_angles():
    from emokit.data.pose import Pose

    poses = [Pose(170, 0, 0, 0, 0, 40), None, Pose(-170, 10, 0, 0, 0, 42), None]
    filled, found = fill_missing(poses)
    assert found.tolist() == [True, False, True, False]
    assert filled[1, 0] == pytest.approx(180.0) or filled[1, 0] == pytest.approx(-180.0)
    assert filled[1, 1] == pytest.approx(5.0) and filled[1, 5] == pytest.approx(41.0)
    np.testing.assert_allclose(filled[3], filled[2])
    with pytest.raises(PoseError):
        fill_missing([None, None])


def test_face_model_indices_match_the_real_mesh(portraits):
    """The 12 model vertices fit the mesh's own 3D landmarks on a real face to < 1.2 model units.

    A wrong landmark index would be off by several units (the face is ~15 units wide)."""
    import mediapipe as mp

    img = read_rgb(portraits / "woman_frontal.jpg")
    with FaceDetector() as det:
        crop = crop_square(img, square_crop_box(det(img)[0], 1.5), 512)
    with mp.solutions.face_mesh.FaceMesh(static_image_mode=True) as mesh:
        lm = mesh.process(crop).multi_face_landmarks[0].landmark
    x = np.array([(p.x * 512, p.y * 512, p.z * 512) for p in lm])[MESH_INDICES]
    y = MODEL_POINTS
    xc, yc = x - x.mean(0), y - y.mean(0)
    u, s, vt = np.linalg.svd(xc.T @ yc)
    rot = u @ vt
    scale = s.sum() / (yc**2).sum()
    residual = np.linalg.norm(xc - scale * yc @ rot.T, axis=1) / scale
    assert residual.max() < 1.2, dict(zip(MESH_INDICES.tolist(), residual.round(2)))


def test_ground_truth_roll_and_translation_through_25_to_30_fps(portraits):
    """A real portrait rolled, moved and zoomed by known amounts at 25 fps, held to 30 fps."""
    img = read_rgb(portraits / "woman_frontal.jpg")
    n_src, size = 100, 900  # 4 s at 25 fps on a 900² canvas
    k = np.arange(n_src)
    roll = np.interp(k, [0, 25, 75, 100], [0, 30, -30, 0])  # ±1.2°/source frame
    shift = np.column_stack([np.linspace(0, 60, n_src), np.linspace(0, -30, n_src)])
    zoom = np.linspace(0.9, 1.0, n_src)
    centre = (img.shape[1] / 2, img.shape[0] / 2)

    def warp(i: int) -> np.ndarray:
        m = cv2.getRotationMatrix2D(centre, roll[i], zoom[i])
        m[:, 2] += np.array([size / 2, size / 2]) - centre + shift[i]
        return m

    src = [cv2.warpAffine(img, warp(i), (size, size), borderValue=(110, 110, 110)) for i in k]
    shown = (np.arange(120) * 25) // 30  # sample-and-hold: output j shows source floor(j·25/30)
    frames = [src[i] for i in shown]

    with FaceDetector() as det:
        face0 = det(img)[0]
        detections = [det(f) for f in frames]
    track = track_main_face(detections, 30, 0.5, frame_size=(size, size), min_face_frac=0.05)
    assert track.ok and track.gap_frames == 0 and track.max_faces == 1

    # boxes follow the known motion of the face centre (and the zoom)
    c0 = np.array([*face0.center, 1.0])
    true_centre = np.array([warp(i) @ c0 for i in shown])
    b = track.boxes
    centre_err = np.linalg.norm((b[:, :2] + b[:, 2:]) / 2 - true_centre, axis=1)
    side = np.sqrt((b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1]))
    assert (centre_err < 0.12 * side).all(), centre_err.max()
    ratio = side / (face0.width * zoom[shown])
    assert 0.8 < ratio.min() and ratio.max() < 1.15

    crop_box = clip_crop_box(track.boxes, 1.5, frame_size=(size, size))
    poses, holds = _poses(frames, crop_box, 512)
    assert all(p is not None for p in poses)
    assert holds.tolist() == [False, *(shown[1:] == shown[:-1])]  # identical images, same landmarks
    raw, _ = fill_missing(poses)
    arr = smooth_poses(raw, holds)
    speed, axes = rotation_velocity(arr)
    true_step = np.diff(roll[shown])  # 0 on held frames, ±1.2 on the others
    assert (true_step == 0).sum() == 20  # 120 output frames show 100 source frames
    np.testing.assert_array_less(speed[1:][true_step == 0], 1e-4)  # holds stay still (arccos ~1e-6)
    # the smoothing rounds the two instant reversals of the roll rate (source frames 25 and 75)
    turn = np.isin(np.abs(shown[1:] - 25), range(4)) | np.isin(np.abs(shown[1:] - 75), range(4))
    np.testing.assert_array_less(np.abs(axes[1:, 2] - true_step)[~turn], 0.3)
    # the roll itself tracks the truth (up to the still's own tilt at frame 0), away from the turns
    np.testing.assert_array_less(np.abs((arr[:, 2] - arr[0, 2]) - roll[shown])[1:][~turn], 2.0)
    # in-plane rotation is mostly roll: the axis-free speed follows |roll step| frame by frame
    assert np.median(np.abs(speed[1:] - np.abs(true_step))) <= 0.15


def _poses(frames, crop_box, size):
    """Per-frame poses of crops of ``frames`` and which frames repeat the previous landmarks."""
    poses, holds, prev = [], [], None
    with HeadPoseEstimator() as est:
        for f in frames:
            poses.append(est(crop_square(f, crop_box, size)))
            lm = est.landmarks
            assert lm is None or (lm.shape == (468, 3) and lm.dtype == np.float32)
            holds.append(prev is not None and lm is not None and np.array_equal(lm, prev))
            prev = lm
    return poses, np.array(holds)


@pytest.fixture(scope="module")
def talking(videos):
    """3 s of a real talking head (25 fps source) at 30 FPS, its crop box and the source frame
    each output frame shows (sample-and-hold: floor(j·25/30))."""
    frames = list(read_frames(videos / "speaker_c_25fps_512.mp4", 0.0, 3.0))
    with FaceDetector() as det:
        track = track_main_face([det(f) for f in frames], 30, 0.5, frame_size=(512, 512))
    assert track.ok
    box = clip_crop_box(track.boxes, 1.5, frame_size=(512, 512))
    return frames, box, (np.arange(len(frames)) * 25) // 30


def _angle(rot):
    return np.degrees(np.arccos(np.clip((np.trace(rot, axis1=-2, axis2=-1) - 1) / 2, -1, 1)))


def test_known_in_plane_rotation_of_a_real_talking_video(talking):
    """The video turned about the crop centre by θ(t) = 10°·sin(2πt/3) (per source frame): the
    rotation between the two pose series is |θ|, its frame-to-frame change |θ(t) − θ(t−1)|."""
    frames, box, shown = talking
    theta = 10 * np.sin(2 * np.pi * (shown / 25) / 3)
    centre = ((box[0] + box[2]) / 2, (box[1] + box[3]) / 2)
    turned = [
        cv2.warpAffine(f, cv2.getRotationMatrix2D(centre, a, 1.0), (512, 512), borderMode=cv2.BORDER_REFLECT)
        for f, a in zip(frames, theta)
    ]
    series = []
    for video in (frames, turned):
        poses, holds = _poses(video, box, 256)
        assert holds.sum() == 15  # the 15 held frames of 90, in both videos
        series.append(euler_to_matrix(smooth_poses(fill_missing(poses)[0], holds)[:, :3]))
    r0, r1 = series
    rel_err = np.abs(_angle(np.swapaxes(r0, -1, -2) @ r1) - np.abs(theta))
    d = r1 @ np.swapaxes(r0, -1, -2)
    change_err = np.abs(_angle(np.swapaxes(d[:-1], -1, -2) @ d[1:]) - np.abs(np.diff(theta)))
    assert np.median(rel_err) <= 0.25 and np.percentile(rel_err, 95) <= 0.7, rel_err
    assert np.median(change_err) <= 0.12, change_err


def test_paused_real_video_has_zero_velocity_inside_the_pause(talking):
    """One frame held for 1 s in the middle of a real talking head: no velocity inside the pause,
    the real motion around it is kept."""
    frames, box, _ = talking
    paused = frames[:45] + [frames[45]] * 30 + frames[45:]
    poses, holds = _poses(paused, box, 256)
    assert holds[46:75].all()
    speed, _ = rotation_velocity(smooth_poses(fill_missing(poses)[0], holds))
    np.testing.assert_array_less(speed[46:75], 1e-4)  # arccos of a rounded identity: ~1e-6
    moving = np.r_[speed[1:45], speed[76:]]
    assert np.median(moving[moving > 0]) > 0.1  # a talking head does move


def test_smooth_poses_keeps_holds_and_steady_motion():
    f = 40
    poses = np.zeros((f, 6))
    poses[:, 0] = np.arange(f) * 0.5  # yaw 0.5°/frame
    poses[:, 5] = 40.0
    holds = np.zeros(f, bool)
    holds[10:15] = True  # a frozen stretch: the source shows frame 9 until frame 15
    poses[10:15] = poses[9]
    poses[15:, 0] -= 2.5  # time does not run while the picture is held
    rng = np.random.default_rng(0)
    noisy = poses.copy()
    noisy[~holds, :3] += rng.normal(0, 0.3, (f - 5, 3))
    noisy[holds] = noisy[9]
    out = smooth_poses(noisy, holds)
    speed = relative_rotation_deg(out[:, :3])
    np.testing.assert_array_equal(out[10:15], np.repeat(out[9:10], 5, axis=0))
    assert speed[9:14].max() < 1e-4  # frames 10..14 repeat frame 9
    raw_err = np.abs(relative_rotation_deg(noisy[:, :3]) - 0.5)[~holds[1:]]
    err = np.abs(speed - 0.5)[~holds[1:]][3:-3]
    assert np.median(err) < 0.5 * np.median(raw_err)  # the filter removes most of the jitter
    np.testing.assert_allclose(out[:, 5], 40.0)
    np.testing.assert_array_equal(smooth_poses(noisy, holds, sigma=0), noisy)
    with pytest.raises(PoseError):
        smooth_poses(noisy, holds[:-1])


def test_resample_poses_gives_a_constant_speed_through_25fps_holds():
    """A head turning at 0.6°/source frame at 25 fps, held to 30 FPS: 0.5° per 30 FPS frame on
    every frame (holds included); a 30 fps source is left as it is."""
    source = (np.arange(60) * 25) // 30
    np.testing.assert_allclose(source_times(source)[[0, 6, 12]], [0.0, 6.0, 12.0])
    poses = np.zeros((60, 6))
    poses[:, 0] = 0.6 * source  # what sample-and-hold shows: a step of 0 on every hold
    poses[:, 3] = source
    speed, _ = rotation_velocity(resample_poses(poses, source))
    np.testing.assert_allclose(speed, 0.5, atol=1e-6)  # the last frame continues the last step
    np.testing.assert_allclose(np.diff(resample_poses(poses, source)[:, 3]), 25 / 30, atol=1e-9)
    steady = np.arange(30)
    np.testing.assert_array_equal(resample_poses(poses[:30], steady), poses[:30])
    with pytest.raises(PoseError):
        resample_poses(poses, source[:-1])


def test_real_25fps_holds_get_the_head_speed_and_a_pause_stays_still(videos):
    """speaker_c (a real 25 fps talking head) with one source frame shown for 2 s, sample-and-held
    to 30 FPS as label does: on 30 FPS holds the velocity is the neighbours' (not 0, the next frame
    no longer carries two steps), and inside the pause it stays ~0."""
    src = list(read_frames(videos / "speaker_c_25fps_512.mp4", 0.0, 3.0, 25))
    paused = src[:40] + [src[40]] * 50 + src[40:]  # a real pause: 50 source frames of one image
    source = (np.arange(len(paused) * 30 // 25) * 25) // 30
    with FaceDetector() as det:
        track = track_main_face([det(f) for f in src], 25, 0.5, frame_size=(512, 512))
    box = clip_crop_box(track.boxes, 1.5, frame_size=(512, 512))
    poses, same = _poses(paused, box, 256)  # one mesh per source frame, as label runs it
    assert same[41:90].all()
    raw = fill_missing(poses)[0][source]
    holds = np.r_[False, source[1:] == source[:-1]] | same[source]  # held, or the same image
    speed, _ = rotation_velocity(resample_poses(smooth_poses(raw, holds), source))
    old, _ = rotation_velocity(smooth_poses(raw, holds))
    hold = np.flatnonzero(np.r_[False, source[1:] == source[:-1]])
    hold = hold[(hold < 40 * 6 // 5 - 2) | (hold > 90 * 6 // 5 + 2)][:-1]  # outside the pause
    ratio = speed[hold] / (0.5 * (speed[hold - 1] + speed[hold + 1]))
    assert np.median(old[hold]) < 1e-4  # what sample-and-hold gave before: 0 on every hold
    assert 0.7 <= np.median(ratio) <= 1.3, ratio
    assert np.median(speed[hold]) > 0.05
    inside = np.arange(40 * 6 // 5 + 2, 90 * 6 // 5 - 1)
    assert np.median(speed[inside]) <= 0.05, speed[inside]


def test_head_turn_video_yaw_swings(videos):
    frames = list(read_frames(videos / "head_turn_25fps_224.mp4", 0.0, 13.8))
    with FaceDetector() as det:
        track = track_main_face([det(f) for f in frames], 30, 0.5, frame_size=(224, 224))
    assert track.ok
    crop_box = clip_crop_box(track.boxes, 1.5, frame_size=(224, 224))
    with HeadPoseEstimator() as est:
        poses = [est(crop_square(f, crop_box, 512)) for f in frames]
    arr, found = fill_missing(poses)
    assert found.mean() > 0.95
    yaw = np.convolve(arr[:, 0], np.ones(15) / 15, mode="valid")  # 0.5 s smoothing
    assert np.ptp(yaw) > 10.0
    # the head turns away and back: the smoothed yaw rate changes sign with real swings both ways
    rate = np.diff(yaw)
    assert (rate > 0).any() and (rate < 0).any()
    drop = max(yaw[i] - yaw[i:].min() for i in range(len(yaw)))
    rise = max(yaw[i:].max() - yaw[i] for i in range(len(yaw)))
    assert drop > 5.0 and rise > 5.0
    speed, _ = rotation_velocity(arr)
    assert 0.1 < np.median(speed) < 3.0  # deg/frame of a talking head


def test_no_face_gives_none_and_bad_crop_raises():
    with HeadPoseEstimator() as est:
        assert est(np.full((256, 256, 3), 90, np.uint8)) is None
        with pytest.raises(PoseError):
            est(np.zeros((256, 256), np.uint8))
