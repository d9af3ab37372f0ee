"""A/V sync label on real talking-head footage with known audio changes (tests/avmedia.py)."""

from __future__ import annotations

import numpy as np
import pytest

from emokit.config import LabelConfig
from emokit.data.audio import load_audio
from emokit.data.avsync import NO_LIPSYNC_CONFIDENCE, OFFSET_FLAG_FRAMES, mouth_audio_sync
from emokit.data.decode import read_frames
from emokit.data.label_video import label_window
from emokit.data.mouth import MouthTrack, mouth_motion_series
from tests.avmedia import moved_audio, other_audio, still_face

DUR = 7.4


@pytest.fixture(scope="module")
def media(videos, audio_dir, tmp_path_factory):
    src = videos / "speaker_c_25fps_512.mp4"
    tmp = tmp_path_factory.mktemp("avsync")
    return dict(
        orig=src,
        late=moved_audio(src, tmp / "late.mp4", 0.2, 8.0),  # audio 6 frames late at 30 FPS
        early=moved_audio(src, tmp / "early.mp4", -0.2, 7.6),
        late300=moved_audio(src, tmp / "late300.mp4", 0.3, 8.0),  # 9 frames late
        early100=moved_audio(src, tmp / "early100.mp4", -0.1, 7.6),  # 3 frames early
        other=other_audio(src, audio_dir / "speech_en_8s_16k_stereo.wav", tmp / "other.mp4", 8.0),
        still=still_face(src, tmp / "still.mp4", 8.0),
    )


@pytest.fixture(scope="module")
def labels(media):
    out = {}
    for name, path in media.items():
        frames = read_frames(path, 0.0, DUR, 30)
        out[name] = mouth_audio_sync(mouth_motion_series(frames), load_audio(path, 0.0, DUR), 30)
    return out


MOVED = {"orig": 0, "late": 6, "early": -6, "late300": 9, "early100": -3}  # truth, 30 FPS frames


def test_moved_audio_moves_the_lag_by_the_known_amount(labels):
    base = labels["orig"].lag_frames
    assert abs(base) <= 2  # the unmoved clip reads in sync
    for name, truth in MOVED.items():
        s = labels[name]
        assert s.lag_frames - base == pytest.approx(truth, abs=1), name
        assert "no_lipsync" not in s.flags and s.confidence >= NO_LIPSYNC_CONFIDENCE, name


def test_offsets_are_stored_where_reliable_and_right(labels):
    """A stored offset is within 2 frames of the known move; on this clear talking head most of the
    moved versions get one (measured: 4 of 5), and av_offset follows the stored value."""
    stored = {k: labels[k].offset_frames for k in MOVED if labels[k].offset_frames is not None}
    assert len(stored) >= 3, stored
    for name, offset in stored.items():
        assert abs(offset - MOVED[name]) <= 2, (name, offset)
        assert ("av_offset" in labels[name].flags) == (abs(offset) > OFFSET_FLAG_FRAMES)


def test_other_speaker_and_still_face_get_no_lipsync(labels):
    for name in ("other", "still"):
        s = labels[name]
        assert "no_lipsync" in s.flags, (name, s)
        assert s.offset_frames is None
        assert s.confidence < min(labels[k].confidence for k in MOVED) - 2  # well apart


def test_silence_and_missing_face_measure_nothing():
    mouth = np.sin(np.arange(200) / 3.0) * 0.05 + 0.1
    assert mouth_audio_sync(mouth, np.zeros(16000 * 7, np.float32)).confidence is None
    assert mouth_audio_sync(np.full(200, np.nan), np.ones(16000 * 7, np.float32)).confidence is None
    assert mouth_audio_sync(mouth, None).row() == dict(
        av_offset_frames=None, av_sync_confidence=None, av_method="mouth_motion"
    )


def test_held_frames_repeat_and_a_still_face_is_constant(videos):
    """MouthTrack on real frames: a held frame (same landmarks and crop) repeats its original's
    features, so avsync interpolates it instead of reading "no motion"; a still face is constant."""
    from emokit.data.pose import HeadPoseEstimator

    frames = list(read_frames(videos / "speaker_c_25fps_512.mp4", 1.0, 1.5, 30))
    track, still = MouthTrack(), MouthTrack()
    with HeadPoseEstimator() as est:
        marks = [est.mesh(f) for f in frames]
    for i, (f, m) in enumerate(zip(frames, marks)):
        track.add(m, f)
        if i == 3:
            track.add(m, f)  # a held frame
        still.add(marks[0], frames[0])
    x = track.series()
    assert x.shape == (len(frames) + 1, 3) and np.array_equal(x[3], x[4])
    assert np.isfinite(x[2:]).all() and (x[2:, 2] > 0).all()  # the patch changes on a talking mouth
    held = still.series()[:, :2]
    assert (held == held[0]).all()  # every frame repeats the first


