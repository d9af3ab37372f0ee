"""Crops that stay in the picture, on a real talking head moved to the frame edge (issue 12 item 4),
an `emokit label` run whose terminal output holds no MediaPipe/TFLite native log line, and an
`emokit inspect` that names those clips by source and time span and draws their crops (item 7).

speaker_c (512², HDTF-style, face ~320 px) is cut so that its face sits near the top-left corner of
a frame shorter than the ×1.5 square: label must shift and shrink the crop (real pixels only). Cut
tighter still (the face 8 px from the left edge, the frame shorter than 1.15 face sides), padding
is unavoidable: the padded fraction must match the crop's geometry, ``padded`` is flagged and the
padded pixels are a soft continuation of the picture, not black. Both clips go through the real
command line (`emokit ingest`, `emokit label`) in a subprocess, whose stderr is checked.
"""

from __future__ import annotations

import io
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import av
import cv2
import numpy as np
import pytest

from emokit.data.crop import MIN_CROP_SCALE, PADDED_FLAG, crop_square, padded_fraction, square_crop_box
from emokit.data.encode import Mp4Writer
from emokit.data.inspect import CANVAS, YELLOW, contact_sheet
from emokit.data.schema import read_table
from emokit.data.wav2vec import save_tiny_wav2vec

SIZE = 128
FRAMES = 85  # 3.4 s at 25 fps
# source rectangles (x0, y0, x1, y1) of speaker_c; its face spans about x 124..435, y 159..482
SHIFTED = (84, 118, 512, 512)  # face ~40 px from the left and top edges, frame 428×394
TIGHT = (116, 146, 512, 490)  # face ~8 px from the left edge, frame 396×344 < 1.15 face sides
NATIVE_LOG = re.compile(
    r"^[IWEF]\d{4} [\d:.]+ +\d+ \S+:\d+\]|inference_feedback_manager|landmark_projection_calculator"
    r"|TensorFlow Lite|absl::InitializeLog",
    re.MULTILINE,
)


@pytest.fixture(scope="module")
def labelled(videos: Path, tmp_path_factory) -> dict:
    """The two cut videos, labelled by the CLI: rows and first source frames by name, and stderr."""
    tmp = tmp_path_factory.mktemp("crop_edges")
    frames = []
    with av.open(str(videos / "speaker_c_25fps_512.mp4")) as c:
        for frame in c.decode(video=0):
            frames.append(frame.to_ndarray(format="rgb24"))
            if len(frames) == FRAMES:
                break
    firsts = {}
    for name, (x0, y0, x1, y1) in {"shifted": SHIFTED, "tight": TIGHT}.items():
        with Mp4Writer(tmp / f"{name}.mp4", fps=25, crf=12) as w:
            for f in frames:
                w.write(np.ascontiguousarray(f[y0:y1, x0:x1]))
        firsts[name] = frames[0][y0:y1, x0:x1]
    tiny = save_tiny_wav2vec(tmp / "w2v")
    ds = tmp / "ds"
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    env.pop("EMOKIT_NATIVE_LOGS", None)
    cli = [sys.executable, "-m", "emokit"]
    videos_in = [str(tmp / "shifted.mp4"), str(tmp / "tight.mp4")]
    r = subprocess.run(
        [*cli, "ingest", *videos_in, "-o", str(ds), "-w", "1"], capture_output=True, text=True, env=env
    )
    assert r.returncode == 0, r.stderr
    stderr = r.stderr
    cmd = [*cli, "label", str(ds), "--size", str(SIZE), "--audio-model", str(tiny), "-w", "2"]
    r = subprocess.run(cmd, capture_output=True, text=True, env=env)
    assert r.returncode == 0, r.stderr
    rows = {
        Path(row["source_path"]).stem: row
        for p in sorted((ds / "shards").glob("*.parquet"))
        for row in read_table(p).to_pylist()
    }
    return {
        "rows": rows,
        "firsts": firsts,
        "stderr": stderr + r.stderr,
        "stdout": r.stdout,
        "ds": ds,
        "env": env,
    }


def test_label_stderr_has_no_native_log_lines(labelled) -> None:
    err = labelled["stderr"]
    assert not NATIVE_LOG.search(err), err
    # what should reach the terminal still does (Python output: see test_native_logs.py)
    assert "label: 100%" in err and "ingest: 100%" in err
    assert "2 clips" in labelled["stdout"] and "padded 1" in labelled["stdout"]


def _decoded_first(row: dict) -> np.ndarray:
    with av.open(io.BytesIO(row["video_mp4"])) as c:
        return next(c.decode(video=0)).to_ndarray(format="rgb24")


def _union_source(row: dict) -> np.ndarray:
    """The clip's face union box back in source pixels (face_mask_box is in crop pixels)."""
    x0, y0, x1, _ = row["crop_box"]
    return np.asarray(row["face_mask_box"]) * (x1 - x0) / SIZE + np.array([x0, y0, x0, y0])


def _holds_min_square(crop_box, union) -> bool:
    side = MIN_CROP_SCALE * max(union[2] - union[0], union[3] - union[1])
    cx, cy = 0.5 * (union[0] + union[2]), 0.5 * (union[1] + union[3])
    x0, y0, x1, y1 = crop_box
    tol = 1.0  # whole-pixel rounding of the boxes
    return (
        x0 <= cx - side / 2 + tol
        and y0 <= cy - side / 2 + tol
        and x1 >= cx + side / 2 - tol
        and y1 >= cy + side / 2 - tol
    )


