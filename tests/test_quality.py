"""Quality flags on real frames: burned-in captions (rendered onto real video) and hands in frame."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from emokit.data.decode import read_frames
from emokit.data.quality import HandsDetector, caption_score, text_lines

LINES = ["so I think we should go", "and that is what matters", "thank you all for coming"]


def _subtitled(frames: list[np.ndarray]) -> list[np.ndarray]:
    """Burn subtitles in the usual style: white text, black outline, bottom centre, a new line
    every 3 samples (~0.8 s here), text height ~4.5 % of the frame's short side."""
    out = []
    for k, frame in enumerate(frames):
        f = frame.copy()
        h, w = f.shape[:2]
        scale = 0.045 * min(h, w) / 22
        thick = max(1, round(scale * 1.6))
        text = LINES[(k // 3) % len(LINES)]
        (tw, _), _ = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, thick)
        org = ((w - tw) // 2, int(h * 0.9))
        cv2.putText(f, text, org, cv2.FONT_HERSHEY_SIMPLEX, scale, (0, 0, 0), thick + 3, cv2.LINE_AA)
        cv2.putText(f, text, org, cv2.FONT_HERSHEY_SIMPLEX, scale, (255, 255, 255), thick, cv2.LINE_AA)
        out.append(f)
    return out


def _samples(path, start: float = 0.0, n: int = 12, every_s: float = 0.27) -> list[np.ndarray]:
    return list(read_frames(path, start, start + n * every_s, fps=1 / every_s))


@pytest.mark.parametrize(
    "name",
    [
        "speaker_b_30fps_1080x1920.mp4",  # portrait phone video
        "speaker_d_25fps_410x412.mp4",  # small interview close-up
        "speaker_vfr_700.mp4",
        "crowd_multiface_25fps_1080p.mp4",  # busy moving background behind the text
    ],
)
def test_burned_in_subtitles_score_clearly_above_clean_frames(videos, name):
    clean = _samples(videos / name)
    assert len(clean) == 12
    captioned = _subtitled(clean)
    clean_score, caption = caption_score(clean), caption_score(captioned)
    assert 0.0 <= clean_score <= 0.3
    assert caption >= 0.7
    assert caption - clean_score >= 0.5


def test_text_lines_locates_the_rendered_line(videos):
    frame = _subtitled(_samples(videos / "speaker_c_25fps_512.mp4", n=1))[0]
    lines = text_lines(frame)
    h, w = frame.shape[:2]
    assert any(abs(0.5 * (y0 + y1) / h - 0.885) < 0.04 and x1 - x0 > w / 2 for x0, y0, x1, y1 in lines)


def test_slides_score_as_caption_like_text(videos):
    """Slides carry static lines of text: a legitimate caption-like case (reported: 1.0 here)."""
    slides = _samples(videos / "no_face_slides_30fps_1080p.mp4", start=0.0, every_s=0.5)
    talking = _samples(videos / "speaker_c_25fps_512.mp4")
    assert caption_score(slides) >= 0.6
    assert caption_score(slides) > caption_score(talking) + 0.4


def test_caption_score_input_checks(videos):
    assert caption_score([]) == 0.0
    frames = _samples(videos / "speaker_c_25fps_512.mp4", n=2)
    with pytest.raises(ValueError):
        caption_score(frames[:1])
    with pytest.raises(ValueError):
        caption_score([frames[0], cv2.resize(frames[1], (256, 256))])


def test_hands_fraction_for_gesturing_and_face_only_speakers(videos):
    with HandsDetector(every=10) as hands:
        gesturing = list(read_frames(videos / "speaker_b_30fps_1080x1920.mp4", 0.0, 4.0, max_width=480))
        frac = hands(gesturing)
        assert hands.sampled == 12 and frac >= 0.5
        face_only = list(read_frames(videos / "speaker_c_25fps_512.mp4", 0.0, 4.0))
        for f in face_only:  # streaming use gives the same as the batch call
            hands.add(f)
        assert hands.fraction > 0  # still accumulating the previous clip: reset is explicit
        assert hands(face_only) == 0.0 and hands.sampled == 12
    with pytest.raises(ValueError):
        HandsDetector(every=0)
