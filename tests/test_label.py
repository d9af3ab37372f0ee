"""`emokit label` end to end on real media: 30 FPS crops, tokens per frame, flags, shards, resume."""

from __future__ import annotations

import io
import math
import os
import signal
import subprocess
import sys
import time
from fractions import Fraction
from pathlib import Path

import av
import cv2
import duckdb
import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from emokit.config import LabelConfig
from emokit.data.ingest import ingest
from emokit.data.label import label
from emokit.data.label_video import label_window
from emokit.data.schema import LABEL_COLUMNS, SCHEMA_VERSION, SHARD_SCHEMA, read_table
from emokit.data.wav2vec import save_tiny_wav2vec


@pytest.fixture(scope="module")
def tiny_w2v(tmp_path_factory) -> str:
    return str(save_tiny_wav2vec(tmp_path_factory.mktemp("w2v") / "tiny"))


def _shards(dataset: Path, columns=None) -> list[dict]:
    return [
        r
        for p in sorted((dataset / "shards").glob("shard-*.parquet"))
        for r in read_table(p, columns=columns).to_pylist()
    ]


@pytest.fixture(scope="module")
def labelled(videos, tiny_w2v, tmp_path_factory):
    ds = tmp_path_factory.mktemp("labelled")
    names = [
        "speaker_d_25fps_410x412.mp4",
        "speaker_vfr_700.mp4",
        "crowd_multiface_25fps_1080p.mp4",
        "talking_no_audio_30fps_720x1280.mp4",
    ]
    ingest([videos / n for n in names], ds, workers=2, progress=False)
    cfg = LabelConfig(size=128, audio_model=tiny_w2v, shard_size=2)
    summary = label(ds, cfg, workers=2, progress=False)
    return ds, summary, _shards(ds)


def _name(row) -> str:
    return Path(row["source_path"]).name


def test_clips_are_30fps_with_one_token_per_frame(labelled):
    _, _, rows = labelled
    ok = [r for r in rows if r["status"] == "ok"]
    assert {_name(r) for r in ok} >= {
        "speaker_d_25fps_410x412.mp4",
        "speaker_vfr_700.mp4",
        "talking_no_audio_30fps_720x1280.mp4",
    }
    for r in ok:
        n = r["num_frames"]
        assert n == round((r["end_s"] - r["start_s"]) * 30)
        assert len(r["face_boxes"]) == len(r["pose"]) == len(r["velocity"]) == n
        with av.open(io.BytesIO(r["video_mp4"])) as c:
            v = c.streams.video[0]
            assert v.codec_context.name == "h264" and (v.width, v.height) == (128, 128)
            assert v.average_rate == 30
            frames = sum(1 for _ in c.decode(v))
            assert frames == n
            if r["has_audio"]:
                a = c.streams.audio[0]
                assert a.codec_context.name == "aac"
                audio_s = float(a.duration * a.time_base)
                assert abs(audio_s - n / 30) <= 1 / 30
        if r["has_audio"]:
            frames_, layers, dim = r["audio_shape"]
            assert frames_ == n and layers >= 1
            tokens = np.frombuffer(r["audio_embeddings"], dtype="<f2").reshape(r["audio_shape"])
            assert np.isfinite(tokens).all() and tokens.std() > 0
        else:
            assert "no_audio" in r["flags"] and r["audio_embeddings"] is None


