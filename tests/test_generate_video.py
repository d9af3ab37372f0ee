"""Generator end to end on real media with a tiny model trained through the real pipeline.

The run is built once per session: `emokit ingest` + `emokit label` (tiny random wav2vec saved by
save_tiny_wav2vec, 64 px crops) on a real talking-head clip, then `emokit train` stages 1-3 for two
steps each on the tiny preset. Generation runs at 64 px with 1-2 DDIM steps so the 60 s case stays
fast; what is checked is the video contract (codecs, 30 FPS, length, audio, determinism, call
counts), not picture quality.
"""

from __future__ import annotations

import contextlib
import math
import wave
from collections.abc import Iterator
from pathlib import Path

import av
import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from emokit.cli import app
from emokit.data.audio import load_audio
from emokit.data.wav2vec import save_tiny_wav2vec
from emokit.generate.generator import GenerateError, Generator, GenerationResult, Speech
from emokit.generate.portrait import load_portrait
from emokit.generate.sampler import SamplerError

SIZE = 64


def _invoke(*args: str) -> None:
    result = CliRunner().invoke(app, [str(a) for a in args])
    assert result.exit_code == 0, result.output


def build_tiny_run(tmp_path_factory: pytest.TempPathFactory, videos: Path) -> tuple[Path, Path]:
    """(run dir, wav2vec dir) — built once per test session, reused by every generate test."""
    root = tmp_path_factory.getbasetemp() / "generate_tiny_run"
    run, w2v = root / "run", root / "w2v"
    if (run / "stage3" / "final").is_dir():
        return run, w2v
    save_tiny_wav2vec(w2v)
    ds = root / "ds"
    _invoke("ingest", videos / "speaker_c_25fps_512.mp4", "-o", ds, "-w", "1", "-q")
    _invoke("label", ds, "--size", SIZE, "--audio-model", w2v, "-w", "1", "-q")
    for stage in (1, 2, 3):
        _invoke(
            "train",
            ds,
            "--stage",
            stage,
            "-o",
            run,
            "--preset",
            "tiny",
            "--max-steps",
            2,
            "--checkpoint-every",
            2,
            "--lr",
            "1e-3",
            "-w",
            0,
            "-q",
        )
    return run, w2v


