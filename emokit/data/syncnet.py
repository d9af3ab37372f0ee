"""SyncNet (Chung & Zisserman, "Out of time: automated lip sync in the wild", 2016) in plain torch,
its weight loader, and the offset/confidence that lip-sync curation pipelines compute with it.

Two streams map 5 video frames of the mouth region and the 0.2 s of MFCCs that go with them
(13 coefficients × 20 frames at 100 Hz, at the 25 FPS SyncNet is trained on) to embeddings that
are close when the sound belongs to the lips. For every video window t and lag l in ±15 frames the
distance ||v_t − a_{t+l}|| is averaged over t: the minimum's lag is the offset (audio late
positive), ``median − min`` of the averaged curve is the confidence (Sync-C) and the minimum the
distance (Sync-D).

Layer layout after the paper's (conv1–conv5 then fc6–fc7; the video stream's first 3D convolution
spans all 5 frames); widths, crop side and embedding size live in :class:`SyncNetConfig`, which
travels with the weights, so a small network saved by a test loads through the same path as a
real one. Checkpoints: a ``.safetensors`` file (config JSON in its metadata), a ``.pt`` file
(``{"config": {...}, "state_dict": {...}}``), a folder with ``config.json`` + ``model.safetensors``,
or a Hugging Face hub id holding those two files. Never falls back to random weights.
"""

from __future__ import annotations

import io
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from einops import rearrange
from torch import nn

SYNC_FPS = 25  # SyncNet's video rate; 4 MFCC frames (100 Hz) per video frame
MFCC_RATE = 100
MAX_LAG = 15
# Sync-C below this: the audio is taken not to belong to the lips (no_lipsync, no offset stored).
# Open lip-sync data pipelines drop clips under a SyncNet confidence of about 3.
SYNCNET_MIN_CONFIDENCE = 3.0

__all__ = [
    "at_sync_fps",
    "clip_sync",
    "mouth_squares",
    "square_crops",
    "SyncNet",
    "SyncNetConfig",
    "SyncNetError",
    "SyncScore",
    "load_syncnet",
    "mfcc",
    "save_syncnet",
    "score_embeddings",
    "sync_score",
]


class SyncNetError(ValueError):
    """A SyncNet checkpoint cannot be found or does not fit the network (one-line reason)."""


@dataclass
class SyncNetConfig:
    frames: int = 5  # video frames per window
    size: int = 112  # mouth crop side in pixels (the lower half of the face, square)
    n_mfcc: int = 13
    mfcc_frames: int = 20  # 0.2 s at 100 Hz, = frames / 25 FPS
    video_widths: list[int] = field(default_factory=lambda: [96, 256, 256, 256, 512])
    audio_widths: list[int] = field(default_factory=lambda: [64, 192, 384, 256, 512])
    hidden: int = 512
    embed: int = 1024


def _bn_relu(c: int, dims: int) -> list[nn.Module]:
    return [nn.BatchNorm3d(c) if dims == 3 else nn.BatchNorm2d(c), nn.ReLU(inplace=True)]