def test_face_near_the_edge_is_shifted_and_shrunk_not_padded(labelled) -> None:
    row, first = labelled["rows"]["shifted"], labelled["firsts"]["shifted"]
    assert row["status"] == "ok", row["reason"]
    w, h = SHIFTED[2] - SHIFTED[0], SHIFTED[3] - SHIFTED[1]
    box = [int(v) for v in row["crop_box"]]
    union = _union_source(row)
    long_side = max(union[2] - union[0], union[3] - union[1])
    assert union[0] < 0.15 * w and union[1] < 0.15 * h  # the face really is near the top-left
    # inside the frame, nothing padded
    assert box[0] >= 0 and box[1] >= 0 and box[2] <= w and box[3] <= h
    assert row["padded_frac"] == 0.0 and "padded" not in row["flags"]
    # shrunk (the ×1.5 square is taller than the frame), never below the minimum margin
    side = box[2] - box[0]
    assert MIN_CROP_SCALE * long_side - 1 <= side < 1.5 * long_side - 1
    assert _holds_min_square(box, union)
    # what the old rule (shift only, pad what is left) would have done here
    assert padded_fraction(square_crop_box(union, 1.5, (w, h)), (w, h)) > 0.1
    # the crop is real pixels: the decoded crop matches the source frame cut the same way
    diff = np.abs(_decoded_first(row).astype(int) - crop_square(first, box, SIZE).astype(int))
    assert diff.mean() < 4


def test_unavoidable_padding_is_measured_flagged_and_soft(labelled) -> None:
    row, first = labelled["rows"]["tight"], labelled["firsts"]["tight"]
    assert row["status"] == "ok", row["reason"]
    w, h = TIGHT[2] - TIGHT[0], TIGHT[3] - TIGHT[1]
    x0, y0, x1, y1 = (int(v) for v in row["crop_box"])
    side = x1 - x0
    union = _union_source(row)
    long_side = max(union[2] - union[0], union[3] - union[1])
    # the smallest crop the margin allows, still holding the face with that margin
    assert side == pytest.approx(math.ceil(MIN_CROP_SCALE * long_side), abs=1.5)
    assert _holds_min_square((x0, y0, x1, y1), union)
    # it reaches past the left edge and past the top and bottom (the frame is shorter than it)
    assert x0 < 0 and x1 <= w and y0 < 0 and y1 > h
    inside = (min(x1, w) - max(x0, 0)) * (min(y1, h) - max(y0, 0))
    assert row["padded_frac"] == pytest.approx(1 - inside / side**2, abs=1e-6)
    assert row["padded_frac"] > PADDED_FLAG and "padded" in row["flags"]

    crop = _decoded_first(row).astype(np.float32)
    k = SIZE / side
    left, top = round(-x0 * k), round(-y0 * k)
    bottom = round((h - y0) * k)
    assert left >= 4 and top >= 4 and bottom < SIZE
    real = crop[top + 2 : bottom - 2, left + 2 :]
    # the padded pixels are not black: as bright as the real picture next to them
    for band, near in [
        (crop[:, : left - 1], crop[:, left + 1 : 2 * left]),
        (crop[: top - 1], crop[top + 1 : 2 * top]),
    ]:
        assert (band.max(axis=2) < 16).mean() <= (near.max(axis=2) < 16).mean() + 0.05
        assert band.mean() > 0.6 * near.mean()
    # no hard border where the frame ends: the step across it is like a step inside the picture
    step_inside = np.abs(np.diff(real, axis=1)).mean()
    step_left = np.abs(crop[top:bottom, left] - crop[top:bottom, left - 1]).mean()
    step_top = np.abs(crop[top, left:] - crop[top - 1, left:]).mean()
    assert step_left < 3 * step_inside + 4 and step_top < 3 * step_inside + 4
    # the real part is the source's pixels (the face keeps its place in the crop)
    ref = crop_square(first, (x0, y0, x1, y1), SIZE, pad="soft").astype(np.float32)
    assert np.abs(crop - ref)[top:bottom, left:].mean() < 4


def test_inspect_names_clips_by_source_and_draws_the_crop(labelled, tmp_path) -> None:
    ds, rows = labelled["ds"], labelled["rows"]
    r = subprocess.run(
        [sys.executable, "-m", "emokit", "inspect", str(ds)],
        capture_output=True,
        text=True,
        env=labelled["env"],
    )
    assert r.returncode == 0, r.stderr
    assert not NATIVE_LOG.search(r.stderr), r.stderr
    lines = r.stdout.splitlines()
    assert lines[0].split()[:3] == ["source", "start–end", "length"]
    for unit in ("(s)", "(max)", "(% short side)", "(deg/frame)", "(% of crop)"):
        assert unit in lines[1]
    for name, row in rows.items():
        line = next(x for x in lines if x.startswith(f"{name}.mp4 "))
        assert f"{row['start_s']:.2f}–{row['end_s']:.2f}" in line and row["clip_id"][:12] in line
        assert f"{100 * row['padded_frac']:.1f}" in line and all(f in line for f in row["flags"])
    assert "padded" in next(x for x in lines if x.startswith("tight.mp4 "))
    assert (ds / "inspect" / "contact_sheet.png").is_file() and (ds / "inspect" / "pose.png").is_file()
    # the crop square is drawn on the source frame, on grey canvas where it leaves the frame
    windows = {w["clip_id"]: w for w in read_table(ds / "manifest.parquet").to_pylist()}
    counts = {}
    for name, row in rows.items():
        png = contact_sheet([row], tmp_path / f"{name}.png", windows)
        sheet = cv2.cvtColor(cv2.imread(str(png)), cv2.COLOR_BGR2RGB)
        yellow = (sheet == YELLOW).all(axis=2).sum()
        grey = (sheet == CANVAS).all(axis=2).sum()
        counts[name] = yellow, grey
    assert all(yellow > 500 for yellow, _ in counts.values()), counts
    assert counts["tight"][1] > 2000 and counts["shifted"][1] < 50, counts
