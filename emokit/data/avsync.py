"""Audio-visual sync of a talking-head clip without a lip-sync network: mouth motion vs speech.

Why: dubbed, voice-over and offset clips must not train the audio layers as if the voice moved the
mouth. With no SyncNet weights at hand, the only evidence is whether the mouth moves when the
speech does.

Method (``av_method = "mouth_motion"``): the clip's mouth features (emokit.data.mouth.MouthTrack:
inner and outer lip gap, mouth-patch change; held frames of a slower source interpolated, not
read as "no motion") against speech features per 30 FPS frame (STFT, 25 ms window, 10 ms hop,
averaged over ±1 hop: the 300–3000 Hz band amplitude, its log power, and the onset strength =
mean positive log-spectral flux over 24 log-spaced bands 100–6000 Hz). Six pairs, each
Pearson-correlated at every circular lag (``PAIRS``: velocities against velocities, the patch
change against onsets and amplitude, the outer gap against log power). Each pair's curve is put in
units of its own chance level (z-score against its lags beyond ±``MAX_LAG``, alignments that
cannot be right) and the six are summed and z-scored again the same way: the pairs share the true
lag while their noise differs, so the sum lifts real talking windows (median confidence 4.0 on the
shared clips, against 3.2 for the best single pair and 3.3 before this method) and leaves another
speaker's audio where chance puts it (~2: a maximum of 31 chance-level values is itself ~2 above
their mean). The peak within ±``MAX_LAG`` gives the lag, its height the confidence.

The offset is stored only where the lag is reliable: the same peak must be found in each third of
the clip (the sum of lag products over that third's frames, within ±``THIRDS_AGREE`` frames of the
whole clip's lag), at a confidence of at least ``OFFSET_CONFIDENCE``. On the shared clips with
moved audio the thirds rule held for every stored offset at any confidence from 3 to 4.5
(benchmarks/bench_avsync.py, BENCHMARKS.md); a chance peak does not repeat in three independent
stretches, while the whole-clip peak alone is off by more than 2
frames in ~40 % of windows (a speaker-dependent lead and chance peaks). The lips lead the sound by
``LEAD_FRAMES`` (the median on unmoved real footage), subtracted so an in-sync clip reads 0.
Another speaker's audio and a still face get a low confidence → ``no_lipsync``; so do ~20 % of
real talking windows whose lips the mesh barely resolves (small faces, hand-waving: see
BENCHMARKS.md), which is why ``no_lipsync`` is not in training's default drop list.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from emokit.data.mouth import STILL_STD

METHOD = "mouth_motion"
BAND_HZ = (300.0, 3000.0)
ONSET_BANDS_HZ = (100.0, 6000.0, 24)
MAX_LAG = 15  # frames each way (0.5 s at 30 FPS)
# Measured on the shared clips: the summed curve peaks with the audio this many frames late on
# unmoved real footage (the lips move before the sound); subtracted so an in-sync clip reads 0.
LEAD_FRAMES = 2
THIRDS_AGREE = 1  # frames: each third's peak must lie this close to the whole clip's for an offset
# ...and the confidence must reach this: a margin above NO_LIPSYNC_CONFIDENCE, so that a chance
# peak of unrelated audio just over that threshold whose thirds agree (1 of 26 other-speaker trials
# in 10 s windows at 3.1, BENCHMARKS.md) stores no offset. On 6 s windows no right offset was lost.
OFFSET_CONFIDENCE = 3.5
# Below this confidence: no_lipsync. Chosen on the shared clips as the 92nd percentile of the
# confidence with another speaker's audio (BENCHMARKS.md; leave-one-speaker-out there).
NO_LIPSYNC_CONFIDENCE = 3.1
OFFSET_FLAG_FRAMES = 2  # av_offset: a stored offset beyond ±2 frames
STILL_MOUTH_STD = STILL_STD
SILENT_RMS = 1e-3  # band RMS (full scale 1) below which a clip has no speech to sync to
# (mouth feature, speech feature): "d" = per-frame derivative. Columns of MouthTrack.series().
PAIRS = (
    ("douter", "dlin"),
    ("dinner", "dlin"),
    ("dpatch", "onset"),
    ("patch", "lin"),
    ("outer", "logpow"),
    ("douter", "donset"),
)

__all__ = ["AVSync", "lag_curve", "mouth_audio_sync", "speech_features"]


@dataclass(frozen=True)
class AVSync:
    """A clip's sync label: offset in frames (audio late positive; None when not reliable), the
    confidence (None when there is nothing to measure: no face or no speech), method and flags."""

    offset_frames: int | None
    confidence: float | None
    method: str
    flags: tuple[str, ...] = ()
    lag_frames: int | None = None  # the raw peak lag (lead-corrected), stored or not

    def row(self) -> dict:
        """The shard columns of this label."""
        return dict(
            av_offset_frames=self.offset_frames, av_sync_confidence=self.confidence, av_method=self.method
        )


def speech_features(
    audio: np.ndarray, frames: int, fps: float = 30, sr: int = 16000
) -> dict[str, np.ndarray]:
    """Per-video-frame speech features [frames] each: ``lin`` (300–3000 Hz band amplitude),
    ``logpow`` (its log power), ``onset`` (positive log-spectral flux), their derivatives ``d*``."""
    audio = np.asarray(audio, dtype=np.float64)
    win, hop = round(0.025 * sr), round(0.010 * sr)
    if len(audio) < 2 * win:
        z = np.zeros(frames)
        return dict(lin=z, logpow=z, onset=z, dlin=z, donset=z)
    f, power = _stft_power(audio, sr, win, hop)
    t = (np.arange(power.shape[1]) * hop + win / 2) / sr
    band = power[(f >= BAND_HZ[0]) & (f <= BAND_HZ[1])].sum(0)
    edges = np.geomspace(ONSET_BANDS_HZ[0], ONSET_BANDS_HZ[1], ONSET_BANDS_HZ[2] + 1)
    bands = np.log(
        np.stack([power[(f >= lo) & (f < hi)].sum(0) for lo, hi in zip(edges[:-1], edges[1:])]) + 1e-8
    )
    onset = np.maximum(np.diff(bands, axis=1, prepend=bands[:, :1]), 0).mean(0)
    at = (np.arange(frames) + 0.5) / fps

    def per_frame(x: np.ndarray) -> np.ndarray:
        return np.interp(at, t, np.convolve(x, np.ones(3) / 3, "same"))

    logpow = np.log(band + 1e-8)
    out = dict(lin=per_frame(np.sqrt(band)), logpow=per_frame(logpow), onset=per_frame(onset))
    out["dlin"], out["donset"] = np.gradient(out["lin"]), np.gradient(out["onset"])
    return out


def _stft_power(audio: np.ndarray, sr: int, win: int, hop: int) -> tuple[np.ndarray, np.ndarray]:
    """Bin frequencies [K] and power [K, T] of a periodic-Hann STFT, segment t starting at t·hop.

    The values of ``scipy.signal.stft(boundary=None, padded=False)`` ('spectrum' scaling), in
    numpy: importing scipy.signal costs every label worker ~1 s of CPU at start."""
    n = 1 + (len(audio) - win) // hop
    w = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(win) / win)
    segments = audio[np.arange(win)[None] + hop * np.arange(n)[:, None]]
    spec = np.fft.rfft(segments * w, axis=1) / w.sum()
    return np.fft.rfftfreq(win, 1 / sr), (np.abs(spec) ** 2).T


def _band_pass(x: np.ndarray, sr: int, order: int = 4) -> np.ndarray:
    """``x`` through a zero-phase order-``order`` Butterworth band-pass over BAND_HZ.

    The magnitude response of ``scipy.signal.butter`` (bilinear transform, pre-warped edges),
    squared as forward-backward filtering squares it, applied in the frequency domain (zero-padded
    to twice the length: no wrap-around); away from the ends it equals ``sosfiltfilt`` to float
    rounding."""
    n = len(x)
    nfft = 1 << int(np.ceil(np.log2(max(2 * n, 2))))
    f = np.fft.rfftfreq(nfft, 1 / sr)
    omega = np.tan(np.pi * np.minimum(f, 0.4999999 * sr) / sr)
    lo, hi = np.tan(np.pi * np.asarray(BAND_HZ) / sr)
    with np.errstate(divide="ignore", invalid="ignore"):
        r = (omega**2 - lo * hi) / (omega * (hi - lo))
        gain = np.where(omega > 0, 1 / (1 + r ** (2 * order)), 0.0)
    return np.fft.irfft(np.fft.rfft(x, nfft) * gain, nfft)[:n]


def _band_rms(audio: np.ndarray, sr: int) -> float:
    x = _band_pass(np.asarray(audio, np.float64), sr)
    hop = max(sr // 30, 1)
    n = len(x) // hop
    return float(np.percentile(np.sqrt((x[: n * hop] ** 2).reshape(n, hop).mean(1)), 90)) if n else 0.0


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


def _fill_holds(mouth: np.ndarray) -> np.ndarray:
    """Rows equal to the previous (a held frame: its true sample is missing) and rows without a face
    → linear interpolation over time, per column; a column with < 2 values stays NaN."""
    F = len(mouth)
    same = np.zeros(F, bool)
    same[1:] = np.all(mouth[1:] == mouth[:-1], axis=1)
    t = np.arange(F)
    out = np.full_like(mouth, np.nan)
    for j in range(mouth.shape[1]):
        ok = np.isfinite(mouth[:, j]) & ~same
        if ok.sum() >= 2:
            out[:, j] = np.interp(t, t[ok], mouth[ok, j])
    return out


def _mouth_features(mouth: np.ndarray) -> dict[str, np.ndarray]:
    filled = _fill_holds(mouth)
    out = dict(inner=filled[:, 0], outer=filled[:, 1], patch=filled[:, 2])
    for k in list(out):
        out["d" + k] = np.gradient(out[k])
    return out


def mouth_audio_sync(mouth: np.ndarray, audio: np.ndarray | None, fps: float = 30, sr: int = 16000) -> AVSync:
    """The sync label of one clip from its mouth features (MouthTrack.series() [F, 3]; a 1-D
    inner-gap series is accepted, with fewer pairs) and its audio."""
    mouth = np.asarray(mouth, dtype=np.float64)
    if mouth.ndim == 1:
        mouth = np.stack([mouth, mouth, np.full_like(mouth, np.nan)], 1)
    found = np.isfinite(mouth[:, 0])
    if audio is None or found.mean() < 0.5 or len(mouth) < 4 * MAX_LAG:
        return AVSync(None, None, METHOD)
    if _band_rms(audio, sr) < SILENT_RMS:
        return AVSync(None, None, METHOD)  # no speech: nothing to be in sync with
    if np.nanstd(mouth[:, 0]) < STILL_MOUTH_STD and np.nanstd(mouth[:, 1]) < STILL_MOUTH_STD:
        return AVSync(None, 0.0, METHOD, ("no_lipsync",))  # speech over a mouth that never moves
    m = _mouth_features(mouth)
    a = speech_features(audio, len(mouth), fps, sr)
    n, lags = len(mouth), np.arange(-MAX_LAG, MAX_LAG + 1)
    bounds = np.linspace(0, n, 4).astype(int)
    total, thirds = np.zeros(n), np.zeros((3, len(lags)))
    for mk, ak in PAIRS:
        if not (np.isfinite(m[mk]).all() and m[mk].std() > 0 and a[ak].std() > 0):
            continue
        r = lag_curve(m[mk], a[ak])
        far = r[MAX_LAG + 1 : n - MAX_LAG]
        if far.std() == 0:
            continue
        total += (r - far.mean()) / far.std()
        v, x = _zscore(m[mk]), _zscore(a[ak])
        prod = v[:, None] * x[(np.arange(n)[:, None] + lags[None]) % n] / (far.std() * n)
        thirds += np.stack([prod[bounds[i] : bounds[i + 1]].sum(0) for i in range(3)])
    far = total[MAX_LAG + 1 : n - MAX_LAG]
    if far.std() == 0:
        return AVSync(None, 0.0, METHOD, ("no_lipsync",))
    near = (total[lags % n] - far.mean()) / far.std()
    k = int(np.argmax(near))
    confidence = float(near[k])
    agree = bool(np.all(np.abs(thirds.argmax(1) - k) <= THIRDS_AGREE))
    lag = k - MAX_LAG - LEAD_FRAMES
    flags: list[str] = []
    offset = None
    if confidence < NO_LIPSYNC_CONFIDENCE:
        flags.append("no_lipsync")
    elif agree and confidence >= OFFSET_CONFIDENCE:
        offset = lag
        if abs(offset) > OFFSET_FLAG_FRAMES:
            flags.append("av_offset")
    return AVSync(offset, confidence, METHOD, tuple(flags), lag)