class SyncNet(nn.Module):
    """Mouth-crop video stream and MFCC audio stream → embeddings (see module docstring)."""

    def __init__(self, config: SyncNetConfig | None = None) -> None:
        super().__init__()
        self.config = c = config or SyncNetConfig()
        v, a = c.video_widths, c.audio_widths
        self.video = nn.Sequential(
            nn.Conv3d(3, v[0], (c.frames, 7, 7), stride=(1, 2, 2), padding=(0, 3, 3)),
            *_bn_relu(v[0], 3),
            nn.MaxPool3d((1, 3, 3), stride=(1, 2, 2), padding=(0, 1, 1)),
            nn.Conv3d(v[0], v[1], (1, 5, 5), stride=(1, 2, 2), padding=(0, 2, 2)),
            *_bn_relu(v[1], 3),
            nn.MaxPool3d((1, 3, 3), stride=(1, 2, 2), padding=(0, 1, 1)),
            nn.Conv3d(v[1], v[2], (1, 3, 3), padding=(0, 1, 1)),
            *_bn_relu(v[2], 3),
            nn.Conv3d(v[2], v[3], (1, 3, 3), padding=(0, 1, 1)),
            *_bn_relu(v[3], 3),
            nn.Conv3d(v[3], v[4], (1, 3, 3), padding=(0, 1, 1)),
            *_bn_relu(v[4], 3),
            nn.AdaptiveAvgPool3d(1),
        )
        self.audio = nn.Sequential(
            nn.Conv2d(1, a[0], 3, padding=1),
            *_bn_relu(a[0], 2),
            nn.Conv2d(a[0], a[1], 3, padding=1),
            *_bn_relu(a[1], 2),
            nn.MaxPool2d(3, stride=(1, 2), padding=1),
            nn.Conv2d(a[1], a[2], 3, padding=1),
            *_bn_relu(a[2], 2),
            nn.Conv2d(a[2], a[3], 3, padding=1),
            *_bn_relu(a[3], 2),
            nn.Conv2d(a[3], a[4], 3, padding=1),
            *_bn_relu(a[4], 2),
            nn.AdaptiveAvgPool2d(1),
        )
        self.video_fc = nn.Sequential(
            nn.Linear(v[4], c.hidden),
            nn.BatchNorm1d(c.hidden),
            nn.ReLU(inplace=True),
            nn.Linear(c.hidden, c.embed),
        )
        self.audio_fc = nn.Sequential(
            nn.Linear(a[4], c.hidden),
            nn.BatchNorm1d(c.hidden),
            nn.ReLU(inplace=True),
            nn.Linear(c.hidden, c.embed),
        )

    def embed_video(self, clips: torch.Tensor) -> torch.Tensor:
        """[B, 3, frames, size, size] float RGB in [0, 1] → [B, embed]."""
        return self.video_fc(rearrange(self.video(clips), "b c 1 1 1 -> b c"))

    def embed_audio(self, mfccs: torch.Tensor) -> torch.Tensor:
        """[B, 1, n_mfcc, mfcc_frames] → [B, embed]."""
        return self.audio_fc(rearrange(self.audio(mfccs), "b c 1 1 -> b c"))


def mfcc(audio: np.ndarray, sr: int = 16000, n_mfcc: int = 13, n_mels: int = 40) -> np.ndarray:
    """MFCCs [n_mfcc, T] at 100 Hz: 25 ms Hamming frames every 10 ms (frame k starts at k·10 ms),
    512-point power spectrum, HTK mel filters 0–sr/2, log, orthonormal DCT-II."""
    from scipy.fft import dct

    x = np.asarray(audio, dtype=np.float64)
    win, hop, n_fft = round(0.025 * sr), sr // MFCC_RATE, 512
    if len(x) < win:
        x = np.pad(x, (0, win - len(x)))
    t = 1 + (len(x) - win) // hop
    idx = np.arange(win)[None, :] + hop * np.arange(t)[:, None]
    spec = np.abs(np.fft.rfft(x[idx] * np.hamming(win), n_fft)) ** 2
    mel = lambda f: 2595.0 * np.log10(1.0 + f / 700.0)  # noqa: E731
    edges = 700.0 * (10 ** (np.linspace(0, mel(sr / 2), n_mels + 2) / 2595.0) - 1.0)
    freqs = np.fft.rfftfreq(n_fft, 1.0 / sr)
    lo, mid, hi = edges[:-2, None], edges[1:-1, None], edges[2:, None]
    fb = np.clip(np.minimum((freqs - lo) / (mid - lo), (hi - freqs) / (hi - mid)), 0.0, None)
    logmel = np.log(spec @ fb.T + 1e-10)
    return dct(logmel, type=2, axis=1, norm="ortho")[:, :n_mfcc].T.astype(np.float32)


@dataclass(frozen=True)
class SyncScore:
    """SyncNet's verdict on one video: offset in 25 FPS frames (audio late positive), Sync-C
    (median − min of the mean distance curve), Sync-D (its minimum) and the curve itself."""

    offset_frames: int
    confidence: float
    distance: float
    curve: list[float]


