"""Portrait loading on the real photos in shared/data/portraits: modes, EXIF, size, faces, crops."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from emokit.data.crop import (
    MIN_CROP_SCALE,
    PADDED_FLAG,
    crop_square,
    padded_fraction,
    square_crop_box,
    to_crop_coords,
)
from emokit.data.faces import FaceDetector
from emokit.generate import portrait as portrait_mod
from emokit.generate.portrait import Portrait, PortraitError, load_portrait

SIZE = 128


def _check(p: Portrait, size: int = SIZE) -> None:
    assert p.image.shape == (size, size, 3) and p.image.dtype == np.uint8
    assert p.face_mask.shape == (1, size, size)
    assert set(np.unique(p.face_mask)) <= {0.0, 1.0}
    # The face box ×1.5 squared: the face fills about 1/1.5² of the crop (less when clipped), up to
    # 1/1.15² where the crop had to shrink towards the face to stay in the picture.
    assert 0.2 < p.face_mask.mean() < 1.02 / MIN_CROP_SCALE**2
    assert p.image.std() > 10  # a real picture, not a blank


def test_rgba_png_composited_on_white(portraits: Path, tmp_path: Path) -> None:
    p = load_portrait(portraits / "man_three_quarter_turn.png", size=SIZE)
    _check(p)
    # Make part of a real photo transparent: those crop pixels must come out white, not black.
    rgb = Image.open(portraits / "woman_frontal.jpg").convert("RGB")
    ref = load_portrait(portraits / "woman_frontal.jpg", size=SIZE)
    alpha = np.full((rgb.height, rgb.width), 255, np.uint8)
    band = int(ref.crop_box[0]) + 40
    alpha[:, :band] = 0  # a band inside the crop's left edge, outside the face
    rgba = rgb.copy()
    rgba.putalpha(Image.fromarray(alpha))
    rgba.save(tmp_path / "alpha.png")
    p = load_portrait(tmp_path / "alpha.png", size=SIZE)
    _check(p)
    assert np.allclose(p.face_box[:4], ref.face_box[:4], atol=8)  # the same face found
    inside = int((band - p.crop_box[0]) / (p.crop_box[2] - p.crop_box[0]) * SIZE) - 2
    assert inside > 8 and p.image[:, :inside].min() >= 250
    assert p.image[:, SIZE // 2 :].mean() < 200  # the face half is the photo, not white


def test_greyscale_jpeg_becomes_rgb(portraits: Path, tmp_path: Path) -> None:
    Image.open(portraits / "woman_bw_head_tilt.jpg").convert("L").save(tmp_path / "grey.jpg")
    assert Image.open(tmp_path / "grey.jpg").mode == "L"
    p = load_portrait(tmp_path / "grey.jpg", size=SIZE)
    _check(p)
    assert np.array_equal(p.image[..., 0], p.image[..., 1])
    assert np.array_equal(p.image[..., 1], p.image[..., 2])


def test_exif_orientation_is_applied(portraits: Path, tmp_path: Path) -> None:
    upright = Image.open(portraits / "man_upper_body.jpg")  # 910x1137, EXIF orientation 1
    # Store the pixels turned on their side with EXIF orientation 6 ("rotate 90° CW to display").
    exif = Image.Exif()
    exif[portrait_mod.ORIENTATION_TAG] = 6
    upright.rotate(90, expand=True).save(tmp_path / "sideways.jpg", exif=exif, quality=95)
    p = load_portrait(tmp_path / "sideways.jpg", size=SIZE)
    ref = load_portrait(portraits / "man_upper_body.jpg", size=SIZE)
    assert p.source_size == (910, 1137)
    assert np.allclose(p.face_box[:4], ref.face_box[:4], atol=6)
    assert np.abs(p.image.astype(int) - ref.image).mean() < 8


def test_very_large_jpeg_is_decoded_reduced(portraits: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    shapes: list[tuple[int, ...]] = []
    real = portrait_mod._decode

    def spy(path: Path, scale: float) -> np.ndarray:
        out = real(path, scale)
        shapes.append(out.shape)
        return out

    monkeypatch.setattr(portrait_mod, "_decode", spy)
    p = load_portrait(portraits / "man_frontal_3511px.jpg", size=512)
    _check(p, 512)
    assert p.source_size == (3511, 3511)
    # Never the 3511² image: detection at ≤ 1/2 scale, the crop decode at the coarsest scale that
    # still leaves the 2400 px face crop ≥ 512 px.
    assert shapes and max(s[0] for s in shapes) <= 3511 // 2 + 1
    crop_side = p.crop_box[2] - p.crop_box[0]
    assert crop_side > 2000


def test_two_people_largest_face_with_warning(portraits: Path) -> None:
    p = load_portrait(portraits / "two_people.jpg", size=SIZE)
    _check(p)
    assert p.faces == 2
    assert len(p.warnings) == 1 and "2 faces" in p.warnings[0] and "largest" in p.warnings[0]
    frame = np.asarray(Image.open(portraits / "two_people.jpg").convert("RGB"))
    with FaceDetector() as det:
        boxes = det(frame)
    areas = [b.area for b in boxes]
    assert len(boxes) == 2 and p.face_box.area == pytest.approx(max(areas), rel=0.05)
    chosen = min(boxes, key=lambda b: abs(b.x0 - p.face_box.x0))
    assert chosen.area == max(areas)


def _face_inside(p: Portrait) -> None:
    """The face box lies inside the crop, with label's minimum margin on its long side."""
    x0, y0, x1, y1 = to_crop_coords(p.face_box.xyxy(), p.crop_box, p.size)
    assert x0 >= 0 and y0 >= 0 and x1 <= p.size and y1 <= p.size
    assert p.size >= MIN_CROP_SCALE * max(x1 - x0, y1 - y0) - 1


