"""emokit.data.audio on the real recordings in shared/data."""

from __future__ import annotations

import struct
import subprocess
import wave
from fractions import Fraction
from pathlib import Path

import av
import imageio_ffmpeg
import numpy as np
import pytest

from emokit.data.audio import AudioError, load_audio


def _wav_pcm(path: Path) -> tuple[np.ndarray, int]:
    """Reference reader: [channels, samples] floats from a PCM s16/s24 (extensible) RIFF file."""
    data = path.read_bytes()
    pos, fmt, pcm = 12, None, None
    while pos + 8 <= len(data):
        cid, size = data[pos : pos + 4], struct.unpack("<I", data[pos + 4 : pos + 8])[0]
        body = data[pos + 8 : pos + 8 + size]
        if cid == b"fmt ":
            fmt = struct.unpack("<HHIIHH", body[:16])
        elif cid == b"data":
            pcm = body
        pos += 8 + size + (size & 1)
    _tag, channels, rate, _br, _align, bits = fmt
    if bits == 16:
        x = np.frombuffer(pcm, "<i2").astype(np.float64) / 32768
    else:
        b = np.frombuffer(pcm, np.uint8).reshape(-1, 3).astype(np.int32)
        x = ((b[:, 0] << 8 | b[:, 1] << 16 | b[:, 2] << 24) >> 8).astype(np.float64) / 2**23
    return x.reshape(-1, channels).T, rate


def _ffmpeg_f32(path: Path) -> np.ndarray:
    """Reference decoder: the ffmpeg CLI's float output at the native rate, [channels, samples]."""
    with av.open(str(path)) as c:
        ch = c.streams.audio[0].channels
    raw = subprocess.run(
        [imageio_ffmpeg.get_ffmpeg_exe(), "-v", "error", "-i", str(path), "-f", "f32le", "-"],
        capture_output=True,
        check=True,
    ).stdout
    return np.frombuffer(raw, "<f4").reshape(-1, ch).T


def _lag(a: np.ndarray, b: np.ndarray, max_lag: int = 20) -> int:
    """Shift of b against a with the best match (0 = aligned)."""
    n = min(len(a), len(b)) - 2 * max_lag
    scores = [
        np.dot(a[max_lag : max_lag + n], b[max_lag + s : max_lag + s + n])
        for s in range(-max_lag, max_lag + 1)
    ]
    return int(np.argmax(scores)) - max_lag


def test_16k_mono_wav_is_bit_exact(audio_dir: Path) -> None:
    path = audio_dir / "speech_60s_16k_mono.wav"
    with wave.open(str(path)) as w:
        ref = np.frombuffer(w.readframes(w.getnframes()), "<i2").astype(np.float32) / 32768
    x = load_audio(path)
    assert x.dtype == np.float32 and x.shape == (960000,)
    np.testing.assert_array_equal(x, ref)
    np.testing.assert_array_equal(load_audio(path, 12.34, 13.5), ref[197440:216000])


def test_two_speaker_stereo_is_the_channel_average(audio_dir: Path) -> None:
    path = audio_dir / "speech_two_speakers_lr_16k.wav"
    ref, rate = _wav_pcm(path)
    assert rate == 16000 and ref.shape[0] == 2
    np.testing.assert_allclose(load_audio(path), ref.mean(axis=0), atol=1e-7)


def test_24bit_extensible_wav(audio_dir: Path) -> None:
    path = audio_dir / "singing_6s_48k_24bit.wav"  # s24le, 48 kHz, stereo, WAVE_FORMAT_EXTENSIBLE
    ref, rate = _wav_pcm(path)
    assert rate == 48000
    native = load_audio(path, sr=48000)
    np.testing.assert_allclose(native, ref.mean(axis=0), atol=1e-6)
    x = load_audio(path)
    assert len(x) == round(ref.shape[1] / 3)
    assert _lag(native[::3], x) == 0  # resampling adds no delay
    assert np.corrcoef(native[::3][1000:-1000], x[1000:-1000])[0, 1] > 0.98


def test_24bit_flac_and_44k_stereo_match_the_ffmpeg_cli(audio_dir: Path) -> None:
    for name, seconds in [("speech_en_11s_44k_24bit.flac", 11.0), ("speech_15s_44k_stereo.wav", 15.0)]:
        ref = _ffmpeg_f32(audio_dir / name).mean(axis=0)
        native = load_audio(audio_dir / name, sr=44100)
        np.testing.assert_allclose(native, ref, atol=1e-6)
        x = load_audio(audio_dir / name)
        assert len(x) == round(seconds * 16000)
        assert _lag(ref[::441][:1600], x[::160][:1600], 3) == 0