def test_label_rows_carry_the_sync_columns(media):
    """label_window fills the schema columns from the crop's face mesh (no torch in the worker):
    a still face with speech is flagged in the shard row."""
    cfg = LabelConfig(size=128)
    w = dict(clip_id="still", source_path=str(media["still"]), source_sha256="x", start_s=0.0, end_s=4.0,
             video_stream=0, has_audio=True)  # fmt: skip
    wl = label_window(w, cfg, bounds=(1.0, 12.0), threads=1)
    (row,) = wl.rows
    assert row["status"] == "ok" and row["av_method"] == "mouth_motion"
    assert (
        "no_lipsync" in row["flags"] and row["av_sync_confidence"] == 0.0 and row["av_offset_frames"] is None
    )
    windows = {"still": wl}

    # --syncnet: the parent replaces the label with SyncNet's, computed on the row's own crop mp4,
    # face boxes and audio (a tiny random network here, so only the bookkeeping can be asserted).
    import torch

    from emokit.data.label import _AudioStage
    from emokit.data.syncnet import SYNCNET_MIN_CONFIDENCE, SyncNet, SyncNetConfig

    torch.manual_seed(0)
    tiny = SyncNet(
        SyncNetConfig(size=32, video_widths=[4, 8, 8, 8, 8], audio_widths=[4, 8, 8, 8, 8], hidden=8, embed=8)
    )
    stage = _AudioStage(cfg, "cpu", 1, needed=False, syncnet=tiny.eval())
    try:
        for wl in windows.values():
            stage.attach(wl)
            (r,) = wl.rows
            assert r["av_method"] == "syncnet" and np.isfinite(r["av_sync_confidence"])
            low = r["av_sync_confidence"] < SYNCNET_MIN_CONFIDENCE
            assert ("no_lipsync" in r["flags"]) == low and (r["av_offset_frames"] is None) == low
            assert "no_audio" in r["flags"]  # no Wav2Vec2 in this stage
    finally:
        stage.close()


@pytest.mark.parametrize("name", ["speech_en_8s_16k_stereo.wav", "singing_6s_48k_24bit.wav"])
def test_numpy_speech_dsp_equals_scipy_signal(audio_dir, name):
    """The label path's STFT and band-pass are numpy (scipy.signal costs each worker ~1 s to
    import); on real speech and singing they give scipy.signal's values to float rounding."""
    from scipy.signal import butter, sosfiltfilt, stft

    from emokit.data.avsync import BAND_HZ, _band_pass, _band_rms, _stft_power

    sr = 16000
    x = load_audio(audio_dir / name, 0.0, 6.0, sr).astype(np.float64)
    f, _, spec = stft(x, fs=sr, nperseg=400, noverlap=240, boundary=None, padded=False)
    f2, power = _stft_power(x, sr, 400, 160)
    np.testing.assert_allclose(f2, f)
    np.testing.assert_allclose(power, np.abs(spec) ** 2, rtol=1e-9, atol=1e-12 * power.max())
    ref = sosfiltfilt(butter(4, BAND_HZ, btype="band", fs=sr, output="sos"), x)
    mid = slice(sr // 10, -sr // 10)  # the ends differ: sosfiltfilt pads, the FFT does not
    assert np.abs(_band_pass(x, sr) - ref)[mid].max() < 1e-9 * np.abs(ref).max()
    hop = sr // 30
    n = len(ref) // hop
    want = np.percentile(np.sqrt((ref[: n * hop] ** 2).reshape(n, hop).mean(1)), 90)
    assert _band_rms(x, sr) == pytest.approx(want, rel=1e-6)


def test_label_workers_do_not_import_scipy_signal():
    """What a label worker imports to run its stage (see the test above for why it matters)."""
    import subprocess
    import sys

    code = "import sys, emokit.data.label; print('scipy.signal' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
