"""A/V sync label on real talking-head footage with known audio changes (tests/avmedia.py)."""

from __future__ import annotations

import numpy as np
import pytest

from emokit.config import LabelConfig
from emokit.data.audio import load_audio
from emokit.data.avsync import OFFSET_FLAG_FRAMES, mouth_audio_sync
from emokit.data.decode import read_frames
from emokit.data.label_video import label_window
from emokit.data.mouth import mouth_opening_series
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
        other=other_audio(src, audio_dir / "speech_en_8s_16k_stereo.wav", tmp / "other.mp4", 8.0),
        still=still_face(src, tmp / "still.mp4", 8.0),
    )


@pytest.fixture(scope="module")
def labels(media):
    out = {}
    for name, path in media.items():
        frames = read_frames(path, 0.0, DUR, 30)
        out[name] = mouth_audio_sync(mouth_opening_series(frames), load_audio(path, 0.0, DUR), 30)
    return out


def test_moved_audio_moves_the_lag_by_the_known_amount(labels):
    base = labels["orig"].lag_frames
    assert abs(base) <= 2  # the unmoved clip reads in sync
    assert labels["late"].lag_frames - base == pytest.approx(6, abs=1)
    assert labels["early"].lag_frames - base == pytest.approx(-6, abs=1)
    for name, truth in (("orig", 0), ("late", 6), ("early", -6)):
        s = labels[name]
        assert "no_lipsync" not in s.flags
        if s.offset_frames is not None:  # stored only where it is reliable
            assert abs(s.offset_frames - truth) <= 2, name
            assert ("av_offset" in s.flags) == (abs(s.offset_frames) > OFFSET_FLAG_FRAMES)


def test_other_speaker_and_still_face_get_no_lipsync(labels):
    for name in ("other", "still"):
        s = labels[name]
        assert "no_lipsync" in s.flags, (name, s)
        assert s.offset_frames is None
        assert s.confidence < min(labels[k].confidence for k in ("orig", "late", "early"))


def test_silence_and_missing_face_measure_nothing():
    mouth = np.sin(np.arange(200) / 3.0) * 0.05 + 0.1
    assert mouth_audio_sync(mouth, np.zeros(16000 * 7, np.float32)).confidence is None
    assert mouth_audio_sync(np.full(200, np.nan), np.ones(16000 * 7, np.float32)).confidence is None
    assert mouth_audio_sync(mouth, None).row() == dict(
        av_offset_frames=None, av_sync_confidence=None, av_method="mouth_motion"
    )


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
