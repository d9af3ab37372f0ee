"""`emokit ingest` on real media: known cuts, VFR, odd streams, bad inputs, reruns and kills."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pyarrow.parquet as pq
import pytest

from emokit.config import IngestConfig
from emokit.data.ingest import ingest, ingest_source
from emokit.data.schema import MANIFEST_SCHEMA, SCHEMA_VERSION, read_table
from emokit.data.windows import clip_windows, split_span

FRAME_2997 = 1001 / 30000


def ok_rows(rows):
    return [r for r in rows if r["status"] == "ok"]


@pytest.mark.crossrun
def test_scene_cuts_give_exactly_the_one_long_shot(videos):
    # SOURCES.md: cuts at 1.511, 3.580, 7.884 s (frames 20, 82, 211); only 3.580-7.884 is >= 3 s.
    rows = ok_rows(ingest_source(videos / "scene_cuts_multiface_2997fps.mp4", IngestConfig()))
    assert len(rows) == 1
    r = rows[0]
    assert (r["start_frame"], r["end_frame"]) == (82, 211)
    assert abs(r["start_s"] - 3.580) < FRAME_2997
    assert abs(r["end_s"] - 7.884) < FRAME_2997
    assert r["has_audio"] and r["audio_stream"] is not None


def _write_concat(path: Path, parts: list[tuple[Path, float]], size: int = 320) -> int:
    """Re-encode the first seconds of each real video, resized, into one 30 fps file; returns
    the frame index where the second part starts."""
    out = av.open(str(path), "w")
    st = out.add_stream("libx264", rate=30)
    st.width = st.height = size
    st.pix_fmt = "yuv420p"
    n = 0
    starts = []
    for src, seconds in parts:
        starts.append(n)
        with av.open(str(src)) as c:
            v = c.streams.video[0]
            tb = Fraction(v.time_base)
            t0 = None
            for frame in c.decode(v):
                t0 = frame.pts * tb if t0 is None else t0
                # hold each source frame until the next one: a 25 fps source becomes 30 fps
                while n - starts[-1] < seconds * 30 and (n - starts[-1]) / 30 < frame.pts * tb - t0 + 1 / 25:
                    img = frame.to_ndarray(width=size, height=size, format="rgb24")
                    f = av.VideoFrame.from_ndarray(img, format="rgb24")
                    f.pts = n
                    f.time_base = Fraction(1, 30)
                    for p in st.encode(f):
                        out.mux(p)
                    n += 1
                if n - starts[-1] >= seconds * 30:
                    break
    for p in st.encode():
        out.mux(p)
    out.close()
    return starts[1]


def test_concatenated_real_clips_cut_found_within_one_frame(videos, tmp_path):
    # speaker_d is 410x412 at 25 fps, speaker_vfr_700 is 700x700 VFR: different sizes and rates.
    path = tmp_path / "concat.mp4"
    cut = _write_concat(
        path, [(videos / "speaker_d_25fps_410x412.mp4", 4.0), (videos / "speaker_vfr_700.mp4", 5.0)]
    )
    rows = ok_rows(ingest_source(path, IngestConfig()))
    assert len(rows) == 2, rows
    assert abs(rows[0]["end_frame"] - cut) <= 1
    assert rows[1]["start_frame"] == rows[0]["end_frame"]
    assert rows[0]["scene_index"] == 0 and rows[1]["scene_index"] == 1


@pytest.fixture(scope="module")
def mixed_dataset(videos, tmp_path_factory):
    """One run over real videos plus broken inputs, with awkward names."""
    root = tmp_path_factory.mktemp("inputs")
    bad = root / "bäd inputs"
    bad.mkdir()
    (bad / "zero bytes.mp4").write_bytes(b"")
    (bad / "not a video.mp4").write_text("this is text, not an mp4\n")
    real = (videos / "speaker_d_25fps_410x412.mp4").read_bytes()
    (bad / "truncated.mp4").write_bytes(real[: len(real) // 2])
    shutil.copy(videos.parent / "audio" / "speech_en_8s_16k_stereo.wav", bad / "audio only.mp4")
    names = [
        "no_face_slides_30fps_1080p.mp4",
        "speaker_vfr_700.mp4",
        "speaker_d_25fps_410x412.mp4",
        "talking_no_audio_30fps_720x1280.mp4",
    ]
    inputs = [videos / n for n in names] + [bad]
    out = tmp_path_factory.mktemp("ds")
    summary = ingest(inputs, out, workers=2, progress=False)
    return inputs, out, summary, read_table(out / "manifest.parquet").to_pylist()


def _by_name(rows, name):
    return [r for r in rows if Path(r["source_path"]).name == name]


def test_bad_inputs_are_rejected_rows_and_others_still_produce_clips(mixed_dataset):
    _, _, summary, rows = mixed_dataset
    reasons = {Path(r["source_path"]).name: r["reason"] for r in rows if r["status"] == "rejected"}
    assert set(reasons) == {"zero bytes.mp4", "not a video.mp4", "truncated.mp4", "audio only.mp4"}
    assert reasons["zero bytes.mp4"].startswith("empty file")
    assert reasons["not a video.mp4"].startswith("not a readable media file")
    assert reasons["truncated.mp4"].startswith("truncated or corrupt")
    assert reasons["audio only.mp4"].startswith("no video stream")
    assert all("\n" not in r for r in reasons.values())
    assert summary.clips == len(ok_rows(rows)) > 10


def test_long_video_windows_within_bounds_and_without_overlap(mixed_dataset):
    rows = _by_name(mixed_dataset[3], "no_face_slides_30fps_1080p.mp4")
    assert all(r["status"] == "ok" for r in rows)
    assert all(3.0 <= r["duration_s"] <= 12.0 for r in rows)
    rows.sort(key=lambda r: r["start_frame"])
    for a, b in zip(rows, rows[1:]):
        assert a["end_frame"] <= b["start_frame"]  # no overlap
        if a["scene_index"] == b["scene_index"]:
            assert a["end_frame"] == b["start_frame"]  # a kept span is covered without holes
    covered = sum(r["duration_s"] for r in rows)
    assert covered > 0.9 * 122.67  # only sub-3 s spans are dropped


def test_vfr_and_audio_first_streams(mixed_dataset):
    rows = mixed_dataset[3]
    (vfr,) = _by_name(rows, "speaker_vfr_700.mp4")
    assert vfr["vfr"] is True
    assert (vfr["start_frame"], vfr["end_frame"]) == (0, 135)  # 135 decoded frames
    assert abs(vfr["start_s"] - 0.033) < 0.002  # the video starts at 0.033 s
    assert abs(vfr["duration_s"] - 6.10) < 1 / 30
    (d,) = _by_name(rows, "speaker_d_25fps_410x412.mp4")
    assert (d["video_stream"], d["audio_stream"]) == (1, 0)  # audio is stream 0
    assert (d["start_frame"], d["end_frame"]) == (0, 169)
    assert abs(d["duration_s"] - 6.76) < 1 / 25
    assert (d["width"], d["height"], d["fps"]) == (410, 412, 25.0)


def test_video_without_audio_is_kept_and_marked(mixed_dataset):
    (r,) = _by_name(mixed_dataset[3], "talking_no_audio_30fps_720x1280.mp4")
    assert r["status"] == "ok" and r["has_audio"] is False and r["audio_stream"] is None
    assert (r["end_frame"], r["width"], r["height"]) == (352, 720, 1280)


def test_manifest_schema_and_version(mixed_dataset):
    path = mixed_dataset[1] / "manifest.parquet"
    schema = pq.read_schema(path)
    assert schema.remove_metadata() == MANIFEST_SCHEMA
    assert schema.metadata[b"schema_version"].decode() == SCHEMA_VERSION
    ids = [r["clip_id"] for r in mixed_dataset[3]]
    assert len(ids) == len(set(ids))


@pytest.mark.crossrun
def test_rerun_is_identical_and_skips_finished_sources(mixed_dataset, tmp_path):
    inputs, out, _, rows = mixed_dataset
    again = ingest(inputs, out, workers=1, progress=False)
    assert again.cached == again.sources
    assert read_table(out / "manifest.parquet").to_pylist() == rows
    fresh = tmp_path / "fresh"
    ingest(inputs, fresh, workers=1, progress=False)  # a new folder recomputes the same rows
    assert read_table(fresh / "manifest.parquet").to_pylist() == rows


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "emokit", *args], capture_output=True, text=True)


def test_cli_exit_codes(videos, tmp_path):
    empty = tmp_path / "empty.mp4"
    empty.write_bytes(b"")
    good = str(videos / "speaker_d_25fps_410x412.mp4")
    r = _cli("ingest", good, str(empty), "-o", str(tmp_path / "a"), "-q")
    assert r.returncode == 0, r.stderr
    assert "1 clip windows" in r.stdout and "empty file" in r.stdout
    r = _cli("ingest", good, str(empty), "-o", str(tmp_path / "b"), "-q", "--strict")
    assert r.returncode != 0 and "--strict" in r.stderr
    r = _cli("ingest", str(empty), "-o", str(tmp_path / "c"), "-q")
    assert r.returncode != 0 and "no usable clip" in r.stderr
    r = _cli("ingest", str(tmp_path / "missing.mp4"), "-o", str(tmp_path / "d"))
    assert r.returncode == 2 and "input not found" in r.stderr


@pytest.mark.crossrun
def test_sigkill_midway_then_rerun_matches_clean_run(videos, tmp_path):
    inputs = [
        str(videos / n)
        for n in (
            "speaker_d_25fps_410x412.mp4",
            "speaker_vfr_700.mp4",
            "no_face_slides_30fps_1080p.mp4",
            "talking_no_audio_30fps_720x1280.mp4",
        )
    ]
    killed = tmp_path / "killed"
    proc = subprocess.Popen(
        [sys.executable, "-m", "emokit", "ingest", *inputs, "-o", str(killed), "-q", "--workers", "1"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    cache = killed / ".ingest"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and len(list(cache.glob("*.parquet"))) < 1:
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (killed / "manifest.parquet").exists()  # killed before the end: no manifest yet
    assert _cli("ingest", *inputs, "-o", str(killed), "-q").returncode == 0
    clean = tmp_path / "clean"
    assert _cli("ingest", *inputs, "-o", str(clean), "-q").returncode == 0
    assert (
        read_table(killed / "manifest.parquet").to_pylist()
        == read_table(clean / "manifest.parquet").to_pylist()
    )
    leftovers = [p for p in killed.rglob("*") if p.name.endswith(".tmp")]
    assert leftovers == []


def test_split_span_near_equal_parts_within_bounds():
    times = np.arange(0, 30 * 25) / 30.0  # 25 s at 30 fps
    parts = split_span(times, 25.0, 0, len(times), 3.0, 12.0)
    lengths = [(b - a) / 30 for a, b in parts]
    assert len(parts) == 3 and max(lengths) - min(lengths) <= 1 / 30 + 1e-9
    assert split_span(times, 25.0, 0, 80, 3.0, 12.0) == []  # 2.67 s span dropped
    windows = clip_windows(times, 25.0, [60, 200], 3.0, 12.0)  # spans 2 s, 4.67 s, 18.33 s
    assert [w.scene_index for w in windows] == [1, 2, 2]
