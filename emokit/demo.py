"""`make demo`: the whole pipeline on sample media, end to end, with a printed summary.

Uses ../shared/data when present; otherwise builds a sample from installed packages and says so.
The wav2vec model is a tiny RANDOM one (no weights can be downloaded here), and it says so. The
EMO model is trained in the run itself: the tiny-face preset fitted for ~5 minutes to the first
sample video's speaker, then asked to animate that speaker's first frame with her own speech.
"""

from __future__ import annotations

import argparse
import os
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
    "!!! A TINY MODEL FITTED TO ONE SPEAKER IN A FEW MINUTES, not a general model: the tiny-face "
    "preset (a lossless pixel latent at 64 px, pipelines/learn.toml) trained on one clip in this "
    "run, on the CPU. After these few minutes (a few hundred steps) its video is still NOISE "
    "(BENCHMARKS.md, 'Learning': the pixel latent needs thousands of steps); its audio tokens "
    "come from a RANDOM wav2vec, so there is no lip sync either. Real results need --preset "
    "sd15 --init SD1.5, a real wav2vec2 and days of GPU training."
)
LEARN_RECIPE = Path(__file__).resolve().parents[1] / "pipelines" / "learn.toml"
# Minutes of training per stage: about 5 minutes in all on 2 CPU cores.
STAGE_MINUTES = ((1, 3.0), (2, 1.5), (3, 0.5))
DEMO_SECONDS = 2.0  # length of the generated clip (64 px, 10 DDIM steps: ~1-3 min on a CPU)


def banner(text: str) -> None:
    print(f"\n=== {text} ===", flush=True)


def emokit(*args: str) -> None:
    """Run a real `emokit` command, as a user would type it."""
    print("$ emokit " + " ".join(args), flush=True)
    # One torch thread unless the user says otherwise: on a busy 2-core box two threads spin
    # against each other (BENCHMARKS.md, "learning": 18x the CPU time for a tiny-model step).
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
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

    banner("4. train: the three EMO stages on ONE speaker's clip, tiny-face preset, ~5 minutes")
    print(TOY_MODEL, flush=True)
    one = out / "dataset-one-speaker"
    emokit("ingest", str(videos[0]), "-o", str(one), "-q")
    emokit("label", str(one), "--audio-model", str(w2v), "--size", "128", "-q")
    run = out / "run-tiny-face"
    for stage, minutes in STAGE_MINUTES:
        emokit(
            "train",
            str(one),
            "--stage",
            str(stage),
            "--config",
            str(LEARN_RECIPE),
            "-o",
            str(run),
            "--max-steps",
            "100000",
            "--time-limit",
            str(minutes),
            "--workers",
            "1",
            "-q",
        )

    banner("5. generate: that speaker's first frame animated by the first seconds of her speech")
    print(TOY_MODEL, flush=True)
    first, speech = first_frame_and_speech(videos[0], out / "sample", DEMO_SECONDS)
    video = out / "speaker_talking.mp4"
    emokit(
        "generate",
        str(first),
        str(speech),
        "--checkpoint",
        str(run),
        "-o",
        str(video),
        "--config",
        str(LEARN_RECIPE),
        "--audio-model",
        str(w2v),
    )
    print(f"\nDemo finished. Outputs under {out}/: {dataset}/inspect/*.png, {video}")


def first_frame_and_speech(video: Path, work: Path, seconds: float) -> tuple[Path, Path]:
    """The video's first frame as a PNG (the portrait) and its first ``seconds`` of audio as a WAV."""
    import av
    import cv2

    from emokit.data.audio import load_audio
    from emokit.sample import write_wav

    work.mkdir(parents=True, exist_ok=True)
    with av.open(str(video)) as c:
        frame = next(c.decode(video=0)).to_ndarray(format="rgb24")
    portrait = work / "first_frame.png"
    cv2.imwrite(str(portrait), cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
    speech = work / "first_seconds.wav"
    write_wav(speech, load_audio(video, 0.0, seconds, 16000), 16000)
    return portrait, speech


if __name__ == "__main__":
    main()
