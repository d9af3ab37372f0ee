"""Everything bench_gpu.py needs on the device machine that is not in the working tree, made here.

    PYTHONPATH=. .venv/bin/python benchmarks/gpu/prepare.py                # .whl/ and .bench/ at 512²
    PYTHONPATH=. .venv/bin/python benchmarks/gpu/prepare.py --no-wheels --media DIR --size 64  # dry-run

The device has no network, no ../shared/data and no MediaPipe, so this writes, into git-ignored
folders that the device call carries:
- ``.bench/portrait.npz``: the framed portrait of shared/data/portraits/woman_frontal.jpg through
  the generator's own path (emokit.generate.load_portrait: face detection, crop, face mask);
- ``.bench/speech_60s.wav``: shared/data/audio/speech_60s_16k_mono.wav (cut or repeated there);
- ``.bench/dataset/shards``: label shards of real frames (speaker_c, H.264 at ``--size``) with
  random float16 audio tokens of the sd15 shape, for the training reader (tests/train_shards.py);
- ``.whl/``: the wheels the device's python3 lacks (bench_gpu.WHEELS), at the versions of
  constraints.txt, from PyPI (`pip download`, Python 3.12 manylinux), and their total size.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
SHARED = ROOT.parent / "shared" / "data"
sys.path.insert(0, str(ROOT / "tests"))  # train_shards: the test suite's shard builder
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_gpu import CARRY_LIMIT_MB, WHEELS, pinned_versions  # noqa: E402

PLATFORMS = [
    "manylinux_2_28_x86_64",
    "manylinux_2_27_x86_64",
    "manylinux_2_17_x86_64",
    "manylinux2014_x86_64",
]


def write_portrait(dest: Path, size: int) -> None:
    from emokit.generate.portrait import load_portrait

    p = load_portrait(SHARED / "portraits" / "woman_frontal.jpg", size=size)
    np.savez_compressed(
        dest,
        image=p.image,
        face_mask=p.face_mask,
        face_box=np.asarray(p.face_box, np.float64),
        crop_box=np.asarray(p.crop_box, np.float64),
        source_size=np.asarray(p.source_size),
        faces=p.faces,
    )


def write_dataset(root: Path, size: int, clips: int, frames: int) -> None:
    from train_shards import build_dataset

    from emokit.models import EMOConfig

    c = EMOConfig.sd15()
    shutil.rmtree(root, ignore_errors=True)
    video = SHARED / "videos" / "speaker_c_25fps_512.mp4"
    build_dataset(root, video, c.audio_layers, c.audio_dim, size, frames, clips, extras=False)


def download_wheels(dest: Path) -> float:
    """The WHEELS at their constraints.txt versions; returns their total size in MiB."""
    dest.mkdir(exist_ok=True)
    pins = pinned_versions(ROOT / "constraints.txt")
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:"]
    cmd += ["--python-version", "3.12", "--implementation", "cp", "-d", str(dest)]
    for p in PLATFORMS:
        cmd += ["--platform", p]
    subprocess.run([*cmd, *(f"{w}=={pins[w]}" for w in WHEELS)], check=True)
    return sum(f.stat().st_size for f in dest.glob("*.whl")) / 2**20


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--media", type=Path, default=ROOT / ".bench", help="media folder to write")
    ap.add_argument("--wheels", type=Path, default=ROOT / ".whl", help="wheel folder to write")
    ap.add_argument("--no-wheels", action="store_true", help="media only")
    ap.add_argument("--size", type=int, default=512, help="portrait and clip side in pixels")
    ap.add_argument("--clips", type=int, default=4, help="clips in the reader's dataset")
    ap.add_argument("--clip-frames", type=int, default=48, help="frames per clip")
    args = ap.parse_args()
    args.media.mkdir(parents=True, exist_ok=True)
    write_portrait(args.media / "portrait.npz", args.size)
    shutil.copyfile(SHARED / "audio" / "speech_60s_16k_mono.wav", args.media / "speech_60s.wav")
    write_dataset(args.media / "dataset", args.size, args.clips, args.clip_frames)
    media_mb = sum(f.stat().st_size for f in args.media.rglob("*") if f.is_file()) / 2**20
    print(f"media: {args.media} ({media_mb:.1f} MiB)")
    if not args.no_wheels:
        wheels_mb = download_wheels(args.wheels)
        total = wheels_mb + media_mb
        print(f"wheels: {args.wheels} ({wheels_mb:.1f} MiB); carried with media {total:.1f} MiB")
        if total > CARRY_LIMIT_MB - 4:  # the tracked tree travels too (~1.5 MiB)
            sys.exit(
                f"wheels + media are {total:.1f} MiB: too close to the {CARRY_LIMIT_MB} MiB a call carries"
            )


if __name__ == "__main__":
    main()