def test_source_frame_shows_the_holds_of_a_25fps_source(labelled):
    """speaker_d is 25 fps from 0 s: 30 FPS frame k of the video shows source frame floor(k·25/30)."""
    _, _, rows = labelled
    ds = [r for r in rows if _name(r) == "speaker_d_25fps_410x412.mp4" and r["status"] == "ok"]
    assert ds
    for d in ds:
        k0 = round(d["start_s"] * 30)
        assert d["source_frame"] == [(k * 25) // 30 for k in range(k0, k0 + d["num_frames"])]
    for r in rows:  # a 30 fps source: no holds, no skips
        if _name(r) == "talking_no_audio_30fps_720x1280.mp4" and r["status"] == "ok":
            first = r["source_frame"][0]
            assert r["source_frame"] == list(range(first, first + r["num_frames"]))


def test_vfr_source_becomes_exact_30fps(labelled):
    (r,) = [r for r in labelled[2] if _name(r) == "speaker_vfr_700.mp4"]
    assert r["num_frames"] == round(6.10 * 30)


def test_crowd_is_flagged_or_rejected_with_reason(labelled):
    rows = [r for r in labelled[2] if _name(r) == "crowd_multiface_25fps_1080p.mp4"]
    assert rows
    for r in rows:
        assert (r["status"] == "rejected" and r["reason"]) or "multi_face" in r["flags"]


def test_last_shot_of_scene_cuts_has_several_faces(videos, tiny_w2v):
    # 7.884-10.02 s is the audience shot (shorter than 3 s, so ingest drops it: label it directly).
    window = dict(
        clip_id="audience",
        source_path=str(videos / "scene_cuts_multiface_2997fps.mp4"),
        source_sha256="x",
        start_s=7.884,
        end_s=10.0,
        video_stream=0,
        has_audio=True,
    )
    (r,) = label_window(window, LabelConfig(size=96), bounds=(1.0, 12.0)).rows
    assert (r["status"] == "rejected" and r["reason"]) or ("multi_face" in r["flags"] and r["max_faces"] > 1)


def test_shards_schema_pandas_duckdb_label_only_reads(labelled):
    ds = labelled[0]
    paths = sorted((ds / "shards").glob("shard-*.parquet"))
    assert len(paths) == 2  # 4 windows, 2 per shard
    schema = pq.read_schema(paths[0])
    assert schema.remove_metadata() == SHARD_SCHEMA
    assert schema.metadata[b"schema_version"].decode() == SCHEMA_VERSION
    df = pd.read_parquet(paths[0], columns=LABEL_COLUMNS)
    assert "video_mp4" not in df.columns and len(df) >= 2
    n = duckdb.sql(
        f"select count(*) from read_parquet('{ds / 'shards'}/*.parquet') where status = 'ok'"
    ).fetchall()[0][0]
    assert n == sum(r["status"] == "ok" for r in labelled[2])


def _rotating_portrait_video(portrait: Path, path: Path, seconds=4.0, fps=25):
    """A real portrait turned in-plane by a known roll per frame, translated and zoomed."""
    img = cv2.cvtColor(cv2.imread(str(portrait)), cv2.COLOR_BGR2RGB)
    img = cv2.resize(img, (360, 360), interpolation=cv2.INTER_AREA)
    canvas = 640
    n = round(seconds * fps)
    rolls, centres = [], []
    with av.open(str(path), "w") as out:
        st = out.add_stream("libx264", rate=fps, options={"crf": "16"})
        st.width = st.height = canvas
        st.pix_fmt = "yuv420p"
        for k in range(n):
            roll = 12.0 * math.sin(2 * math.pi * k / n)  # degrees, counter-clockwise positive
            zoom = 1.0 + 0.15 * k / n
            cx, cy = canvas / 2 + 60 * k / n, canvas / 2 - 30 * k / n
            m = cv2.getRotationMatrix2D((180, 180), roll, zoom)
            m[:, 2] += (cx - 180, cy - 180)
            frame = cv2.warpAffine(
                img, m, (canvas, canvas), borderMode=cv2.BORDER_CONSTANT, borderValue=(90, 90, 90)
            )
            vf = av.VideoFrame.from_ndarray(frame, format="rgb24")
            vf.pts, vf.time_base = k, Fraction(1, fps)
            out.mux(st.encode(vf))
            rolls.append(roll)
            centres.append((cx, cy))
        out.mux(st.encode(None))
    return np.array(rolls), np.array(centres)


def test_known_rotation_translation_zoom_recovered(portraits, tmp_path):
    video = tmp_path / "turning portrait.mp4"
    rolls, centres = _rotating_portrait_video(portraits / "woman_frontal.jpg", video)
    ds = tmp_path / "ds"
    ingest([video], ds, workers=1, progress=False)
    label(ds, LabelConfig(size=256), workers=1, progress=False)  # silent video: no audio model
    (r,) = _shards(ds)
    assert r["status"] == "ok" and r["num_frames"] == round(4 * 30) and r["fps"] == 30
    src = np.minimum((np.arange(120) * 25) // 30, 99)  # sample-and-hold 25 -> 30 FPS
    true_rate = np.diff(rolls[src])
    est_rate = np.asarray(r["velocity_axes"])[1:, 2]
    assert np.median(np.abs(est_rate - true_rate)) < 0.5
    assert np.abs(est_rate - true_rate).mean() < 0.5
    # boxes follow the known translation (crop coordinates back to source pixels)
    x0, y0, x1, _ = r["crop_box"]
    k = (x1 - x0) / r["size"]
    boxes = np.asarray(r["face_boxes"]) * k + np.array([x0, y0, x0, y0])
    centre = 0.5 * (boxes[:, :2] + boxes[:, 2:])
    moved = centre - centre[0]
    truth = centres[src] - centres[src][0]
    assert np.abs(moved - truth).max() < 12  # pixels, over a 60 px / 30 px drift


def test_no_face_slides_rejected_and_run_exits_zero(videos, tiny_w2v, tmp_path):
    ds = tmp_path / "ds"
    ingest(
        [videos / "no_face_slides_30fps_1080p.mp4", videos / "speaker_d_25fps_410x412.mp4"],
        ds,
        workers=1,
        progress=False,
    )
    cmd = [sys.executable, "-m", "emokit", "label", str(ds), "-q", "--size", "64", "--workers", "2"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    # there is no wav2vec offline: one clear line naming the flag, before any work
    r = subprocess.run(cmd, capture_output=True, text=True, env=env)
    assert r.returncode == 2 and "--audio-model" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
    assert not list((ds / "shards").glob("*.parquet"))
    # files that look right but do not load: found while the workers run, still one line, no shard
    broken = tmp_path / "broken_w2v"
    broken.mkdir()
    for name in ("config.json", "preprocessor_config.json"):
        (broken / name).write_bytes((Path(tiny_w2v) / name).read_bytes())
    (broken / "model.safetensors").write_bytes(b"not a safetensors file")
    r = subprocess.run([*cmd, "--audio-model", str(broken)], capture_output=True, text=True, env=env)
    assert r.returncode == 2 and "--audio-model" in r.stderr, r.stderr
    assert len([x for x in r.stderr.splitlines() if x.startswith("error")]) == 1
    assert not list((ds / "shards").glob("*.parquet"))
    r = subprocess.run(
        [*cmd, "--audio-model", tiny_w2v, "--audio-device", "gpu"], capture_output=True, text=True, env=env
    )
    assert r.returncode == 2 and "--audio-device" in r.stderr and len(r.stderr.splitlines()) == 1
    r = subprocess.run(
        [*cmd, "--audio-model", tiny_w2v, "--audio-device", "cpu"], capture_output=True, text=True, env=env
    )
    assert r.returncode == 0, r.stderr
    rows = _shards(ds, columns=["source_path", "status", "reason"])
    slides = [x for x in rows if "slides" in x["source_path"]]
    assert len(slides) > 5
    assert all(x["status"] == "rejected" and x["reason"] == "no face" for x in slides)
    assert [x["status"] for x in rows if "speaker_d" in x["source_path"]] == ["ok"]
    assert "no face" in r.stdout  # the summary's table of reasons


@pytest.mark.crossrun
def test_sigkill_then_rerun_gives_same_shards(videos, tiny_w2v, tmp_path):
    names = ["speaker_d_25fps_410x412.mp4", "speaker_vfr_700.mp4", "head_turn_25fps_224.mp4"]
    args = ["--size", "96", "--shard-size", "1", "--audio-model", tiny_w2v, "-q", "--workers", "1"]
    runs = {}
    for tag in ("killed", "clean"):
        ds = tmp_path / tag
        ingest([videos / n for n in names], ds, workers=1, progress=False)
        cmd = [sys.executable, "-m", "emokit", "label", str(ds), *args]
        if tag == "killed":
            p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            deadline = time.monotonic() + 180
            while time.monotonic() < deadline and not list((ds / "shards").glob("shard-*.parquet")):
                time.sleep(0.05)
            os.kill(p.pid, signal.SIGKILL)
            p.wait()
            assert len(list((ds / "shards").glob("shard-*.parquet"))) < 4
        assert subprocess.run(cmd, capture_output=True).returncode == 0
        runs[tag] = ds
    a, b = _shards(runs["killed"]), _shards(runs["clean"])
    assert [r["clip_id"] for r in a] == [r["clip_id"] for r in b]
    for ra, rb in zip(a, b):
        for col in LABEL_COLUMNS:
            assert ra[col] == rb[col] or col == "source_path", col
        assert ra["video_mp4"] == rb["video_mp4"]
        assert ra["audio_embeddings"] == rb["audio_embeddings"]
    assert not [p for p in runs["killed"].rglob("*") if p.name.endswith(".tmp")]


def test_inspect_writes_contact_sheet_pose_plot_and_table(labelled):
    ds, _, rows = labelled
    r = subprocess.run([sys.executable, "-m", "emokit", "inspect", str(ds)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    ok = [x for x in rows if x["status"] == "ok"]
    sheet = cv2.imread(str(ds / "inspect" / "contact_sheet.png"))
    assert sheet is not None and sheet.shape[0] >= len(ok) * 160  # one strip per clip
    assert cv2.imread(str(ds / "inspect" / "pose.png")) is not None
    for x in ok:
        assert x["clip_id"][:12] in r.stdout
    assert "contact sheet:" in r.stdout


def _speaker_a_window(videos, has_audio: bool) -> dict:
    """A 3.5 s manifest row of the speaker_a talking head (1.0-4.5 s)."""
    return dict(
        clip_id="w",
        source_path=str(videos / "speaker_a_25fps_1080x1920.mp4"),
        source_sha256="x",
        start_s=1.0,
        end_s=4.5,
        video_stream=0,
        has_audio=has_audio,
    )


def test_kept_face_region_gives_the_same_clip_as_whole_frames(videos, monkeypatch):
    """Label keeps only a square around the first face of each frame; the clip must be exactly
    what whole frames give, and a crop leaving the kept square must fall back to whole frames."""
    from emokit.data import label_video

    window = _speaker_a_window(videos, has_audio=True)
    cfg = LabelConfig(size=128)
    keeps = []
    real = label_video._label_decoded
    monkeypatch.setattr(label_video, "_label_decoded", lambda *a: keeps.append(a[-1]) or real(*a))
    kept = label_window(window, cfg, threads=1)
    assert keeps == [label_video.KEEP_FACE_SIDES]  # a talking head stays inside: no second decode
    keeps.clear()
    monkeypatch.setattr(label_video, "KEEP_FACE_SIDES", 1.0)  # a ×1.5 crop never fits in ×1
    whole = label_window(window, cfg, threads=1)
    assert keeps == [1.0, None]
    (a,), (b,) = kept.rows, whole.rows
    assert a["status"] == "ok" and a["num_frames"] == 105
    assert a.keys() == b.keys()
    for key in a:
        assert a[key] == b[key], key
    np.testing.assert_array_equal(kept.audio, whole.audio)


def test_held_frames_of_a_25fps_source_get_the_boxes_a_fresh_detection_reads(videos):
    """Label runs the face detector once per source image; on the holds of a 25 fps source it
    copies the previous frame's boxes. Detecting every 30 FPS frame must give the same boxes."""
    from emokit.data import label_video
    from emokit.data.decode import read_video_frames
    from emokit.data.faces import FaceDetector
    from emokit.data.frames import WindowFrames

    window = _speaker_a_window(videos, has_audio=False)
    cfg = LabelConfig()
    decoded = label_video._decode_and_detect(window, cfg, None, 1)
    src = decoded.frames.source_index
    held = [i for i in range(1, len(src)) if src[i] == src[i - 1]]
    assert len(held) >= 15  # 1 frame in 6 of 105 is a hold
    every, frames = [], None
    with FaceDetector(cfg.min_face_confidence, cfg.detect_width) as detector:
        span = window["start_s"], window["end_s"]
        for frame in read_video_frames(window["source_path"], *span, cfg.fps, 0, 1):
            frames = frames or WindowFrames(frame, len(src))
            every.append(label_video._detect(detector, frames, frame, cfg.detect_width))
    assert all(every[i] for i in held)  # the face is found there: the comparison is not empty
    assert decoded.detections == every


def test_piece_with_the_window_crop_box_reuses_the_mesh_and_reads_the_same(videos, monkeypatch):
    """After a jump-cut split, a piece whose crop box is the window's takes the window's face-mesh
    results instead of meshing the same crops again: its labels must equal a fresh piece's."""
    from emokit.data import label_video
    from emokit.data.crop import clip_crop_box
    from emokit.data.pose import HeadPoseEstimator
    from emokit.data.track import track_main_face

    window = _speaker_a_window(videos, has_audio=False)
    cfg = LabelConfig(size=128)
    decoded = label_video._decode_and_detect(window, cfg, label_video.KEEP_FACE_SIDES, 1)
    frames = decoded.frames
    boxes = track_main_face(decoded.detections, cfg.fps, cfg.max_gap_s, frames.size).boxes
    n = len(frames)
    whole = label_video._make_part(frames, boxes, 0, n, cfg, None, 1)
    # a piece of the real head's frames whose box union is the window's (found, not assumed)
    same = [
        (a, b)
        for a, b in [(k, n) for k in range(1, n - 60)] + [(0, k) for k in range(n - 1, 60, -1)]
        if tuple(clip_crop_box(boxes[a:b], cfg.crop_scale, frames.size)) == tuple(whole.crop_box)
    ]
    assert same
    a, b = same[0]
    calls = []
    real = HeadPoseEstimator.__call__
    monkeypatch.setattr(HeadPoseEstimator, "__call__", lambda self, c: calls.append(1) or real(self, c))
    reused = label_video._make_part(frames, boxes, a, b, cfg, None, 1, whole)
    assert calls == []
    fresh = label_video._make_part(frames, boxes, a, b, cfg, None, 1)
    assert len(calls) > 50  # the fresh piece did mesh its frames
    np.testing.assert_array_equal(reused.poses, fresh.poses)
    np.testing.assert_array_equal(reused.pose_found, fresh.pose_found)
    np.testing.assert_array_equal(reused.mouth, fresh.mouth)
    np.testing.assert_array_equal(reused.looks, fresh.looks)
    assert (reused.held_frac, reused.hands_frac, reused.mp4) == (fresh.held_frac, fresh.hands_frac, fresh.mp4)


_THREADS_PROBE = """
import sys, torch
from pathlib import Path
from emokit.config import LabelConfig
from emokit.data.ingest import ingest
from emokit.data.label import label
torch.set_num_threads(int(sys.argv[3]))  # as bench_learn does, before any torch work
ingest([Path(sys.argv[1])], Path(sys.argv[2]), workers=1, progress=False)
summary = label(Path(sys.argv[2]), LabelConfig(size=64, audio_model="logmel"), workers=1, progress=False)
print(summary.shards_written, torch.get_num_threads())
"""


def test_label_leaves_the_callers_torch_threads_as_they_were(videos, tmp_path):
    """label() caps torch's threads for its audio model in its loader thread, and torch keeps that
    count process-wide for every thread that has not run torch work yet: a caller that set 1 thread
    and then trained (bench_learn) ran its matrix products on label's count instead (two such runs
    on 2 cores went 3-5x slower). label() puts the caller's count back. A fresh process, since
    this one's main thread has long fixed its count."""
    caller = (os.cpu_count() or 1) + 3  # a count label() would never choose itself
    probe = [sys.executable, "-c", _THREADS_PROBE, str(videos / "speaker_d_25fps_410x412.mp4")]
    r = subprocess.run(
        [*probe, str(tmp_path / "ds"), str(caller)],
        capture_output=True,
        text=True,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.split()[-2:] == ["1", str(caller)]


def test_workers_get_the_longest_window_of_a_shard_first():
    from emokit.data.label import work_order

    def win(a: float, b: float) -> dict:
        return {"start_s": a, "end_s": b}

    groups = {3: [win(0, 10), win(10, 21.7), win(21.7, 30), win(30, 40)], 5: [win(0, 4), win(4, 12)]}
    order = [(k, j) for k, j, _ in work_order(groups, [3, 5])]
    # 11.7, then the two 10 s windows in manifest order, then 8.3; shard 5 after shard 3
    assert order == [(3, 1), (3, 0), (3, 3), (3, 2), (5, 1), (5, 0)]
    assert [w for _, _, w in work_order(groups, [5])] == [groups[5][1], groups[5][0]]