@contextlib.contextmanager
def one_torch_thread() -> Iterator[None]:
    """The tiny model's ops are far too small for intra-op threads; on a loaded 2-core machine
    OpenMP barriers then spin for seconds (a 240-frame run: 4 s on 1 thread, 48 s on 2). Entered
    after the run is built (in-process `emokit label` sets torch's thread count itself)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@pytest.fixture(scope="module")
def generator(tmp_path_factory, videos) -> Iterator[Generator]:
    run, w2v = build_tiny_run(tmp_path_factory, videos)
    with one_torch_thread():
        yield Generator(run, "cpu", w2v, progress=False)


def short_wav(src: Path, seconds: float, dest: Path) -> Path:
    """The first ``seconds`` of a real recording as 16 kHz mono PCM (a short, real speech input)."""
    x = load_audio(src, 0.0, seconds)
    with wave.open(str(dest), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(16000)
        w.writeframes((np.clip(x, -1, 1) * 32767).astype("<i2").tobytes())
    return dest


def _probe(path: Path) -> dict:
    with av.open(str(path)) as c:
        v, a = c.streams.video[0], c.streams.audio[0]
        info = {
            "vcodec": v.codec_context.name,
            "acodec": a.codec_context.name,
            "rate": v.average_rate,
            "size": (v.width, v.height),
            "pix_fmt": v.codec_context.pix_fmt,
        }
        info["frames"] = sum(1 for _ in c.decode(video=0))
        c.seek(0)
        samples = sum(f.samples for f in c.decode(audio=0))
        info["audio_s"] = samples / a.rate
    return info


def _source_seconds(path: Path) -> float:
    with av.open(str(path)) as c:
        s = c.streams.audio[0]
        return float(s.duration * s.time_base) if s.duration else c.duration / 1e6


def _frames(path: Path) -> np.ndarray:
    with av.open(str(path)) as c:
        return np.stack([f.to_ndarray(format="rgb24") for f in c.decode(video=0)])


@pytest.mark.parametrize(
    ("name", "steps"),
    [("speech_en_8s_16k_stereo.wav", 2), ("speech_en_11s_44k_24bit.flac", 2), ("speech_60s_16k_mono.wav", 1)],
)
def test_video_as_long_as_the_audio(generator, portraits, audio_dir, tmp_path, name, steps):
    out = tmp_path / "out.mp4"
    r = generator(portraits / "woman_frontal.jpg", audio_dir / name, out, steps=steps, size=SIZE)
    assert isinstance(r, GenerationResult)
    seconds = _source_seconds(audio_dir / name)
    expected = math.ceil(seconds * 30)
    info = _probe(out)
    assert (info["vcodec"], info["acodec"], info["pix_fmt"]) == ("h264", "aac", "yuv420p")
    assert info["rate"] == 30 and info["size"] == (SIZE, SIZE)
    assert abs(info["frames"] - expected) <= 1 and r.frames == info["frames"]
    assert r.clips == math.ceil(r.frames / generator.frames)
    # the muxed audio is the input's, cut/padded to the video: same length within AAC framing
    assert abs(info["audio_s"] - r.frames / 30) < 0.05
    assert abs(r.audio_seconds - seconds) < 0.05
    src, got = load_audio(audio_dir / name), load_audio(out)
    n = min(len(src), len(got))
    assert np.corrcoef(src[:n], got[:n])[0, 1] > 0.9  # it is the input's sound, in sync
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.mp4"]  # no temp files left


@pytest.mark.crossrun
def test_seed_decides_the_frames(generator, portraits, audio_dir, tmp_path):
    speech = Speech.load(short_wav(audio_dir / "speech_en_8s_16k_stereo.wav", 1.0, tmp_path / "a.wav"))
    face = load_portrait(portraits / "man_frontal.jpg", size=SIZE)
    runs = {
        tag: np.stack(list(generator.render(face, speech, steps=2, seed=seed))).astype(np.int16)
        for tag, seed in (("a", 7), ("b", 7), ("c", 8))
    }
    assert runs["a"].shape == (30, SIZE, SIZE, 3)
    assert np.array_equal(runs["a"], runs["b"])  # bit-identical frames
    assert np.abs(runs["a"] - runs["c"]).mean() > 1.0
    # Through the mp4 as well (compared with a tolerance: x264 may not be bit-reproducible).
    for tag in ("a", "b"):
        generator(face, speech, tmp_path / f"{tag}.mp4", steps=2, seed=7)
    a, b = _frames(tmp_path / "a.mp4").astype(np.int16), _frames(tmp_path / "b.mp4").astype(np.int16)
    # the mp4 holds the rendered frames (lossy: the untrained model's output is noise-like)
    assert np.abs(a - runs["a"]).mean() < 0.5 * np.abs(a - runs["c"]).mean()
    assert np.abs(a - b).mean() < 0.5


def test_reference_net_once_per_video_and_per_clip_never_per_step(generator, portraits, audio_dir, tmp_path):
    audio = short_wav(audio_dir / "speech_two_speakers_lr_16k.wav", 1.0, tmp_path / "a.wav")
    calls: list[int] = []
    denoiser_batches: list[int] = []
    hooks = [
        generator.model.reference_net.register_forward_hook(lambda m, a, o: calls.append(a[0].shape[0])),
        generator.model.backbone.register_forward_hook(
            lambda m, a, o: denoiser_batches.append(a[0].shape[0])
        ),
    ]
    try:
        r = generator(
            portraits / "woman_slight_turn.png", audio, tmp_path / "o.mp4", steps=3, cfg=2.0, size=SIZE
        )
    finally:
        for h in hooks:
            h.remove()
    n, f = generator.motion_frames, generator.frames
    assert r.clips == 3
    # portrait once (batch 1), then the n motion frames once per clip (batch n)
    assert calls == [1] + [n] * r.clips
    # one backbone call per step, cond + uncond batched: 2 clips' worth of frames per call
    assert denoiser_batches == [2 * f] * (3 * r.clips)


def test_cfg_one_runs_a_single_branch(generator, portraits, tmp_path, audio_dir):
    speech = Speech.load(short_wav(audio_dir / "singing_6s_48k_24bit.wav", 0.5, tmp_path / "a.wav"))
    assert speech.frames == 15
    batches: list[int] = []
    h = generator.model.backbone.register_forward_hook(lambda m, a, o: batches.append(a[0].shape[0]))
    try:
        r = generator(
            portraits / "woman_frontal.jpg", speech, tmp_path / "o.mp4", steps=2, cfg=1.0, size=SIZE
        )
    finally:
        h.remove()
    assert r.frames == 15 and r.clips == 2
    assert batches == [generator.frames] * 4


@pytest.mark.parametrize("guidance", ["both", "audio"])
def test_guidance_drops_what_it_names_in_the_unconditional_half(
    generator, portraits, tmp_path, audio_dir, guidance
):
    speech = Speech.load(short_wav(audio_dir / "singing_6s_48k_24bit.wav", 0.3, tmp_path / "a.wav"))
    seen: list[tuple[list[bool], list[bool]]] = []
    forward = generator.model.forward

    def spy(*args, drop_reference, drop_audio, **kw):
        seen.append((drop_reference.tolist(), drop_audio.tolist()))
        return forward(*args, drop_reference=drop_reference, drop_audio=drop_audio, **kw)

    generator.model.forward = spy
    try:
        generator(
            portraits / "woman_frontal.jpg",
            speech,
            tmp_path / "o.mp4",
            steps=1,
            cfg=3.0,
            size=SIZE,
            guidance=guidance,
        )
    finally:
        del generator.model.forward
    assert seen and all(audio == [False, True] for _, audio in seen)
    assert all(ref == ([False, True] if guidance == "both" else [False, False]) for ref, _ in seen)
    with pytest.raises(GenerateError, match="guidance must be one of"):
        list(
            generator.render(
                load_portrait(portraits / "woman_frontal.jpg", size=SIZE), speech, guidance="ref"
            )
        )


def test_audio_model_must_match_the_checkpoint(generator):
    from emokit.models import EMOConfig, EMOModel

    model = EMOModel(EMOConfig.tiny())  # expects 2 x 16 audio features; the tiny wav2vec gives 2 x 32
    with pytest.raises(
        GenerateError,
        match="the audio model gives 2 layers x 32 features per frame but the checkpoint expects 2 x 16",
    ):
        Generator.from_parts(model, generator.alphas_cumprod, generator.encoder)
    with pytest.raises(SamplerError, match="spacing"):
        Generator.from_parts(
            generator.model, generator.alphas_cumprod, generator.encoder, timestep_spacing="linspace"
        )
