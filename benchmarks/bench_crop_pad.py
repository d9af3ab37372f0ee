"""What the crop's padding costs per frame: a 1080×1920 frame of a shared video, cropped to 512².

    .venv/bin/python benchmarks/bench_crop_pad.py

Times `emokit.data.crop.crop_square` (the full-RGB path label's rotated/10-bit fallback uses; the
YUV path converts the in-frame region and then calls the same function) for a 700 px square inside
the frame, and for the same square moved so 20 % of it lies outside the frame (left and top), with
each padding mode. Medians of --repeat runs; the machine's other load moves these, so compare the
rows of one run, not runs.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import av
import cv2

from emokit.data.crop import crop_square, padded_fraction

VIDEO = (
    Path(__file__).resolve().parents[1].parent
    / "shared"
    / "data"
    / "videos"
    / "speaker_b_30fps_1080x1920.mp4"
)


def _median_ms(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return 1000 * statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=50)
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--threads", type=int, default=1, help="OpenCV threads (label's workers: 1)")
    args = ap.parse_args()
    cv2.setNumThreads(args.threads)
    with av.open(str(VIDEO)) as c:
        frame = next(c.decode(video=0)).to_ndarray(format="rgb24")
    h, w = frame.shape[:2]
    side = 700
    inside = (200, 300, 200 + side, 300 + side)
    shift = round(side * (1 - (0.8) ** 0.5))  # 20 % of the area outside, split left and top
    outside = (-shift, -shift, side - shift, side - shift)
    print(
        f"frame {w}x{h}, crop {side} px -> {args.size} px, {args.threads} thread(s), median of {args.repeat}"
    )
    ms = _median_ms(lambda: crop_square(frame, inside, args.size), args.repeat)
    print(f"inside the frame            {ms:6.2f} ms")
    frac = padded_fraction(outside, (w, h))
    for pad in ("zero", "edge", "soft"):
        ms = _median_ms(lambda pad=pad: crop_square(frame, outside, args.size, pad), args.repeat)
        print(f"{100 * frac:.0f} % outside, pad={pad:<5}     {ms:6.2f} ms")


if __name__ == "__main__":
    main()
