"""Benchmark inputs built from the shared real media (never committed; rebuilt on demand)."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"
# The shared talking-head videos that are one continuous shot each (SOURCES.md), in videos/.
CONTINUOUS_TALKING = [
    "speaker_a_25fps_1080x1920.mp4",
    "speaker_b_30fps_1080x1920.mp4",
    "speaker_c_25fps_512.mp4",
    "speaker_d_25fps_410x412.mp4",
    "head_turn_25fps_224.mp4",
    "speaker_vfr_700.mp4",
    "talking_no_audio_30fps_720x1280.mp4",
]
# Real edits found inside those "continuous" videos, as 30 FPS frame indices (the first frame after
# the edit), checked by eye (BENCHMARKS.md, Jump cuts): speaker_b 270 → 271 (9.03 s), the hands go
# from clasped on the knees to raised at the chest and the body shifts in one 33 ms frame.
KNOWN_SOURCE_CUTS = {"speaker_b_30fps_1080x1920.mp4": [271]}


def talking_head_40s(dest: Path) -> Path:
    """A 40 s 1080×1920 30 fps H.264+AAC talking-head video: speaker_a then speaker_b (20 s each).

    Both sources are real 1080×1920 HEVC speaker videos (25 and 30 fps); the join is a real cut.
    """
    if dest.exists():
        return dest
    sources = [
        SHARED / "videos" / "speaker_a_25fps_1080x1920.mp4",
        SHARED / "videos" / "speaker_b_30fps_1080x1920.mp4",
    ]
    tmp = dest.with_suffix(".part.mp4")
    out = av.open(str(tmp), "w")
    vs = out.add_stream("libx264", rate=30, options={"preset": "veryfast", "crf": "20"})
    vs.width, vs.height, vs.pix_fmt = 1080, 1920, "yuv420p"
    aus = out.add_stream("aac", rate=44100, layout="stereo")
    n = 0
    audio_t = 0
    for src in sources:
        start = n
        with av.open(str(src)) as c:
            v = c.streams.video[0]
            tb = Fraction(v.time_base)
            t0 = None
            for frame in c.decode(v):  # sample-and-hold onto the 30 fps grid
                t0 = frame.pts * tb if t0 is None else t0
                while (n - start) / 30 <= frame.pts * tb - t0 and n - start < 600:
                    f = frame.reformat(width=1080, height=1920, format="yuv420p")
                    f.pts, f.time_base = n, Fraction(1, 30)
                    out.mux(vs.encode(f))
                    n += 1
            while n - start < 600:  # pad to exactly 20 s
                f.pts = n
                out.mux(vs.encode(f))
                n += 1
        with av.open(str(src)) as c:
            resampler = av.AudioResampler(format="fltp", layout="stereo", rate=44100)
            for frame in c.decode(c.streams.audio[0]):
                for r in resampler.resample(frame):
                    if audio_t >= n / 30 * 44100:
                        break
                    r.pts, r.time_base = audio_t, Fraction(1, 44100)
                    audio_t += r.samples
                    out.mux(aus.encode(r))
            audio_t = max(audio_t, round(n / 30 * 44100))
    out.mux(vs.encode(None))
    out.mux(aus.encode(None))
    out.close()
    tmp.rename(dest)
    return dest
