"""Square face crops: box arithmetic, padding at borders, and coordinates that round-trip."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from conftest import read_rgb

from emokit.data.crop import (
    MIN_CROP_SCALE,
    CropError,
    clip_crop_box,
    crop_square,
    fit_crop_box,
    padded_fraction,
    square_crop_box,
    to_crop_coords,
    union_box,
)
from emokit.data.faces import FaceDetector


def test_square_crop_box_is_centred_square_of_scaled_long_side():
    box = (100.0, 200.0, 180.0, 300.0)  # 80 wide, 100 tall, centre (140, 250)
    x0, y0, x1, y1 = square_crop_box(box, scale=1.5)
    assert x1 - x0 == y1 - y0 == 150
    assert (x0 + x1) / 2 == pytest.approx(140, abs=0.5)
    assert (y0 + y1) / 2 == pytest.approx(250, abs=0.5)
    assert all(isinstance(v, int) for v in (x0, y0, x1, y1))


def test_square_crop_box_may_leave_frame_unless_clamped():
    box = (5.0, 10.0, 105.0, 110.0)  # near the top-left corner of a 640x480 frame
    free = square_crop_box(box, 1.5)
    assert free[0] < 0 and free[1] < 0
    clamped = square_crop_box(box, 1.5, frame_size=(640, 480))
    assert clamped[:2] == (0, 0) and clamped[2] - clamped[0] == 150
    # the face stays inside the shifted square
    assert clamped[0] <= box[0] and clamped[2] >= box[2] and clamped[3] >= box[3]
    # a square larger than the frame is not shrunk: it keeps its side and gets padded later
    big = square_crop_box((0, 0, 400, 400), 1.5, frame_size=(500, 500))
    assert big[2] - big[0] == 600 and big[0] < 0


def test_bad_boxes_raise_one_line_errors():
    for bad in [(10, 10, 10, 20), (10, 10, 5, 20), (0, 0, np.nan, 4)]:
        with pytest.raises(CropError):
            square_crop_box(bad)
    with pytest.raises(CropError):
        square_crop_box((0, 0, 10, 10), scale=0)
    with pytest.raises(CropError):
        union_box(np.full((3, 4), np.nan))
    frame = np.zeros((50, 50, 3), np.uint8)
    with pytest.raises(CropError):
        crop_square(frame, (0, 0, 10, 20), 8)  # not square
    with pytest.raises(CropError):
        crop_square(frame, (100, 100, 120, 120), 8, pad="edge")  # nothing to replicate
    with pytest.raises(CropError):
        crop_square(frame, (100, 100, 120, 120), 8, pad="soft")  # nothing to mirror
    with pytest.raises(CropError):
        fit_crop_box((0, 0, 10, 10), (50, 50), scale=1.5, min_scale=0.9)  # margin below the box


def test_crop_square_pads_zero_or_edge_where_box_leaves_frame(portraits):
    img = read_rgb(portraits / "partial_face_at_edge.jpg")
    h, w = img.shape[:2]
    box = (w - 100, 20, w + 100, 220)  # right half outside the frame
    zero = crop_square(img, box, 200, pad="zero")
    edge = crop_square(img, box, 200, pad="edge")
    assert zero.shape == edge.shape == (200, 200, 3) and zero.dtype == np.uint8
    np.testing.assert_array_equal(zero[:, :100], img[20:220, w - 100 :])
    assert not zero[:, 100:].any()
    np.testing.assert_array_equal(edge[:, 100:], np.repeat(img[20:220, w - 1 : w], 100, axis=1))
    # fully outside with zero padding: all black, still the right size
    assert not crop_square(img, (-500, -500, -300, -300), 64).any()


def test_crop_square_resizes_and_keeps_content(portraits):
    img = read_rgb(portraits / "man_frontal_3511px.jpg")
    crop = crop_square(img, (1000, 1000, 2000, 2000), 100)
    assert crop.shape == (100, 100, 3)
    ref = cv2.resize(img[1000:2000, 1000:2000], (100, 100), interpolation=cv2.INTER_AREA)
    assert np.abs(crop.astype(int) - ref.astype(int)).max() <= 1
    up = crop_square(img, (0, 0, 64, 64), 256)
    assert up.shape == (256, 256, 3)


def test_to_crop_coords_matches_detection_on_the_crop(portraits):
    """A face box mapped into crop pixels lands where the detector finds the face in the crop."""
    img = read_rgb(portraits / "man_upper_body.jpg")
    with FaceDetector() as det:
        face = det(img)[0]
        crop_box = square_crop_box(face, 1.5, frame_size=(img.shape[1], img.shape[0]))
        crop = crop_square(img, crop_box, 512)
        again = det(crop)[0]
    mapped = to_crop_coords(face.xyxy(), crop_box, 512)
    side = mapped[2] - mapped[0]
    assert np.abs(mapped - again.xyxy()).max() < 0.12 * side
    # the face sits in the middle third of the crop (×1.5 expansion around its centre)
    assert 512 / 6 - 5 < mapped[0] < mapped[2] < 512 * 5 / 6 + 5
    # batches map too, and inverse arithmetic holds
    many = to_crop_coords(np.stack([face.xyxy(), face.xyxy()]), crop_box, 512)
    np.testing.assert_allclose(many[1], mapped)


def test_clip_crop_box_covers_union_of_track():
    boxes = np.array([[100, 100, 200, 200], [150, 120, 250, 220], [np.nan] * 4, [120, 90, 220, 190]])
    u = union_box(boxes)
    assert u == (100, 90, 250, 220)
    cb = clip_crop_box(boxes, 1.5, frame_size=(1000, 1000))
    assert cb[2] - cb[0] == round(1.5 * 150)
    assert cb[0] <= 100 and cb[1] <= 90 and cb[2] >= 250 and cb[3] >= 220


def _holds(crop, box, min_scale=MIN_CROP_SCALE) -> bool:
    """Whether ``crop`` holds the ``min_scale`` square centred on ``box`` (±1 px of rounding)."""
    side = min_scale * max(box[2] - box[0], box[3] - box[1])
    cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
    return (
        crop[0] <= cx - side / 2 + 1
        and crop[1] <= cy - side / 2 + 1
        and crop[2] >= cx + side / 2 - 1
        and crop[3] >= cy + side / 2 - 1
    )


def test_fit_crop_box_shifts_then_shrinks_then_pads():
    # room everywhere: the plain ×1.5 square, centred
    box = (200.0, 150.0, 300.0, 250.0)
    assert fit_crop_box(box, (640, 480)) == square_crop_box(box, 1.5)
    # near the top-left corner with room to shift: same side, moved inside, face kept with margin
    box = (20.0, 30.0, 120.0, 130.0)
    crop = fit_crop_box(box, (640, 480))
    assert crop[2] - crop[0] == 150 and crop[:2] == (0, 5) and _holds(crop, box)
    assert padded_fraction(crop, (640, 480)) == 0.0
    # frame shorter than the ×1.5 square: shrunk to the frame, still no padding
    box = (20.0, 20.0, 120.0, 120.0)
    crop = fit_crop_box(box, (640, 130))
    assert crop[2] - crop[0] == 130 and crop[1] == 0 and crop[3] == 130 and _holds(crop, box)
    assert padded_fraction(crop, (640, 130)) == 0.0
    # the old rule padded here (it never shrinks)
    assert padded_fraction(square_crop_box(box, 1.5, (640, 130)), (640, 130)) > 0.1
    # frame shorter than the minimum margin: the smallest square, padded only as far as needed
    box = (20.0, 10.0, 120.0, 110.0)
    crop = fit_crop_box(box, (640, 110))
    side = crop[2] - crop[0]
    assert side == 115 and _holds(crop, box)
    rows = min(crop[3], 110) - max(crop[1], 0)  # the frame rows the crop covers
    assert padded_fraction(crop, (640, 110)) == pytest.approx(1 - rows / side, abs=1e-9)
    # the margin square spans rows 2.5..117.5: at most 7.5 + 1 px (rounding) padded rows
    assert rows >= 115 - 8.5
    # a face 5 px from the edge keeps its margin: 2 px of padding rather than a cut face
    box = (5.0, 200.0, 105.0, 300.0)
    crop = fit_crop_box(box, (640, 480))
    assert crop[0] == -2 and _holds(crop, box)
    assert 0 < padded_fraction(crop, (640, 480)) < 0.02
    # a square wider than the frame covers the frame (padding split), never leaves the face
    box = (10.0, 10.0, 90.0, 190.0)
    crop = fit_crop_box(box, (100, 200))
    assert crop[0] < 0 and crop[2] > 100 and _holds(crop, box)
    # clip_crop_box uses the same rule on the track's union
    boxes = np.array([[20, 20, 70, 120], [60, 20, 120, 110]], float)
    assert clip_crop_box(boxes, 1.5, (640, 130)) == fit_crop_box((20, 20, 120, 120), (640, 130))


def test_soft_padding_mirrors_and_blurs_instead_of_black(portraits):
    img = read_rgb(portraits / "partial_face_at_edge.jpg")
    h, w = img.shape[:2]
    box = (w - 100, 20, w + 100, 220)  # right half outside the frame, 1:1 output
    soft = crop_square(img, box, 200, pad="soft").astype(np.float32)
    real = img[20:220, w - 100 :].astype(np.float32)
    np.testing.assert_array_equal(soft[:, :100], real)  # the picture itself is untouched
    pad = soft[:, 100:]
    # the first padded column continues the picture (mirror, no repeated edge), no step
    mirror = img[20:220, w - 2].astype(np.float32)
    assert np.abs(pad[:, 0] - mirror).mean() < 6
    assert np.abs(pad[:, 0] - real[:, -1]).mean() < 2 * np.abs(np.diff(real, axis=1)).mean() + 2
    # not black: as bright as the picture it continues
    assert pad.mean() == pytest.approx(real[:, -100:].mean(), rel=0.25)
    # far from the edge only blurred colour is left: little fine detail
    detail = np.abs(np.diff(pad[:, 20:], axis=1)).mean()
    assert detail < 0.3 * np.abs(np.diff(real, axis=1)).mean()
    # downscaled output: the same picture, padding at the output size
    small = crop_square(img, box, 64, pad="soft")
    ref = cv2.resize(img[20:220, w - 100 :], (32, 64), interpolation=cv2.INTER_AREA)
    assert np.abs(small[:, :32].astype(int) - ref.astype(int)).max() <= 1
