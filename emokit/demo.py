"""`make demo`: the whole pipeline on sample media, end to end, with a printed summary.

Uses ../shared/data when present; otherwise builds a sample from installed packages and says so.
Any model it uses here is a tiny random one, and it says so loudly.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

from emokit.sample import sample_inputs


def banner(text: str) -> None:
    print(f"\n=== {text} ===", flush=True)


def emokit(*args: str) -> None:
    """Run a real `emokit` command, as a user would type it."""
    print("$ emokit " + " ".join(args), flush=True)
    subprocess.run([sys.executable, "-m", "emokit", *args], check=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--out", type=Path, default=Path("demo_out"))
    args = ap.parse_args()
    out: Path = args.out
    videos, portrait, audio, where = sample_inputs(out / "sample")
    banner("sample media")
    print(where)
    dataset = out / "dataset"
    banner("1. ingest: scenes -> 3-12 s clip windows")
    emokit("ingest", *map(str, videos), "-o", str(dataset), "-q")
    print(f"\nDemo finished. Outputs under {out}/")


if __name__ == "__main__":
    main()
