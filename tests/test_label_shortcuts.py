"""Work label skips or moves must not change what it writes: the face detection of a held frame
and the Wav2Vec2 tokens computed ahead of the worker's result, on real media."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from emokit.config import LabelConfig
from emokit.data import label_video
from emokit.data.audio import load_audio
from emokit.data.decode import read_video_frames
from emokit.data.faces import FaceBox, FaceDetector
from emokit.data.frames import WindowFrames
from emokit.data.label import _AudioStage
from emokit.data.label_video import AUDIO_SR, WindowLabels
from emokit.data.schema import OK
from emokit.data.wav2vec import save_tiny_wav2vec


def _window(videos: Path, name: str, start: float, end: float, has_audio: bool = True) -> dict:
    return dict(
        clip_id="w",
        source_path=str(videos / name),
        start_s=start,
        end_s=end,
        video_stream=0,
        has_audio=has_audio,
    )


def test_held_frames_of_a_25fps_source_get_the_boxes_a_fresh_detection_reads(videos):
    """Label runs the face detector once per source image; on the holds of a 25 fps source it
    copies the previous frame's boxes. Detecting every 30 FPS frame must give the same boxes."""
    cfg = LabelConfig()
    window = _window(videos, "speaker_a_25fps_1080x1920.mp4", 1.0, 4.5)
    decoded = label_video._decode_and_detect(window, cfg, None, 1)
    assert not isinstance(decoded, str)
    src = decoded.frames.source_index
    held = [i for i in range(1, len(src)) if src[i] == src[i - 1]]
    assert len(held) >= 15  # 1 frame in 6 of 105 is a hold

    every: list[list[FaceBox]] = []
    frames: WindowFrames | None = None
    with FaceDetector(cfg.min_face_confidence, cfg.detect_width) as detector:
        for frame in read_video_frames(window["source_path"], 1.0, 4.5, cfg.fps, 0, 1):
            frames = frames or WindowFrames(frame, len(src))
            small = frames.small(frame, cfg.detect_width)
            kx, ky = frames.width / small.shape[1], frames.height / small.shape[0]
            found = detector(small)
            every.append([FaceBox(b.x0 * kx, b.y0 * ky, b.x1 * kx, b.y1 * ky, b.score) for b in found])
    assert len(every) == len(decoded.detections)
    assert all(every[i] for i in held)  # the face is found there: the comparison is not empty
    assert decoded.detections == every


@pytest.fixture(scope="module")
def tiny_cfg(tmp_path_factory) -> LabelConfig:
    return LabelConfig(size=64, audio_model=str(save_tiny_wav2vec(tmp_path_factory.mktemp("w2v") / "t")))


def _labels(window: dict, fps: int, audio: np.ndarray | None, frames: int | None = None) -> WindowLabels:
    """What a worker hands back for ``window``: one ok row over all its frames, and its audio."""
    n = frames or round((window["end_s"] - window["start_s"]) * fps)
    return WindowLabels([dict(status=OK, num_frames=n, flags=[])], n, [0], audio)


def test_tokens_computed_ahead_are_the_tokens_of_the_workers_audio(videos, tiny_cfg):
    """The parent tokens the next windows' audio while their video is labelled. The rows must be
    the ones tokening the worker's audio gives (a stage without look-ahead); where the worker's
    audio or frame count differs, the tokens come from the worker's; a rejected window's are
    dropped before they are computed."""
    fps = tiny_cfg.fps
    windows = [
        _window(videos, "speaker_c_25fps_512.mp4", 0.5, 4.0),
        _window(videos, "speaker_d_25fps_410x412.mp4", 1.0, 4.5),
        _window(videos, "speaker_c_25fps_512.mp4", 3.0, 6.5),
        _window(videos, "talking_no_audio_30fps_720x1280.mp4", 0.0, 3.5, has_audio=False),
    ]

    def worker(w: dict, frames: int = 105) -> WindowLabels:  # audio as label_video decodes it
        if not w["has_audio"]:
            return _labels(w, fps, None, frames)
        audio = load_audio(w["source_path"], w["start_s"], w["start_s"] + frames / fps, AUDIO_SR)
        return _labels(w, fps, audio, frames)

    ahead, plain = _AudioStage(tiny_cfg, "cpu", 1, needed=True), _AudioStage(tiny_cfg, "cpu", 1, needed=True)
    try:
        ahead.prefetch(windows, depth=3)
        assert sorted(ahead._queued) == [0, 1, 2]
        early = ahead._queued[0].result()[2]

        got, want = worker(windows[0]), worker(windows[0])
        ahead.attach(got, 0)
        plain.attach(want)
        assert got.rows == want.rows
        assert got.rows[0]["audio_embeddings"] == early.astype("<f2").tobytes()  # the early tokens

        # The worker decoded fewer frames (its video ended early): its own audio is tokened.
        got, want = worker(windows[1], 90), worker(windows[1], 90)
        ahead.attach(got, 1)
        plain.attach(want)
        assert got.rows == want.rows and got.rows[0]["audio_shape"][0] == 90

        ahead.attach(WindowLabels([dict(status="rejected", flags=[])]), 2)
        assert ahead._queued == {}  # dropped, and window 3 has no audio: never queued

        silent = worker(windows[3])
        ahead.attach(silent, 3)
        assert silent.rows[0]["flags"] == ["no_audio"]
    finally:
        ahead.close()
        plain.close()
