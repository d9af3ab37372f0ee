"""Sample media for the demo and the example manifest: the shared real media when present, else a
clip built from what installed packages ship (scikit-image's astronaut photo + synthesised voice)."""

from __future__ import annotations

import math
from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
DEMO_VIDEOS = [
    "speaker_c_25fps_512.mp4",
    "speaker_d_25fps_410x412.mp4",
    "speaker_vfr_700.mp4",
    "head_turn_25fps_224.mp4",
    "scene_cuts_multiface_2997fps.mp4",
]
DEMO_PORTRAIT = "woman_frontal.jpg"
DEMO_AUDIO = "speech_en_8s_16k_stereo.wav"


def synth_voice(seconds: float, sr: int = 16000, seed: int = 0) -> np.ndarray:
    """A voice-like signal: a gliding harmonic source shaped into syllables (not speech)."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * sr)) / sr
    f0 = 140 + 25 * np.sin(2 * math.pi * 0.7 * t) + 10 * np.sin(2 * math.pi * 3.1 * t)
    phase = 2 * math.pi * np.cumsum(f0) / sr
    voice = sum(np.sin(k * phase) / k for k in range(1, 8))
    syllables = np.clip(np.sin(2 * math.pi * 4.0 * t + rng.uniform(0, 6)), 0, None) ** 0.5
    out = voice * syllables + 0.01 * rng.standard_normal(len(t))
    return (0.3 * out / np.abs(out).max()).astype(np.float32)


def astronaut_video(path: Path, seconds: float = 6.0, fps: int = 25) -> Path:
    """A talking-head-like clip from scikit-image's astronaut photo: small head sway + audio."""
    from skimage import data

    img = data.astronaut()  # 512×512 RGB, a real photo of a face
    h, w = img.shape[:2]
    sr = 16000
    audio = synth_voice(seconds, sr)
    with av.open(str(path), "w") as out:
        vs = out.add_stream("libx264", rate=fps, options={"crf": "20", "preset": "veryfast"})
        vs.width, vs.height, vs.pix_fmt = w, h, "yuv420p"
        aus = out.add_stream("aac", rate=sr, layout="mono")
        for k in range(int(seconds * fps)):
            angle = 4.0 * math.sin(2 * math.pi * k / (fps * 2.5))
            m = cv2.getRotationMatrix2D((w * 0.45, h * 0.3), angle, 1.0)
            m[0, 2] += 6 * math.sin(2 * math.pi * k / (fps * 3.0))
            turned = np.asarray(cv2.warpAffine(img, m, (w, h), borderMode=cv2.BORDER_REFLECT), np.uint8)
            frame = av.VideoFrame.from_ndarray(turned, format="rgb24")
            frame.pts, frame.time_base = k, Fraction(1, fps)
            out.mux(vs.encode(frame))
        out.mux(vs.encode(None))
        chunk = 1024
        for i in range(0, len(audio), chunk):
            a = av.AudioFrame.from_ndarray(audio[None, i : i + chunk], format="flt", layout="mono")
            a.sample_rate, a.pts, a.time_base = sr, i, Fraction(1, sr)
            out.mux(aus.encode(a))
        out.mux(aus.encode(None))
    return path


def sample_inputs(work: Path) -> tuple[list[Path], Path, Path, str]:
    """(videos, portrait, audio, description) for the demo; shared media when present."""
    if (SHARED_DATA / "videos").is_dir():
        videos = [SHARED_DATA / "videos" / n for n in DEMO_VIDEOS]
        portrait = SHARED_DATA / "portraits" / DEMO_PORTRAIT
        audio = SHARED_DATA / "audio" / DEMO_AUDIO
        return videos, portrait, audio, f"shared real media from {SHARED_DATA}"
    work.mkdir(parents=True, exist_ok=True)
    video = astronaut_video(work / "astronaut_talking.mp4")
    from skimage import data

    portrait = work / "astronaut.png"
    cv2.imwrite(str(portrait), cv2.cvtColor(data.astronaut(), cv2.COLOR_RGB2BGR))
    audio_path = work / "voice.wav"
    write_wav(audio_path, synth_voice(8.0), 16000)
    desc = (
        "../shared/data is absent: built a sample from scikit-image's astronaut photo "
        "(a real face) with a synthesised voice-like track"
    )
    return [video], portrait, audio_path, desc


def write_wav(path: Path, audio: np.ndarray, sr: int) -> None:
    import wave

    pcm = (np.clip(audio, -1, 1) * 32767).astype("<i2")
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(sr)
        w.writeframes(pcm.tobytes())