def test_face_near_the_edge_is_shrunk_then_soft_padded(portraits: Path, tmp_path: Path) -> None:
    """A real photo cut so the face is 3 px from the left edge and the image is narrower than the
    ×1.5 square: label's rule shrinks the square towards the face (to the image width) and only the
    sliver inside the minimum margin is padded, with a blurred mirror instead of black."""
    ref = load_portrait(portraits / "woman_frontal.jpg", size=SIZE)
    fx0, fy0, fw = int(ref.face_box.x0), int(ref.face_box.y0), int(ref.face_box.width)
    edge = (fx0 - 3, fy0 - 70, fx0 - 3 + int(1.3 * fw), 624)  # 1.3 face widths wide
    Image.open(portraits / "woman_frontal.jpg").crop(edge).save(tmp_path / "edge.png")
    p = load_portrait(tmp_path / "edge.png", size=256)
    _check(p, 256)
    _face_inside(p)
    w, h = p.source_size
    side = p.crop_box[2] - p.crop_box[0]
    assert side == min(w, h) < 1.5 * p.face_box.width  # shrunk to fit, not the ×1.5 square
    assert p.padded_frac == pytest.approx(padded_fraction([int(v) for v in p.crop_box], (w, h)))
    assert 0 < p.padded_frac < 0.08
    old = square_crop_box(p.face_box.xyxy(), 1.5, (w, h))  # the old rule: shift only, then black
    assert padded_fraction(old, (w, h)) > 0.15
    assert bool(p.warnings) == (p.padded_frac > PADDED_FLAG)
    assert p.crop_box[0] < 0 and p.crop_box[1] >= 0 and p.crop_box[3] <= h
    pad = int(-p.crop_box[0] / side * 256)  # output columns left of the picture
    assert pad >= 4
    # No hard black border: the padded columns carry the scene's light, close to the picture's
    # first columns, where black padding (the old rule) reads 0.
    rgb = np.asarray(Image.open(tmp_path / "edge.png").convert("RGB"))
    black = crop_square(rgb, [int(v) for v in p.crop_box], 256, "zero")
    assert black[:, : pad - 1].max() == 0
    band, inside = p.image[:, : pad - 1].astype(float), p.image[:, pad + 1 : pad + 4].astype(float)
    assert band.mean() > 20 and abs(band.mean() - inside.mean()) < 25
    assert (band.max(axis=2) < 8).mean() < 0.05  # hardly a black pixel
    assert np.abs(np.diff(p.image[:, pad - 4 : pad + 4].astype(float), axis=1)).mean() < 20  # no edge


