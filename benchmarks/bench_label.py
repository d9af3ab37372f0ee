"""ingest + label against the naive baseline and a plain decode, on a 40 s 1080×1920 talking head.

    .venv/bin/python benchmarks/bench_label.py [--repeats 3] [--workers 2]

Builds the video from two shared speaker videos and a base-size Wav2Vec2 with RANDOM weights
(same cost as facebook/wav2vec2-base-960h), then times, in one run:
  emokit      `emokit ingest` + `emokit label` (crops, pose, velocities, wav2vec, mp4 encode)
  baseline a  PySceneDetect's CLI list-scenes + naive per-frame full-size MediaPipe script
  baseline b  a plain ffmpeg decode of the video
and prints medians and ratios.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import imageio_ffmpeg

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from media import talking_head_40s  # noqa: E402


def timed(cmd: list[str]) -> float:
    t = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--keep", type=Path, help="keep the work folder here")
    args = ap.parse_args()
    work = args.keep or Path(tempfile.mkdtemp(prefix="emokit-bench-label-"))
    work.mkdir(parents=True, exist_ok=True)
    video = talking_head_40s(work / "talking_head_40s_1080x1920.mp4")
    from emokit.data.wav2vec import base_size_wav2vec

    w2v = work / "wav2vec2-base-RANDOM"
    if not w2v.exists():
        base_size_wav2vec(w2v)
    bindir = Path(sys.executable).parent
    emokit, py = str(bindir / "emokit"), sys.executable
    runs: dict[str, list[float]] = {
        "emokit ingest+label": [],
        "  of which ingest": [],
        "  of which label": [],
        "baseline a: scenedetect+naive": [],
        "baseline b: ffmpeg decode": [],
    }
    for i in range(args.repeats):
        ds = work / f"ds{i}"
        w = str(args.workers)
        ingest = timed([emokit, "ingest", str(video), "-o", str(ds), "-q", "-w", w])
        label = timed([emokit, "label", str(ds), "--audio-model", str(w2v), "-q", "-w", w])
        runs["emokit ingest+label"].append(ingest + label)
        runs["  of which ingest"].append(ingest)
        runs["  of which label"].append(label)
        shutil.rmtree(ds)
        runs["baseline a: scenedetect+naive"].append(
            timed([str(bindir / "scenedetect"), "-i", str(video), "detect-adaptive", "list-scenes", "-n"])
            + timed([py, str(HERE / "naive_mediapipe.py"), str(video)])
        )
        runs["baseline b: ffmpeg decode"].append(
            timed([imageio_ffmpeg.get_ffmpeg_exe(), "-v", "error", "-i", str(video), "-f", "null", "-"])
        )
    med = {k: statistics.median(v) for k, v in runs.items()}
    print(f"{video.name}: 40 s, 1080x1920, 30 fps; median of {args.repeats}, workers={args.workers}")
    for k, v in med.items():
        print(f"  {k:<32} {v:7.2f} s   (runs: {', '.join(f'{x:.2f}' for x in runs[k])})")
    a, b = med["baseline a: scenedetect+naive"], med["baseline b: ffmpeg decode"]
    print(f"  emokit / baseline a              {med['emokit ingest+label'] / a:7.2f}x  (target <= 0.6x)")
    print(f"  emokit / baseline b              {med['emokit ingest+label'] / b:7.2f}x")
    if not args.keep:
        shutil.rmtree(work)


if __name__ == "__main__":
    main()