@torch.no_grad()
def sync_score(
    net: SyncNet, mouths: np.ndarray, audio: np.ndarray, sr: int = 16000, batch: int = 64
) -> SyncScore:
    """Score mouth crops [F, size, size, 3] uint8 at 25 FPS against their audio (mono, ``sr``)."""
    c = net.config
    net.eval()
    f = len(mouths)
    n_win = f - c.frames + 1
    if n_win < 2 * MAX_LAG + 1:
        raise SyncNetError(f"{f} frames at {SYNC_FPS} FPS are too few for a ±{MAX_LAG}-frame search")
    feats = mfcc(audio, sr, c.n_mfcc)
    per = MFCC_RATE // SYNC_FPS
    need = (f - 1) * per + c.mfcc_frames
    feats = np.pad(feats, ((0, 0), (0, max(0, need - feats.shape[1]))))
    video = torch.from_numpy(np.ascontiguousarray(mouths)).float().div(255.0)
    video = rearrange(video, "f h w c -> c f h w")
    v_emb, a_emb = [], []
    for s in range(0, n_win, batch):
        ts = range(s, min(s + batch, n_win))
        v_emb.append(net.embed_video(torch.stack([video[:, t : t + c.frames] for t in ts])))
        a = np.stack([feats[:, t * per : t * per + c.mfcc_frames] for t in ts])
        a_emb.append(net.embed_audio(rearrange(torch.from_numpy(a), "b m t -> b 1 m t")))
    return score_embeddings(torch.cat(v_emb).numpy(), torch.cat(a_emb).numpy())


def score_embeddings(v: np.ndarray, a: np.ndarray, max_lag: int = MAX_LAG) -> SyncScore:
    """Offset and confidence from per-window video and audio embeddings [N, D] (same windows):
    mean ||v_t − a_{t+lag}|| over the t where both exist, for every lag in ±max_lag."""
    n = len(v)
    curve = []
    for lag in range(-max_lag, max_lag + 1):
        vv, aa = (v[: n - lag], a[lag:]) if lag >= 0 else (v[-lag:], a[: n + lag])
        curve.append(float(np.linalg.norm(vv - aa, axis=1).mean()))
    d = np.array(curve)
    k = int(np.argmin(d))
    return SyncScore(k - max_lag, float(np.median(d) - d[k]), float(d[k]), curve)


def at_sync_fps(n: int, fps: float) -> np.ndarray:
    """Indices into ``n`` frames at ``fps`` that a 25 FPS sample-and-hold shows (SyncNet's rate)."""
    k = np.arange(int(n * SYNC_FPS / fps))
    return np.minimum(np.floor(k * fps / SYNC_FPS + 1e-6).astype(np.int64), n - 1)


def square_crops(frames: np.ndarray, squares: np.ndarray, size: int) -> np.ndarray:
    """Crops [F, size, size, 3] of squares [F, 3] (x0, y0, side; may leave the frame: edge
    pixels repeat) out of frames [F, H, W, 3]."""
    import cv2

    out = np.empty((len(frames), size, size, 3), np.uint8)
    dst = np.array([[0, 0], [size, 0], [0, size]], np.float32)
    for i, (f, (x, y, s)) in enumerate(zip(frames, squares)):
        m = cv2.getAffineTransform(np.array([[x, y], [x + s, y], [x, y + s]], np.float32), dst)
        out[i] = cv2.warpAffine(f, m, (size, size), flags=cv2.INTER_AREA, borderMode=cv2.BORDER_REPLICATE)
    return out


def mouth_squares(boxes: np.ndarray) -> np.ndarray:
    """The mouth region SyncNet reads, per face box [F, 4] (x0, y0, x1, y1): the square of the box's
    width over its lower half → [F, 3] (x0, y0, side)."""
    b = np.asarray(boxes, np.float64)
    side = b[:, 2] - b[:, 0]
    cy = (b[:, 1] + b[:, 3]) / 2 * 0.5 + b[:, 3] * 0.5  # middle of the lower half
    return np.stack([b[:, 0], cy - side / 2, side], axis=1)


