"""Portrait loading on the real photos in shared/data/portraits: modes, EXIF, size, faces, crops."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from emokit.data.faces import FaceDetector
from emokit.generate import portrait as portrait_mod
from emokit.generate.portrait import Portrait, PortraitError, load_portrait

SIZE = 128


def _check(p: Portrait, size: int = SIZE) -> None:
    assert p.image.shape == (size, size, 3) and p.image.dtype == np.uint8
    assert p.face_mask.shape == (1, size, size)
    assert set(np.unique(p.face_mask)) <= {0.0, 1.0}
    # The face box ×1.5 squared: the face fills about 1/1.5² of the crop (less when clipped).
    assert 0.2 < p.face_mask.mean() < 0.5
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


def test_partial_face_at_edge_and_tight_crops(portraits: Path, tmp_path: Path) -> None:
    # The label rule: the ×1.5 square is shifted inside the image when it fits (real pixels, as
    # in the training crops), and padded only where the image is smaller than the square.
    p = load_portrait(portraits / "partial_face_at_edge.jpg", size=SIZE)
    _check(p)
    assert p.face_box.x0 == 0.0  # the detector clips the face at the left edge
    assert p.crop_box[0] == 0 and p.crop_box[2] <= p.source_size[0]
    assert p.image[:, :4].max() > 0  # real pixels at the left edge, no padding
    cols = np.flatnonzero(p.face_mask[0].any(axis=0))
    assert cols[0] == 0  # the face mask starts at the crop's (and the image's) edge

    # A photo cropped tight around the face: the square is larger than the image → padded.
    ref = load_portrait(portraits / "woman_frontal.jpg", size=SIZE)
    x0, y0, x1, y1 = (int(v) for v in ref.face_box[:4])
    Image.open(portraits / "woman_frontal.jpg").crop((x0 - 10, y0 - 10, x1 + 10, y1 + 10)).save(
        tmp_path / "tight.png"
    )
    p = load_portrait(tmp_path / "tight.png", size=SIZE)
    _check(p)
    assert p.crop_box[0] < 0 and p.crop_box[2] > p.source_size[0]
    pad = int(-p.crop_box[0] / (p.crop_box[2] - p.crop_box[0]) * SIZE)
    assert pad > 4 and p.image[:, : pad - 1].max() == 0 and p.image[:, -(pad - 1) :].max() == 0
    assert p.image[:, pad + 1 : -pad - 1].std() > 10


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