@pytest.mark.parametrize(
    ("folder", "name", "atol"),
    [
        ("videos", "scene_cuts_multiface_2997fps.mp4", 0),  # AAC in mp4, A/V start apart
        # AAC as stream 0. Its decoder's noise substitution (PNS) draws from a random state that
        # depends on where decoding began, so a few noise bands differ slightly after a seek.
        ("videos", "speaker_d_25fps_410x412.mp4", 0.01),
        ("audio", "speech_en_11s_44k_24bit.flac", 0),
        ("audio", "singing_6s_48k_24bit.wav", 0),
    ],
)
def test_a_seeked_window_equals_the_same_span_of_a_full_decode(shared_data: Path, folder, name, atol) -> None:
    path = shared_data / folder / name
    full = load_audio(path)
    for start, end in [(0.3, 1.3), (2.5, 3.25), (4.0, 5.5)]:
        w = load_audio(path, start, end)
        ref = full[round(start * 16000) : round(end * 16000)]
        assert len(w) == len(ref) == round((end - start) * 16000)
        np.testing.assert_allclose(w, ref, rtol=0, atol=atol)
        assert np.mean(w != ref) < 0.05  # sample-aligned: a shifted window would differ everywhere


def test_mp4_audio_on_the_container_clock(videos: Path) -> None:
    path = videos / "scene_cuts_multiface_2997fps.mp4"
    with av.open(str(path)) as c:
        a = c.streams.audio[0]
        origin = c.start_time / 1e6
        audio_start = float(a.start_time * a.time_base) - origin
        audio_end = float((a.start_time + a.duration) * a.time_base) - origin
    assert abs(audio_start) < 1e-6  # the audio opens the container; the video starts 0.844 s later
    full = load_audio(path)
    assert abs(len(full) / 16000 - audio_end) < 1 / 16000 * 2
    assert np.abs(full[:800]).max() > 0  # no invented lead-in silence
    # A window past the audio's end is padded to its exact length.
    tail = load_audio(path, audio_end - 0.5, audio_end + 0.5)
    assert len(tail) == 16000 and np.abs(tail[8002:]).max() == 0 and np.abs(tail[:7990]).max() > 0


def _tone_mp4(path: Path, audio_start_s: float) -> None:
    """2 s of video from t=0 and a 440 Hz tone whose stream starts at audio_start_s."""
    with av.open(str(path), "w") as out:
        v = out.add_stream("libx264", rate=30)
        v.width, v.height, v.pix_fmt = 64, 64, "yuv420p"
        a = out.add_stream("aac", rate=16000, layout="mono")
        a.time_base = Fraction(1, 16000)
        for i in range(60):
            out.mux(v.encode(av.VideoFrame.from_ndarray(np.full((64, 64, 3), 4 * i, np.uint8))))
        out.mux(v.encode(None))
        t = np.arange(16000) / 16000
        f = av.AudioFrame.from_ndarray(
            (0.5 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)[None], format="fltp", layout="mono"
        )
        f.sample_rate, f.pts, f.time_base = 16000, round(audio_start_s * 16000), Fraction(1, 16000)
        out.mux(a.encode(f))
        out.mux(a.encode(None))


def test_audio_starting_late_is_padded_not_shifted(tmp_path: Path) -> None:
    _tone_mp4(tmp_path / "late.mp4", 0.5)
    x = load_audio(tmp_path / "late.mp4", 0.0, 2.0)
    assert len(x) == 32000
    energy = np.array([np.abs(x[i : i + 800]).max() for i in range(0, 32000, 800)])  # 50 ms bins
    assert energy[:9].max() < 0.01  # silence before 0.45 s
    assert energy[11:29].min() > 0.3  # the tone from 0.55 s to 1.45 s
    assert energy[31:].max() < 0.01  # and silence after it ends at 1.5 s


def test_errors_are_one_line_audio_errors(videos: Path, audio_dir: Path, tmp_path: Path) -> None:
    cases = [
        (lambda: load_audio(videos / "talking_no_audio_30fps_720x1280.mp4"), "no audio stream"),
        (lambda: load_audio(tmp_path / "missing.wav"), "no such file"),
        (
            lambda: load_audio(audio_dir / "speech_en_11s_44k_24bit.flac", 20.0, 21.0),
            "no audio in the window",
        ),
        (lambda: load_audio(audio_dir / "speech_en_11s_44k_24bit.flac", 2.0, 2.0), "empty"),
    ]
    (tmp_path / "junk.wav").write_bytes(b"RIFF\x00\x00\x00\x00WAVEjunk" * 50)
    cases.append((lambda: load_audio(tmp_path / "junk.wav"), "junk.wav"))
    for call, text in cases:
        with pytest.raises(AudioError, match=text) as err:
            call()
        assert "\n" not in str(err.value)
