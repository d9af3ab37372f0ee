"""Log-mel speech features per video frame: an audio encoder that needs no weights.

Why: EMO drives the mouth with wav2vec features, and the sd15 recipe keeps them. But no weights can
be downloaded here, and a RANDOM wav2vec is a random function of the waveform: on a real talking
clip (speaker_c, 240 frames), a ridge regression from its tokens (±2 frames) to the face-mesh mouth
opening predicts the held-out half of the clip at r = -0.08 to 0.03, i.e. the tokens carry nothing
a small model could learn lip sync from. Log-mel energies of the same audio predict it at r = 0.25
to 0.40 (BENCHMARKS.md, "Learning"). So the CPU recipe (pipelines/learn.toml, ``make demo``)
labels with ``--audio-model logmel``: a fixed, documented signal-processing front end (the input
representation of SyncNet and Wav2Lip), not a learned model.

Tokens are [frames, 2, n_mels] float16, the same layout as wav2vec's [frames, layers, dim]:
layer 0 is the log-mel energy of a 64 ms Hann window centred on the frame's time (k + 0.5) / fps,
layer 1 its change across the neighbouring frames ((L[k+1] - L[k-1]) / 2: onsets, where the mouth
opens). Mel bands are HTK-style triangles, 80-7600 Hz. Both are scaled by fixed constants (no
per-clip statistics), so any slice of a video's tokens equals the same rows of the whole — which is
what ``stream`` relies on to keep memory flat in audio length.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = ["LOGMEL", "LogMelEncoder", "is_logmel"]

LOGMEL = "logmel"  # the --audio-model value that selects this encoder
SAMPLE_RATE = 16000
WINDOW = 1024  # samples (64 ms at 16 kHz): about two 30 FPS frames
N_MELS = 32
F_MIN, F_MAX = 80.0, 7600.0
# log(power + EPS) of speech at normal level spans about -12 .. +4; these map it to roughly [-2, 1.5].
EPS, SHIFT, SCALE = 1e-6, 4.0, 4.0


def is_logmel(model: object) -> bool:
    """True when an --audio-model value names this encoder rather than a wav2vec model."""
    return str(model) == LOGMEL


def _mel(f: np.ndarray) -> np.ndarray:
    return 2595.0 * np.log10(1.0 + f / 700.0)


def _mel_filters(n_mels: int) -> np.ndarray:
    """[n_mels, WINDOW // 2 + 1] triangular filters, peak 1, centres evenly spaced in mel."""
    freqs = np.fft.rfftfreq(WINDOW, 1.0 / SAMPLE_RATE)
    edges = 700.0 * (
        10.0 ** (np.linspace(_mel(np.array(F_MIN)), _mel(np.array(F_MAX)), n_mels + 2) / 2595.0) - 1.0
    )
    lo, mid, hi = edges[:-2, None], edges[1:-1, None], edges[2:, None]
    return np.clip(np.minimum((freqs - lo) / (mid - lo), (hi - freqs) / (hi - mid)), 0.0, None)


class LogMelEncoder:
    """The AudioEncoder interface (``__call__``, ``stream``, ``num_layers``, ``dim``) over log-mels."""

    random_init = False  # deterministic signal processing: nothing random to warn about

    def __init__(self, n_mels: int = N_MELS) -> None:
        self.dim = n_mels
        self.num_layers = 2
        self._filters = _mel_filters(n_mels)
        self._hann = np.hanning(WINDOW)

    def _logmel(self, wav16k: np.ndarray, frames: np.ndarray, fps: float) -> np.ndarray:
        """[len(frames), n_mels] scaled log-mel at the centres of ``frames`` (any integers)."""
        centres = np.round((frames + 0.5) * SAMPLE_RATE / fps).astype(np.int64)
        idx = centres[:, None] + np.arange(-WINDOW // 2, WINDOW // 2)[None, :]
        inside = (idx >= 0) & (idx < len(wav16k))
        windows = (
            np.where(inside, wav16k[np.clip(idx, 0, max(len(wav16k) - 1, 0))], 0.0)
            if len(wav16k)
            else np.zeros(idx.shape)
        )
        power = np.abs(np.fft.rfft(windows * self._hann, axis=1)) ** 2
        return (np.log(power @ self._filters.T + EPS) + SHIFT) / SCALE

    def tokens(self, wav16k: np.ndarray, rows: Sequence[int] | np.ndarray, fps: float = 30) -> np.ndarray:
        """Tokens [len(rows), 2, n_mels] float16 of these frame rows (past the audio: silence)."""
        wav = np.asarray(wav16k, dtype=np.float64).reshape(-1)
        rows = np.asarray(rows, dtype=np.int64).reshape(-1)
        # Each frame needs its own log-mel and its neighbours': one spectrum per distinct frame.
        frames = np.unique(np.concatenate([rows - 1, rows, rows + 1]))
        mel = self._logmel(wav, frames, fps)
        here, before, after = (mel[np.searchsorted(frames, rows + d)] for d in (0, -1, 1))
        return np.stack([here, (after - before) / 2.0], axis=1).astype(np.float16)

    def __call__(self, wav16k: np.ndarray, num_frames: int, fps: float = 30) -> np.ndarray:
        """Tokens for frames 0..num_frames-1, as AudioEncoder gives them: [num_frames, 2, n_mels]."""
        return self.tokens(wav16k, np.arange(num_frames), fps)

    def stream(self, wav16k: np.ndarray, num_frames: int, fps: float = 30) -> LogMelStream:
        """Rows on demand (generation asks clip by clip); equal to the same rows of ``__call__``."""
        return LogMelStream(self, wav16k, num_frames, fps)


class LogMelStream:
    """Indexable like AudioEncoder's TokenStream: ``stream[rows]`` → [len(rows), 2, n_mels]."""

    def __init__(self, encoder: LogMelEncoder, wav16k: np.ndarray, num_frames: int, fps: float) -> None:
        self._encoder, self._wav, self._n, self._fps = encoder, np.asarray(wav16k), num_frames, fps

    def __len__(self) -> int:
        return self._n

    def __getitem__(self, rows: Sequence[int] | np.ndarray) -> np.ndarray:
        rows = np.asarray(rows, dtype=np.int64)
        if rows.size and (rows.min() < 0 or rows.max() >= self._n):
            raise IndexError(f"token rows must lie in [0, {self._n}), got {rows.min()}..{rows.max()}")
        return self._encoder.tokens(self._wav, rows, self._fps)
