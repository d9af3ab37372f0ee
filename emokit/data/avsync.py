"""Audio-visual sync of a talking-head clip without a lip-sync network: mouth motion vs speech.

Why: dubbed, voice-over and offset clips must not train the audio layers as if the voice moved the
mouth. With no SyncNet weights at hand, the only evidence is whether the mouth moves when the
speech does.

Method (``av_method = "mouth_motion"``): the per-frame velocity of the mouth opening
(emokit.data.mouth) against the per-frame derivative of the speech envelope (RMS of the 300–3000 Hz
band, where formant energy of voiced speech sits, in a two-frame window around each frame),
Pearson-correlated at every lag of ±``MAX_LAG`` frames. Velocities rather than levels: the obvious
levels (opening vs log band energy) found the wrong lag on most shared clips, because slow changes
in loudness and a mouth held half open dominate both. The peak within ±``MAX_LAG`` gives the lag.
The confidence is a z-score of that peak against the correlations at all the alignments that
cannot be right (circular lags beyond ±``MAX_LAG``): how far the best plausible alignment stands
out from chance for this clip's own signals — the same idea as SyncNet's "median − min distance",
made comparable across clips whose signals correlate more or less overall. A maximum of 31
chance-level values is itself about 2 σ above their mean, so another speaker's audio scores ~2.

Measured on the shared talking clips (benchmarks/bench_avsync.py, BENCHMARKS.md): the peak follows
a known shift of the audio exactly in most clips, but the absolute lag of an unmoved clip varies by
a few frames between speakers (the mouth opens before the sound; by how much depends on the
speaker), so the offset is stored only above ``OFFSET_CONFIDENCE``; the sync confidence is always
stored. Another speaker's audio and a still face give a low confidence → ``no_lipsync``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.signal import butter, sosfiltfilt

from emokit.data.mouth import STILL_STD

METHOD = "mouth_motion"
BAND_HZ = (300.0, 3000.0)
MAX_LAG = 15  # frames each way (0.5 s at 30 FPS)
# Measured on the shared clips: the velocity curves peak with the audio this many frames late on
# unmoved real footage (the lips move before the sound); subtracted so an in-sync clip reads 0.
LEAD_FRAMES = 2
# Store the offset only at or above this confidence (z units). On the shared clips no threshold
# separated right from wrong absolute lags (a lag 3 frames off and a right one both at 5.17, see
# BENCHMARKS.md), so it sits above every confidence measured there: in practice this method stores
# the confidence alone, and offsets come from SyncNet (--syncnet).
OFFSET_CONFIDENCE = 6.0
NO_LIPSYNC_CONFIDENCE = 3.0  # below this, the mouth does not follow the speech
OFFSET_FLAG_FRAMES = 2  # av_offset: a stored offset beyond ±2 frames
STILL_MOUTH_STD = STILL_STD
SILENT_RMS = 1e-3  # band RMS (full scale 1) below which a clip has no speech to sync to

__all__ = ["AVSync", "lag_curve", "mouth_audio_sync", "speech_envelope"]


@dataclass(frozen=True)
class AVSync:
    """A clip's sync label: offset in frames (audio late positive; None when not reliable), the
    confidence (None when there is nothing to measure: no face or no speech), method and flags."""

    offset_frames: int | None
    confidence: float | None
    method: str
    flags: tuple[str, ...] = ()
    lag_frames: int | None = None  # the raw peak lag (bias-corrected), stored or not

    def row(self) -> dict:
        """The shard columns of this label."""
        return dict(
            av_offset_frames=self.offset_frames, av_sync_confidence=self.confidence, av_method=self.method
        )


def speech_envelope(audio: np.ndarray, frames: int, fps: float = 30, sr: int = 16000) -> np.ndarray:
    """RMS of the 300–3000 Hz band per video frame [frames], over two frame intervals centred on
    each frame's midpoint."""
    audio = np.asarray(audio, dtype=np.float64)
    if len(audio) < 64:
        return np.zeros(frames)
    sos = butter(4, BAND_HZ, btype="band", fs=sr, output="sos")
    x = sosfiltfilt(sos, audio) ** 2
    csum = np.concatenate([[0.0], np.cumsum(x)])
    hop = sr / fps
    mid = (np.arange(frames) + 0.5) * hop
    lo = np.clip((mid - hop).astype(np.int64), 0, len(x))
    hi = np.clip((mid + hop).astype(np.int64), 0, len(x))
    n = np.maximum(hi - lo, 1)
    return np.sqrt((csum[hi] - csum[lo]) / n)


def _zscore(x: np.ndarray) -> np.ndarray:
    x = x - x.mean()
    sd = x.std()
    return x / sd if sd > 0 else x


def lag_curve(video: np.ndarray, audio: np.ndarray) -> np.ndarray:
    """Circular Pearson correlation r[k] = mean_t z(video)[t] · z(audio)[t + k], every k in 0..n-1
    (index -k for negative lags). Circular so that every lag uses all frames; the far lags are
    the null distribution of the confidence."""
    v, a = _zscore(np.asarray(video, np.float64)), _zscore(np.asarray(audio, np.float64))
    n = len(v)
    return np.fft.irfft(np.conj(np.fft.rfft(v)) * np.fft.rfft(a), n) / n


def mouth_audio_sync(mouth: np.ndarray, audio: np.ndarray | None, fps: float = 30, sr: int = 16000) -> AVSync:
    """The sync label of one clip from its per-frame mouth opening (NaN: no face) and its audio."""
    mouth = np.asarray(mouth, dtype=np.float64)
    found = np.isfinite(mouth)
    if audio is None or found.mean() < 0.5 or len(mouth) < 4 * MAX_LAG:
        return AVSync(None, None, METHOD)
    t = np.arange(len(mouth))
    mouth = np.interp(t, t[found], mouth[found])
    env = speech_envelope(audio, len(mouth), fps, sr)
    if np.percentile(env, 90) < SILENT_RMS:
        return AVSync(None, None, METHOD)  # no speech: nothing to be in sync with
    if mouth.std() < STILL_MOUTH_STD:
        return AVSync(None, 0.0, METHOD, ("no_lipsync",))  # speech over a mouth that never moves
    r = lag_curve(np.gradient(mouth), np.gradient(env))
    n = len(r)
    near = r[np.arange(-MAX_LAG, MAX_LAG + 1) % n]
    far = r[MAX_LAG + 1 : n - MAX_LAG]  # alignments at least half a second off: chance level
    if far.std() == 0:
        return AVSync(None, 0.0, METHOD, ("no_lipsync",))
    confidence = float((near.max() - far.mean()) / far.std())
    lag = int(np.argmax(near)) - MAX_LAG - LEAD_FRAMES
    flags: list[str] = []
    offset = lag if confidence >= OFFSET_CONFIDENCE else None
    if confidence < NO_LIPSYNC_CONFIDENCE:
        flags.append("no_lipsync")
    elif offset is not None and abs(offset) > OFFSET_FLAG_FRAMES:
        flags.append("av_offset")
    return AVSync(offset, confidence, METHOD, tuple(flags), lag)
