"""`make demo`: the whole pipeline on sample media, end to end, with a printed summary.

Uses ../shared/data when present; otherwise builds a sample from installed packages and says so.
Every model it uses is a tiny RANDOM one (no weights can be downloaded here), and it says so.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

from emokit.sample import SHARED_DATA, sample_inputs

TOY = (
    "!!! The Wav2Vec2 model below is a tiny RANDOM model saved by the demo, not "
    "facebook/wav2vec2-base-960h: audio tokens have the right shape and alignment, no meaning."
)


TOY_MODEL = (
    "!!! TOY WEIGHTS: the tiny preset trained for seconds on a handful of clips. The video "
    "it makes is blurry noise shaped by the pipeline, not a talking face: the demo shows "
    "that every stage runs end to end. Real results need --preset sd15 --init SD1.5 and "
    "hours of GPU training."
)


def banner(text: str) -> None:
    print(f"\n=== {text} ===", flush=True)


def emokit(*args: str) -> None:
    """Run a real `emokit` command, as a user would type it."""
    print("$ emokit " + " ".join(args), flush=True)
    subprocess.run([sys.executable, "-m", "emokit", *args], check=True)


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

    banner("4. train: the three EMO stages, tiny preset, a few steps each")
    print(TOY_MODEL, flush=True)
    run = out / "run-tiny"
    for stage, steps in ((1, 30), (2, 15), (3, 10)):
        emokit(
            "train",
            str(dataset),
            "--stage",
            str(stage),
            "--preset",
            "tiny",
            "-o",
            str(run),
            "--max-steps",
            str(steps),
            "--lr",
            "1e-4",
            "-q",
        )

    banner("5. generate: the portrait animated by the speech")
    print(TOY_MODEL, flush=True)
    video = out / "portrait_talking.mp4"
    emokit(
        "generate",
        str(portrait),
        str(audio),
        "--checkpoint",
        str(run),
        "-o",
        str(video),
        "--steps",
        "10",
        "--audio-model",
        str(w2v),
    )
    print(f"\nDemo finished. Outputs under {out}/: {dataset}/inspect/*.png, {video}")


if __name__ == "__main__":
    main()
