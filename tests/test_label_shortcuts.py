"""Work label skips must not change what it writes: the face detection of a held frame, on real
media."""

from __future__ import annotations

from pathlib import Path


from emokit.config import LabelConfig
from emokit.data import label_video
from emokit.data.decode import read_video_frames
from emokit.data.faces import FaceBox, FaceDetector
from emokit.data.frames import WindowFrames


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
