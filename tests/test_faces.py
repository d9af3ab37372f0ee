"""Face detection, main-face tracking and jump cuts, on the shared real videos and photos."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import read_rgb

from emokit.data.decode import read_frames
from emokit.data.faces import FaceBox, FaceDetectionError, FaceDetector
from emokit.data.jumpcuts import box_steps, find_jump_cuts
from emokit.data.windows import frame_windows
from emokit.data.track import FACE_LEAVES, FACE_TOO_SMALL, NO_FACE, track_main_face


@pytest.fixture(scope="module")
def detector():
    with FaceDetector() as det:
        yield det


@pytest.mark.parametrize(
    "name, side_range",
    [
        ("speaker_a_25fps_1080x1920.mp4", (180, 400)),  # small face in a tall frame
        ("speaker_b_30fps_1080x1920.mp4", (180, 400)),
        ("head_turn_25fps_224.mp4", (90, 180)),  # tight crop, face fills the frame
    ],
)
def test_detector_finds_the_speaker_in_full_res_pixels(videos, detector, name, side_range):
    frames = list(read_frames(videos / name, 1.0, 1.6, fps=10))
    with FaceDetector(detect_width=100_000) as full_res:
        for frame in frames:
            h, w = frame.shape[:2]
            boxes = detector(frame)
            assert boxes, f"no face in a frame of {name}"
            assert [b.area for b in boxes] == sorted((b.area for b in boxes), reverse=True)
            face = boxes[0]
            assert 0 <= face.x0 < face.x1 <= w and 0 <= face.y0 < face.y1 <= h
            assert side_range[0] < face.width < side_range[1]
            # detecting on the downscaled copy gives the box detection on the full frame gives
            ref = full_res(frame)[0]
            assert np.abs(face.xyxy() - ref.xyxy()).max() < 0.08 * ref.width


def test_auto_model_falls_back_to_full_range_for_small_faces(videos):
    frame = next(iter(read_frames(videos / "crowd_multiface_25fps_1080p.mp4", 1.0, 1.04)))
    with FaceDetector(model="short") as short, FaceDetector(model="auto") as auto:
        assert short(frame) == []  # faces ~6 % of the frame: too small for short range
        found = auto(frame)
    assert len(found) >= 1
    assert all(b.width < 0.15 * frame.shape[1] for b in found)


def test_portraits_two_faces_sorted_and_edge_face_clipped(portraits, detector):
    two = detector(read_rgb(portraits / "two_people.jpg"))
    assert len(two) == 2 and two[0].area >= two[1].area
    assert abs(two[0].center[0] - two[1].center[0]) > 200  # side by side
    img = read_rgb(portraits / "partial_face_at_edge.jpg")
    edge = detector(img)
    assert edge, "the partly cut-off face should still be found"
    h, w = img.shape[:2]
    b = edge[0]
    assert 0 <= b.x0 and b.x1 <= w and 0 <= b.y0 and b.y1 <= h


def test_detector_rejects_bad_input(detector):
    with pytest.raises(FaceDetectionError):
        detector(np.zeros((64, 64), np.uint8))
    with pytest.raises(FaceDetectionError):
        detector(np.zeros((64, 64, 3), np.float32))
    with pytest.raises(FaceDetectionError):
        FaceDetector(model="tiny")  # type: ignore[arg-type]
    assert detector(np.full((240, 320, 3), 127, np.uint8)) == []


# ---- tracking ---------------------------------------------------------------------------------


def _moving(n: int, x0: float = 100.0, dx: float = 2.0, side: float = 100.0) -> list[np.ndarray]:
    return [np.array([x0 + dx * t, 200.0, x0 + dx * t + side, 200.0 + side]) for t in range(n)]


def _dets(boxes: list[np.ndarray], missing: set[int] = frozenset()) -> list[list[FaceBox]]:
    return [[] if t in missing else [FaceBox(*b, 0.9)] for t, b in enumerate(boxes)]


def test_short_gaps_are_interpolated_and_counted():
    truth = _moving(60)
    track = track_main_face(_dets(truth, set(range(20, 26))), fps=30, max_gap_s=0.5)
    assert track.ok and track.reason is None
    assert track.gap_frames == 6 and track.longest_gap == 6
    assert track.longest_gap_s == pytest.approx(0.2)
    assert not track.detected[20:26].any() and track.detected[:20].all() and track.detected[26:].all()
    np.testing.assert_allclose(track.boxes, np.array(truth), atol=1e-9)  # linear motion: exact
    assert np.isnan(track.scores[22]) and track.scores[10] == pytest.approx(0.9)
    assert track.max_faces == 1


def test_long_gap_rejects_with_its_length():
    track = track_main_face(_dets(_moving(90), set(range(30, 60))), fps=30, max_gap_s=0.5)
    assert track.reason == "face missing for 1.0s"
    assert track.gap_frames == 30


def test_no_face_small_face_and_leaving_face_reasons():
    assert track_main_face([[] for _ in range(10)], 30, 0.5).reason == NO_FACE
    assert track_main_face([], 30, 0.5).reason == NO_FACE
    small = _dets(_moving(30, side=20.0))
    track = track_main_face(small, 30, 0.5, frame_size=(1920, 1080), min_face_frac=0.05)
    assert track.reason == FACE_TOO_SMALL and track.face_frac == pytest.approx(20 / 1080)
    # the face slides right until it touches the border, then is lost for the rest of the clip
    boxes = _moving(60, x0=300.0, dx=10.0)
    boxes = [np.minimum(b, [640, 480, 640, 480]) for b in boxes]
    gone = {t for t, b in enumerate(boxes) if b[2] >= 640 and t > 26}
    track = track_main_face(_dets(boxes, gone), 30, 0.5, frame_size=(640, 480))
    assert len(gone) > 15 and track.reason == FACE_LEAVES


def test_main_face_is_the_big_persistent_one_and_flukes_do_not_count():
    main = _moving(40, x0=300.0, side=120.0)
    dets = _dets(main)
    dets[7].insert(0, FaceBox(0, 0, 400, 400, 0.55))  # one-frame false positive, larger
    for t in range(40):  # a small face in the background all along
        dets[t].append(FaceBox(20, 20, 60, 60, 0.8))
    track = track_main_face(dets, 30, 0.5)
    np.testing.assert_allclose(track.boxes, np.array(main))
    assert track.max_faces == 2  # background face counts, the one-frame fluke does not
    assert track.face_counts[7] == 3


def test_crowd_is_multi_face_and_slides_have_no_face(videos, detector):
    frames = list(read_frames(videos / "crowd_multiface_25fps_1080p.mp4", 0.0, 4.2, max_width=960))
    track = track_main_face([detector(f) for f in frames], 30, 0.5, frame_size=(960, 540))
    assert track.max_faces > 1
    slides = read_frames(videos / "no_face_slides_30fps_1080p.mp4", 0.0, 2.0, fps=10, max_width=640)
    assert track_main_face([detector(f) for f in slides], 10, 0.5).reason == NO_FACE


# ---- jump cuts --------------------------------------------------------------------------------


def test_jump_cuts_on_a_synthetic_box_series():
    rng = np.random.default_rng(0)
    n = 200
    centre = np.column_stack([np.linspace(400, 460, n), np.full(n, 300.0)])
    side = np.full(n, 120.0)
    centre[80:] += [90, -20]  # jump: 0.77 face sizes between frames 79 and 80
    side[150:] *= 1.5  # zoom jump at 150
    centre[100:120, 0] += np.cumsum(np.full(20, 12.0))  # fast continuous move: 0.1 side/frame
    centre[120:, 0] += 240.0
    centre += rng.normal(0, 1.5, centre.shape)  # detector jitter
    boxes = np.column_stack([centre - side[:, None] / 2, centre + side[:, None] / 2])
    assert box_steps(boxes)[80] > 0.7
    assert find_jump_cuts(boxes) == [80, 150]
    assert frame_windows(n, 30, [80, 150], 1.0, 12.0) == [
        (0, 80),
        (80, 150),
        (150, 200),
    ]
    assert frame_windows(n, 30, [80, 150], 2.5, 12.0) == [(0, 80)]


def test_frame_windows_bounds():
    assert frame_windows(360, 30, [], 3.0, 12.0) == [(0, 360)]
    assert frame_windows(360, 30, [80], 3.0, 12.0) == [(80, 360)]  # 80 frames < 3 s dropped
    assert frame_windows(300, 30, [0, 300, 150], 3.0, 12.0) == [(0, 150), (150, 300)]  # 5 s each
    long = frame_windows(30 * 30, 30, [], 3.0, 12.0)  # 30 s → 3 parts of 10 s
    assert long == [(0, 300), (300, 600), (600, 900)]
    assert frame_windows(50, 30, [], 3.0, 12.0) == []
    with pytest.raises(ValueError):
        frame_windows(100, 0, [], 3.0, 12.0)


def test_jump_cut_found_where_two_real_speakers_are_joined(videos, detector):
    a = list(read_frames(videos / "speaker_a_25fps_1080x1920.mp4", 2.0, 5.5, max_width=540))
    b = list(read_frames(videos / "speaker_b_30fps_1080x1920.mp4", 2.0, 5.5, max_width=540))
    track = track_main_face([detector(f) for f in a + b], 30, 0.5, frame_size=(540, 960))
    assert track.ok and track.gap_frames < 5
    cuts = find_jump_cuts(track.boxes)
    assert cuts == [len(a)]
    assert frame_windows(len(a) + len(b), 30, cuts, 3.0, 12.0) == [(0, 105), (105, 210)]


def test_label_detection_copy_boxes_match_full_resolution(videos, detector):
    """Label detects on WindowFrames.small's bilinear copy (OpenCV on the YUV planes); mapped back
    with the copy's own factors, its boxes must sit where full-resolution detection puts them.
    Measured on these frames: offset (mean signed error of an edge) 1.2 % of the face side and
    mean |error| 1.4 %; swscale's bilinear copy, used before, read 2.6 % and 2.3 %."""
    import av

    from emokit.data.frames import WindowFrames

    errs = []
    with (
        av.open(str(videos / "speaker_b_30fps_1080x1920.mp4")) as c,
        FaceDetector(detect_width=100_000) as full_res,
    ):
        frames = None
        for i, frame in enumerate(c.decode(video=0)):
            if i >= 60:
                break
            if i % 3:
                continue
            frames = frames or WindowFrames(frame, 60)
            small = frames.small(frame, 320)
            assert small.shape[1] == 320 and small.shape[0] % 2 == 0
            kx, ky = frame.width / small.shape[1], frame.height / small.shape[0]
            (ref,) = full_res(frame.to_ndarray(format="rgb24"))[:1]
            (b,) = detector(small)[:1]
            side = np.sqrt(ref.area)
            errs.append((np.array([b.x0 * kx, b.y0 * ky, b.x1 * kx, b.y1 * ky]) - ref.xyxy()) / side)
    errs = np.array(errs)
    assert len(errs) == 20
    assert np.abs(errs.mean(axis=0)).max() < 0.02
    assert np.abs(errs).mean() < 0.018
