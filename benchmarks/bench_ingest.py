"""Ingest speed against PySceneDetect's CLI and a plain ffmpeg decode of the same file.

    .venv/bin/python benchmarks/bench_ingest.py [--file VIDEO] [--repeats 3]

Prints the median wall time of each and the ratios, all measured in one run.
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

sys.path.insert(0, str(Path(__file__).resolve().parent))
from media import SHARED, talking_head_40s  # noqa: E402


def timed(cmd: list[str], cwd: Path) -> float:
    t = time.perf_counter()
    subprocess.run(cmd, check=True, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--file", type=Path, help="video to ingest (default: both benchmark videos)")
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="emokit-bench-"))
    files = (
        [args.file]
        if args.file
        else [
            talking_head_40s(work / "talking_head_40s_1080x1920.mp4"),
            SHARED / "videos" / "no_face_slides_30fps_1080p.mp4",
        ]
    )
    bindir = Path(sys.executable).parent
    ffmpeg = imageio_ffmpeg.get_ffmpeg_exe()
    for f in files:
        runs: dict[str, list[float]] = {
            "emokit ingest": [],
            "scenedetect list-scenes": [],
            "ffmpeg decode": [],
        }
        for i in range(args.repeats):
            out = work / f"ds{i}"
            runs["emokit ingest"].append(
                timed([str(bindir / "emokit"), "ingest", str(f), "-o", str(out), "-q", "-w", "1"], work)
            )
            shutil.rmtree(out)
            runs["scenedetect list-scenes"].append(
                timed(
                    [str(bindir / "scenedetect"), "-i", str(f), "detect-adaptive", "list-scenes", "-n"], work
                )
            )
            runs["ffmpeg decode"].append(
                timed([ffmpeg, "-v", "error", "-i", str(f), "-map", "0:v:0", "-f", "null", "-"], work)
            )
        med = {k: statistics.median(v) for k, v in runs.items()}
        print(f"\n{f.name} (median of {args.repeats})")
        for k, v in med.items():
            print(f"  {k:<26} {v:7.2f} s")
        print(f"  ingest / scenedetect CLI   {med['emokit ingest'] / med['scenedetect list-scenes']:7.2f}x")
        print(f"  ingest / ffmpeg decode     {med['emokit ingest'] / med['ffmpeg decode']:7.2f}x")
    shutil.rmtree(work)


if __name__ == "__main__":
    main()
