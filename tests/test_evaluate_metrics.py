"""PSNR/SSIM against scikit-image's reference implementation, and mouth opening on real video."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from emokit.data.decode import read_frames
from emokit.data.mouth import mouth_opening, mouth_opening_series
from emokit.evaluate.metrics import psnr, ssim
from tests.conftest import read_rgb


@pytest.fixture(scope="module")
def photo_pair(portraits):
    a = cv2.resize(read_rgb(portraits / "woman_frontal.jpg"), (160, 144), interpolation=cv2.INTER_AREA)
    noise = np.random.default_rng(0).integers(-40, 41, a.shape)
    b = np.clip(a.astype(np.int64) + noise, 0, 255).astype(np.uint8)
    return a, b


def test_psnr_ssim_match_skimage(photo_pair):
    a, b = photo_pair
    ref = structural_similarity(
        a, b, channel_axis=-1, gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=255
    )
    assert ssim(a, b) == pytest.approx(ref, abs=1e-9)
    assert psnr(a, b) == pytest.approx(peak_signal_noise_ratio(a, b, data_range=255), abs=1e-9)
    blurred = cv2.GaussianBlur(a, (0, 0), 2.0)
    ref2 = structural_similarity(
        a,
        blurred,
        channel_axis=-1,
        gaussian_weights=True,
        sigma=1.5,
        use_sample_covariance=False,
        data_range=255,
    )
    assert ssim(a, blurred) == pytest.approx(ref2, abs=1e-9)
    assert ssim(np.stack([a, a]), np.stack([b, blurred])) == pytest.approx((ssim(a, b) + ref2) / 2, abs=1e-12)


def test_identical_and_bad_input(photo_pair):
    a, b = photo_pair
    assert psnr(a, a) == float("inf")
    assert ssim(a, a) == pytest.approx(1.0, abs=1e-12)
    with pytest.raises(ValueError, match="shape"):
        psnr(a, b[:-1])
    with pytest.raises(ValueError, match="uint8"):
        ssim(a.astype(np.float32), b.astype(np.float32))


def test_mouth_opening_geometry():
    pts = np.zeros((468, 3))
    pts[33, :2], pts[263, :2] = (0.0, 0.0), (10.0, 0.0)  # eye corners 10 apart
    for (up, lo), gap in zip([(13, 14), (82, 87), (312, 317)], (3.0, 2.0, 1.0)):
        pts[up, :2], pts[lo, :2] = (5.0, 20.0), (5.0, 20.0 + gap)
    assert mouth_opening(pts) == pytest.approx(0.2)
    assert mouth_opening(pts * 7.5) == pytest.approx(0.2)  # scale-free
    with pytest.raises(ValueError):
        mouth_opening(pts[:100])


def test_mouth_series_real_speech_scale_free(videos):
    """On a real talking face the opening moves with speech, and a half-size copy reads the same."""
    frames = list(read_frames(videos / "speaker_c_25fps_512.mp4", 0.0, 3.0, 25))
    full = mouth_opening_series(frames)
    half = mouth_opening_series([cv2.resize(f, (256, 256), interpolation=cv2.INTER_AREA) for f in frames])
    assert np.isfinite(full).all() and full.shape == (75,)
    assert 0.0 <= full.min() and full.max() < 0.6 and full.max() - full.min() > 0.08  # mouth opens and closes
    assert np.corrcoef(full, half)[0, 1] > 0.95
    assert np.median(np.abs(full - half)) < 0.01
    blank = np.zeros((3, 128, 128, 3), np.uint8)
    assert np.isnan(mouth_opening_series(blank)).all()