def clip_sync(
    net: SyncNet, mp4: bytes, face_boxes: np.ndarray, audio: np.ndarray, fps: float, sr: int = 16000
):
    """`emokit label --syncnet`: the sync label of one labelled clip (its crop mp4, per-frame face
    boxes in crop pixels, its 16 kHz audio) → AVSync with the offset in ``fps`` frames."""
    import av

    from emokit.data.avsync import OFFSET_FLAG_FRAMES, AVSync

    with av.open(io.BytesIO(mp4), mode="r") as container:
        frames = np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)])
    idx = at_sync_fps(len(frames), fps)
    mouths = square_crops(frames[idx], mouth_squares(np.asarray(face_boxes)[idx]), net.config.size)
    try:
        s = sync_score(net, mouths, audio, sr)
    except SyncNetError:
        return AVSync(None, None, "syncnet")  # too short for a ±15-frame search
    offset: int | None = round(s.offset_frames * fps / SYNC_FPS)
    flags: list[str] = []
    if s.confidence < SYNCNET_MIN_CONFIDENCE:
        flags.append("no_lipsync")
        offset = None
    elif offset is not None and abs(offset) > OFFSET_FLAG_FRAMES:
        flags.append("av_offset")
    return AVSync(offset, s.confidence, "syncnet", tuple(flags), round(s.offset_frames * fps / SYNC_FPS))


def save_syncnet(net: SyncNet, path: str | Path) -> Path:
    """Write ``net`` as a .safetensors file (config in its metadata), a .pt file, or a folder."""
    path = Path(path)
    config = json.dumps(asdict(net.config))
    state = {k: v.detach().contiguous() for k, v in net.state_dict().items()}
    if path.suffix == ".pt":
        torch.save({"config": asdict(net.config), "state_dict": state}, path)
        return path
    from safetensors.torch import save_file

    if path.suffix == ".safetensors":
        save_file(state, str(path), metadata={"config": config})
        return path
    path.mkdir(parents=True, exist_ok=True)
    (path / "config.json").write_text(config)
    save_file(state, str(path / "model.safetensors"))
    return path


def _resolve(name: str) -> tuple[dict, dict[str, torch.Tensor]]:
    from safetensors import safe_open
    from safetensors.torch import load_file

    path = Path(name).expanduser()
    if path.is_file() and path.suffix == ".safetensors":
        with safe_open(str(path), "pt") as f:
            meta = f.metadata() or {}
        if "config" not in meta:
            raise SyncNetError(f"{path}: no SyncNet config in the safetensors metadata")
        return json.loads(meta["config"]), load_file(str(path))
    if path.is_file():
        try:
            ckpt = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as e:  # noqa: BLE001 - any unpickling failure is one line for the user
            raise SyncNetError(f"{path}: not a torch checkpoint ({type(e).__name__})") from e
        if not isinstance(ckpt, dict) or "config" not in ckpt or "state_dict" not in ckpt:
            raise SyncNetError(f"{path}: expected a dict with 'config' and 'state_dict'")
        return ckpt["config"], ckpt["state_dict"]
    if path.is_dir():
        if not (path / "config.json").is_file() or not (path / "model.safetensors").is_file():
            raise SyncNetError(f"{path}: a SyncNet folder needs config.json and model.safetensors")
        return json.loads((path / "config.json").read_text()), load_file(str(path / "model.safetensors"))
    if name.startswith((".", "/", "~")) or name.count("/") != 1:
        raise SyncNetError(f"{name}: no such file or folder (and not a hub id owner/name)")
    from huggingface_hub import hf_hub_download

    try:
        cfg = hf_hub_download(name, "config.json")
        weights = hf_hub_download(name, "model.safetensors")
    except Exception as e:  # noqa: BLE001 - offline, missing repo or file: one line
        raise SyncNetError(
            f"{name}: cannot get config.json + model.safetensors from the hub or its cache "
            f"({type(e).__name__}); pass a local checkpoint"
        ) from e
    return json.loads(Path(cfg).read_text()), load_file(weights)


def load_syncnet(name: str | Path, device: str = "cpu") -> SyncNet:
    """A SyncNet from a local file/folder or hub id (see module docstring); raises SyncNetError."""
    config, state = _resolve(str(name))
    try:
        net = SyncNet(SyncNetConfig(**config))
    except TypeError as e:
        raise SyncNetError(f"{name}: config does not describe a SyncNet ({e})") from e
    try:
        net.load_state_dict(state, strict=True)
    except RuntimeError as e:
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise SyncNetError(f"{name}: weights do not fit the SyncNet config ({first})") from e
    return net.to(device).eval()
