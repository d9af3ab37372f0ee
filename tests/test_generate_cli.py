"""`emokit generate` on the real portraits: every kind of image works; bad inputs fail cleanly.

Uses the tiny run trained once per session in test_generate_video (ingest → label → train).
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path

import av
import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from emokit.cli import app
from test_generate_video import SIZE, build_tiny_run, one_torch_thread, short_wav

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def setup(tmp_path_factory, videos, audio_dir):
    run, w2v = build_tiny_run(tmp_path_factory, videos)
    audio = short_wav(
        audio_dir / "speech_en_8s_16k_stereo.wav", 0.5, tmp_path_factory.mktemp("audio") / "half_second.wav"
    )
    with one_torch_thread():
        yield run, w2v, audio


def _generate(setup, portrait: Path, out: Path, *extra: str, audio: Path | None = None):
    run, w2v, half_second = setup
    args = [
        "generate",
        str(portrait),
        str(audio or half_second),
        "--checkpoint",
        str(run),
        "-o",
        str(out),
        "--steps",
        "1",
        "--size",
        str(SIZE),
        "--audio-model",
        str(w2v),
        "--device",
        "cpu",
        "-q",
        *extra,
    ]
    return CliRunner().invoke(app, args)


def _frame_count(path: Path) -> int:
    with av.open(str(path)) as c:
        assert c.streams.audio[0].codec_context.name == "aac"
        return sum(1 for _ in c.decode(video=0))


def test_every_kind_of_portrait(setup, portraits, tmp_path, caplog):
    Image.open(portraits / "woman_bw_head_tilt.jpg").convert("L").save(tmp_path / "grey.jpg")
    cases = {
        "rgba": portraits / "man_three_quarter_turn.png",
        "grey": tmp_path / "grey.jpg",
        "huge": portraits / "man_frontal_3511px.jpg",
        "two": portraits / "two_people.jpg",
        "edge": portraits / "partial_face_at_edge.jpg",
    }
    for tag, portrait in cases.items():
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="emokit.generate.portrait"):
            r = _generate(setup, portrait, tmp_path / f"{tag}.mp4", "--seed", "3")
        assert r.exit_code == 0, (tag, r.output)
        assert f"{tmp_path / tag}.mp4: 15 frames at 30 FPS" in r.stdout
        assert _frame_count(tmp_path / f"{tag}.mp4") == 15
        warned = [rec.getMessage() for rec in caplog.records if rec.name.endswith("portrait")]
        if tag == "two":
            assert warned == ["2 faces found in two_people.jpg; using the largest"]
        else:
            assert not any("faces found" in w for w in warned), tag


def test_flags_reach_the_generator(setup, portraits, tmp_path):
    runs = {"slow": ("--speed", "0.0"), "fast": ("--speed", "4.0")}
    frames = {}
    for name, extra in runs.items():
        r = _generate(
            setup,
            portraits / "woman_frontal.jpg",
            tmp_path / f"{name}.mp4",
            "--seed",
            "1",
            "--cfg",
            "2.5",
            *extra,
        )
        assert r.exit_code == 0, r.output
        assert "64x64, 2 clips x 1 steps, cfg 2.5, seed 1" in r.stdout
        with av.open(str(tmp_path / f"{name}.mp4")) as c:
            frames[name] = np.stack([f.to_ndarray(format="rgb24") for f in c.decode(video=0)])
    diff = np.abs(frames["slow"].astype(int) - frames["fast"]).mean()
    assert diff > 0.5  # the speed layers see --speed


def test_speed_without_stage_3_is_an_error(setup, portraits, tmp_path):
    """--speed on a run that never trained its speed layers (no stage 3) stops with one line
    before any work; without --speed the same run generates (speed layers left out)."""
    import shutil

    run, w2v, half_second = setup
    two = tmp_path / "run_stage2"
    for stage in ("stage1", "stage2"):
        shutil.copytree(run / stage, two / stage)
    r = _generate(
        (two, w2v, half_second), portraits / "woman_frontal.jpg", tmp_path / "s.mp4", "--speed", "1"
    )
    assert r.exit_code == 2
    assert "--speed needs a run trained through stage 3" in r.output and "ends at stage 2" in r.output
    assert not (tmp_path / "s.mp4").exists()
    r = _generate((two, w2v, half_second), portraits / "woman_frontal.jpg", tmp_path / "ok.mp4")
    assert r.exit_code == 0, r.output
    assert _frame_count(tmp_path / "ok.mp4") == 15


def test_default_size_is_the_checkpoints(setup, portraits, tmp_path):
    run, w2v, half_second = setup
    out = tmp_path / "native.mp4"
    r = CliRunner().invoke(
        app,
        [
            "generate",
            str(portraits / "woman_frontal.jpg"),
            str(half_second),
            "--checkpoint",
            str(run),
            "-o",
            str(out),
            "--steps",
            "1",
            "--audio-model",
            str(w2v),
            "--device",
            "cpu",
            "-q",
        ],
    )
    assert r.exit_code == 0, r.output
    with av.open(str(out)) as c:
        assert (c.streams.video[0].width, c.streams.video[0].height) == (SIZE, SIZE)


def _assert_clean_failure(r, message: str, out_dir: Path) -> None:
    assert r.exit_code == 1
    # One line from emokit (transformers may draw its own "Loading weights" bar before it).
    lines = [line for line in r.stderr.strip().splitlines() if not line.startswith("Loading weights")]
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], r.stderr
    assert list(out_dir.iterdir()) == []  # nothing written, not even a temp file


def test_no_face_fails_with_one_line(setup, portraits, videos, tmp_path):
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    Image.open(portraits / "man_frontal_3511px.jpg").crop((0, 0, 800, 800)).save(tmp_path / "bg.jpg")
    r = _generate(setup, tmp_path / "bg.jpg", out_dir / "x.mp4")
    _assert_clean_failure(r, "no face found in portrait", out_dir)
    with av.open(str(videos / "no_face_slides_30fps_1080p.mp4")) as c:
        c.seek(60 * 1_000_000)
        Image.fromarray(next(c.decode(video=0)).to_ndarray(format="rgb24")).save(tmp_path / "slide.png")
    r = _generate(setup, tmp_path / "slide.png", out_dir / "x.mp4")
    _assert_clean_failure(r, "no face found in portrait", out_dir)


def test_bad_audio_and_checkpoint_fail_with_one_line(setup, portraits, videos, tmp_path):
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    face = portraits / "woman_frontal.jpg"
    r = _generate(setup, face, out_dir / "x.mp4", audio=videos / "talking_no_audio_30fps_720x1280.mp4")
    _assert_clean_failure(r, "talking_no_audio_30fps_720x1280.mp4: no audio stream", out_dir)
    run, w2v, audio = setup
    r = CliRunner().invoke(
        app,
        [
            "generate",
            str(face),
            str(audio),
            "--checkpoint",
            str(tmp_path / "no_run"),
            "-o",
            str(out_dir / "x.mp4"),
            "--audio-model",
            str(w2v),
            "-q",
        ],
    )
    _assert_clean_failure(r, "checkpoint not found", out_dir)
    r = _generate(setup, face, out_dir / "x.mp4", "--size", "72")  # not a multiple of 16
    _assert_clean_failure(r, "size must be a positive multiple of 16", out_dir)


def test_installed_command_exit_code(setup, portraits, videos, tmp_path):
    """The real process: non-zero exit, the reason as the last stderr line, no output file."""
    run, w2v, _ = setup
    out = tmp_path / "x.mp4"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "emokit",
            "generate",
            str(portraits / "woman_frontal.jpg"),
            str(videos / "talking_no_audio_30fps_720x1280.mp4"),
            "--checkpoint",
            str(run),
            "-o",
            str(out),
            "--audio-model",
            str(w2v),
            "-q",
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
        timeout=120,
    )
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines()[-1] == (
        "error: talking_no_audio_30fps_720x1280.mp4: no audio stream"
    )
    assert not out.exists() and list(tmp_path.iterdir()) == []