def test_partial_face_at_edge_and_tight_crops(portraits: Path, tmp_path: Path) -> None:
    # A face cut by the image edge (the detector clips its box at x = 0): the crop keeps the
    # minimum margin around the box, the rest of the ×1.5 square stays in the picture, and the
    # part outside (11 %) is soft-padded and reported.
    p = load_portrait(portraits / "partial_face_at_edge.jpg", size=SIZE)
    _check(p)
    _face_inside(p)
    assert p.face_box.x0 == 0.0  # the detector clips the face at the left edge
    assert p.crop_box[0] < 0 and p.crop_box[2] <= p.source_size[0]
    assert p.padded_frac > PADDED_FLAG and "close to the image edge" in p.warnings[0]
    assert p.image[:, :4].mean() > 20  # a blurred mirror of the picture, not black

    # A photo cropped tight around the face (10 px margin): the square shrinks to the minimum
    # margin (1.15 face sides) and what is still outside the image is soft-padded.
    x0, y0, x1, y1 = (int(v) for v in ref_box(portraits))
    Image.open(portraits / "woman_frontal.jpg").crop((x0 - 10, y0 - 10, x1 + 10, y1 + 10)).save(
        tmp_path / "tight.png"
    )
    p = load_portrait(tmp_path / "tight.png", size=SIZE)
    _check(p)
    _face_inside(p)
    side = p.crop_box[2] - p.crop_box[0]
    assert side == pytest.approx(MIN_CROP_SCALE * max(p.face_box.width, p.face_box.height), abs=2)
    assert p.crop_box[0] < 0 and p.crop_box[2] > p.source_size[0]
    pad = int(-p.crop_box[0] / side * SIZE)
    assert pad > 2 and p.image[:, : pad - 1].mean() > 20 and p.image[:, -(pad - 1) :].mean() > 20
    assert p.image[:, pad + 1 : -pad - 1].std() > 10


def ref_box(portraits: Path) -> tuple[float, ...]:
    return tuple(load_portrait(portraits / "woman_frontal.jpg", size=SIZE).face_box[:4])


def _slides_frame(videos: Path) -> np.ndarray:
    import av

    with av.open(str(videos / "no_face_slides_30fps_1080p.mp4")) as c:
        c.seek(30 * 1_000_000)
        frame = next(c.decode(video=0))
        return frame.to_ndarray(format="rgb24")


def test_no_face_is_one_clear_error(portraits: Path, videos: Path, tmp_path: Path) -> None:
    # A background region of a real photo (left of and above the face), and a real slide frame.
    Image.open(portraits / "man_frontal_3511px.jpg").crop((0, 0, 800, 800)).save(tmp_path / "bg.jpg")
    Image.fromarray(_slides_frame(videos)).save(tmp_path / "slide.png")
    for name in ("bg.jpg", "slide.png"):
        with pytest.raises(PortraitError) as e:
            load_portrait(tmp_path / name, size=SIZE)
        assert str(e.value) == f"no face found in portrait {tmp_path / name}"


def test_unreadable_inputs(tmp_path: Path) -> None:
    (tmp_path / "notes.jpg").write_text("not an image")
    with pytest.raises(PortraitError, match="cannot read portrait") as e:
        load_portrait(tmp_path / "notes.jpg")
    assert "\n" not in str(e.value)
    with pytest.raises(PortraitError, match="portrait not found"):
        load_portrait(tmp_path / "missing.png")
