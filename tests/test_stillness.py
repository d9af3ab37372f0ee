"""Still clips: a real frame held as a picture with real speech is flagged static; real talking
heads are not, and sample-and-hold repeats of a 25 fps source do not count as held."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from emokit.config import LabelConfig
from emokit.data.audio import load_audio
from emokit.data.decode import read_frames
from emokit.data.encode import Mp4Writer
from emokit.data.label_video import label_window
from emokit.data.stillness import HeldFrames


def _window(path: Path, start: float, end: float) -> dict:
    return dict(
        clip_id=path.stem,
        source_path=str(path),
        source_sha256="x",
        start_s=start,
        end_s=end,
        start_frame=0,
        video_stream=0,
        has_audio=True,
    )


@pytest.fixture(scope="module")
def still_picture(videos, audio_dir, tmp_path_factory) -> Path:
    """One frame of a real talking video held for 4 s at 25 fps (H.264, crf 23 as a user's
    encoder would), with 4 s of real speech."""
    frame = next(iter(read_frames(videos / "speaker_c_25fps_512.mp4", 2.0, 2.04, 25)))
    speech = load_audio(audio_dir / "speech_en_8s_16k_stereo.wav", 0.0, 4.0, 16000)
    path = tmp_path_factory.mktemp("still") / "still_picture.mp4"
    with Mp4Writer(path, fps=25, crf=23, audio=speech, audio_sr=16000) as mp4:
        for _ in range(100):
            mp4.write(frame)
    return path


def test_still_picture_with_speech_is_static(still_picture):
    (row,) = label_window(_window(still_picture, 0.0, 4.0), LabelConfig(size=128)).rows
    assert row["status"] == "ok", row["reason"]
    assert row["held_frac"] >= 0.97
    assert "static" in row["flags"]
    assert row["has_audio"]
    # its head pose barely moves (frames are near-identical after H.264, not bit-identical)
    assert np.median(row["velocity"]) < 0.03 and max(row["velocity"]) < 0.2


def test_real_talking_head_is_not_static(videos):
    (row,) = label_window(_window(videos / "speaker_c_25fps_512.mp4", 0.0, 4.0), LabelConfig(size=128)).rows
    assert row["status"] == "ok", row["reason"]
    assert row["held_frac"] <= 0.1  # the 20 sample-and-hold repeats of 120 frames do not count
    assert "static" not in row["flags"]


def test_held_frames_skip_sample_and_hold_repeats(videos):
    frames = list(read_frames(videos / "speaker_d_25fps_410x412.mp4", 0.0, 2.0))
    held = HeldFrames()
    for k, f in enumerate(frames):
        held.add(f, (k * 25) // 30)
    assert held.frames == 49 and held.fraction <= 0.05  # 50 source frames of real motion
    same = HeldFrames()
    for k in range(10):
        same.add(frames[0], k)  # a frozen stream: new source frames, the same picture
    assert same.frames == 9 and same.fraction == 1.0
    single = HeldFrames()
    single.add(frames[0], 0)
    single.add(frames[0], 0)
    assert single.fraction == 1.0 and np.isfinite(single.fraction)
