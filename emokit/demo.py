"""`make demo`: the whole pipeline on sample media, end to end, with a printed summary.

Uses ../shared/data when present; otherwise builds a sample from installed packages and says so.
No weights can be downloaded here: the dataset step labels with a tiny RANDOM Wav2Vec2 (the
wav2vec path, tokens without meaning); the model the demo trains, on one speaker's clip, hears
weight-free log-mel features instead (emokit.data.logmel, pipelines/learn.toml); the demo says so.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import cv2

from emokit.sample import SHARED_DATA, sample_inputs

TOY = (
    "!!! The Wav2Vec2 model below is a tiny RANDOM model saved by the demo, not "
    "facebook/wav2vec2-base-960h: audio tokens have the right shape and alignment, no meaning."
)


TOY_MODEL = (
    "!!! A TINY MODEL FITTED TO ONE SPEAKER: the tiny-face preset (6 M parameters, a lossless "
    "pixel latent at 64 px) trained from scratch for a few minutes on ONE labelled clip "
    "(pipelines/learn.toml). It can only redraw that person in that shot, not animate any "
    "portrait. Real results need --preset sd15 --init SD1.5 and days of GPU training."
)
# Minutes of the three stages (image, video + audio, speed): ~6 min on 2 cores, make demo <= 10.
STAGE_MINUTES = (2.5, 3.0, 0.5)
LEARN_RECIPE = Path(__file__).resolve().parents[1] / "pipelines" / "learn.toml"
GENERATE_SECONDS = 4.0


def banner(text: str) -> None:
    print(f"\n=== {text} ===", flush=True)


def emokit(*args: str) -> None:
    """Run a real `emokit` command, as a user would type it.

    One torch thread unless the user sets OMP_NUM_THREADS: the tiny model's ops are too small to
    split, and on a busy 2-core box two spinning OpenMP threads cost far more than they give.
    """
    print("$ emokit " + " ".join(args), flush=True)
    env = {"OMP_NUM_THREADS": "1", **os.environ}
    subprocess.run([sys.executable, "-m", "emokit", *args], check=True, env=env)


def manifest_example(dest: Path) -> Path:
    """Regenerate data_manifest.example.parquet: the demo videos' manifest, paths relative to
    the shared media folder so the file is the same on every machine."""
    from emokit.data.ingest import ingest
    from emokit.data.schema import MANIFEST_SCHEMA, read_table, write_table

    with tempfile.TemporaryDirectory() as tmp:
        videos, _, _, where = sample_inputs(Path(tmp) / "sample")
        if not videos[0].is_relative_to(SHARED_DATA):
            raise SystemExit(f"the example manifest is made from ../shared/data ({where})")
        ingest(videos, Path(tmp) / "ds", workers=1, progress=False)
        rows = read_table(Path(tmp) / "ds" / "manifest.parquet").to_pylist()
    for r in rows:
        r["source_path"] = str(Path(r["source_path"]).relative_to(SHARED_DATA.resolve()))
    write_table(rows, MANIFEST_SCHEMA, dest, "manifest", {"paths_relative_to": "shared/data"})
    return dest


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--out", type=Path, default=Path("demo_out"))
    ap.add_argument("--manifest-example", type=Path, help="only regenerate the example manifest")
    args = ap.parse_args()
    if args.manifest_example:
        print(f"wrote {manifest_example(args.manifest_example)}")
        return
    out: Path = args.out
    videos, portrait, audio, where = sample_inputs(out / "sample")
    banner("sample media")
    print(where)
    dataset = out / "dataset"
    banner("1. ingest: scenes -> 3-12 s clip windows")
    emokit("ingest", *map(str, videos), "-o", str(dataset), "-q")

    banner("2. label: 30 FPS face crops, head pose, velocities, Wav2Vec tokens -> shards")
    from emokit.data.wav2vec import save_tiny_wav2vec

    w2v = out / "tiny-wav2vec2-RANDOM"
    if not w2v.exists():
        save_tiny_wav2vec(w2v)
    print(TOY, flush=True)
    emokit("label", str(dataset), "--audio-model", str(w2v), "--size", "256", "-q")

    banner("3. inspect")
    emokit("inspect", str(dataset))

    banner("4. train: tiny-face fitted to one speaker, EMO's three stages (a few minutes)")
    print(TOY_MODEL, flush=True)
    speaker = out / "speaker"  # one clip of the first sample video: what the model learns
    emokit("ingest", str(videos[0]), "-o", str(speaker), "-q")
    print("The speaker's clip is labelled with --audio-model logmel: log-mel speech features, no weights.")
    emokit("label", str(speaker), "--config", str(LEARN_RECIPE), "--size", "128", "-q")
    # one run folder per recipe text: a changed learn.toml trains afresh instead of being refused
    run = out / f"run-tiny-face-{hashlib.sha256(LEARN_RECIPE.read_bytes()).hexdigest()[:8]}"
    for stage, minutes in zip((1, 2, 3), STAGE_MINUTES):
        emokit(
            "train",
            str(speaker),
            "--stage",
            str(stage),
            "--preset",
            "tiny-face",
            "--config",
            str(LEARN_RECIPE),
            "-o",
            str(run),
            "--max-steps",
            "1000000",
            "--time-limit",
            str(minutes),
            "-w",
            "1",
            "-q",
        )

    banner("5. generate: the speaker's first frame, driven by the clip's own speech")
    print(TOY_MODEL, flush=True)
    clip, first = first_clip(speaker, out, GENERATE_SECONDS)
    video = out / "speaker_talking.mp4"
    emokit(
        "generate",
        str(first),
        str(clip),
        "--checkpoint",
        str(run),
        "--config",
        str(LEARN_RECIPE),
        "-o",
        str(video),
        "-q",
    )

    banner("6. evaluate: the generated video against the real clip")
    emokit("evaluate", str(video), "--reference", str(clip), "-o", str(out / "evaluate.json"))
    print(f"\nDemo finished. Outputs under {out}/: {dataset}/inspect/*.png, {video}, {out}/evaluate.json")


def first_clip(dataset: Path, out: Path, seconds: float) -> tuple[Path, Path]:
    """The dataset's first labelled clip, cut to ``seconds`` (the face crop with its audio, as
    training saw it), and its first frame as a PNG portrait."""
    import av

    from emokit.data.schema import read_table
    from emokit.train.dataset import find_shards

    mp4 = read_table(find_shards(dataset)[0], columns=["video_mp4"]).column("video_mp4")[0].as_py()
    full = out / "speaker_clip_full.mp4"
    full.write_bytes(mp4)
    clip, first = out / "speaker_clip.mp4", out / "speaker_first_frame.png"
    with av.open(str(full)) as src, av.open(str(clip), "w") as dst:
        streams = {
            s.index: dst.add_stream_from_template(s) for s in src.streams if s.type in ("video", "audio")
        }
        for packet in src.demux(*[s for s in src.streams if s.index in streams]):
            if packet.dts is None or packet.pts is None:
                continue
            if float(packet.pts * packet.time_base) >= seconds:
                continue
            packet.stream = streams[packet.stream.index]
            dst.mux(packet)
    with av.open(str(clip)) as c:
        frame = next(c.decode(video=0)).to_ndarray(format="bgr24")
    cv2.imwrite(str(first), frame)
    return clip, first


if __name__ == "__main__":
    main()
