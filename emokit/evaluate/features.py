"""Feature networks the user brings for FID, FVD and identity similarity, and the statistics on them.

Why TorchScript: the reference networks (InceptionV3 for FID, I3D for FVD, ArcFace for CSIM) are
distributed by their authors in several frameworks; a TorchScript file is the one format that
carries both architecture and weights and runs with torch alone. emokit calls it as
``net(x) -> [N, D]`` with float32 RGB in [-1, 1]: images [N, 3, S, S] (FID: S = 299, ArcFace:
S = 112) or clips [N, 3, T, S, S] (FVD: T = 16, S = 224). Wrap a network with another input
convention in a small scripted module. A name is a local ``.pt`` file or a hub id ``owner/name``
whose repository holds ``model.pt`` (``owner/name/file.pt`` names another file).
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

INCEPTION_SIZE = 299
I3D_SIZE, I3D_FRAMES = 224, 16
ARCFACE_SIZE = 112

__all__ = [
    "FeatureNetError",
    "cosine_similarity",
    "embed",
    "frechet_distance",
    "load_feature_net",
    "to_input",
]


class FeatureNetError(ValueError):
    """A feature network cannot be found or loaded, or gives unusable output (one line)."""


def load_feature_net(name: str | Path, what: str):
    """A TorchScript module from a local file or the hub (see module docstring)."""
    import torch

    path = Path(name).expanduser()
    if not path.is_file():
        text = str(name)
        parts = text.split("/")
        if text.startswith((".", "/", "~")) or len(parts) < 2:
            raise FeatureNetError(f"--{what} {text}: no such file (and not a hub id owner/name)")
        from huggingface_hub import hf_hub_download

        repo, filename = "/".join(parts[:2]), "/".join(parts[2:]) or "model.pt"
        try:
            path = Path(hf_hub_download(repo, filename))
        except Exception as e:  # noqa: BLE001 - offline, missing repo or file: one line
            raise FeatureNetError(
                f"--{what} {text}: cannot get {filename} from the hub or its cache ({type(e).__name__}); "
                "pass a local TorchScript file"
            ) from e
    try:
        net = torch.jit.load(str(path), map_location="cpu")
    except Exception as e:  # noqa: BLE001 - any load failure is one line for the user
        raise FeatureNetError(f"--{what} {path}: not a TorchScript file ({type(e).__name__})") from e
    return net.eval()


def to_input(frames: np.ndarray, size: int) -> np.ndarray:
    """uint8 RGB [N, H, W, 3] → float32 [N, 3, size, size] in [-1, 1] (area/bilinear resize)."""
    out = np.empty((len(frames), 3, size, size), np.float32)
    for i, f in enumerate(frames):
        interp = cv2.INTER_AREA if min(f.shape[:2]) > size else cv2.INTER_LINEAR
        out[i] = np.moveaxis(cv2.resize(f, (size, size), interpolation=interp), -1, 0) / 127.5 - 1.0
    return out


def embed(net, x: np.ndarray, what: str, batch: int = 16) -> np.ndarray:
    """Run ``net`` on ``x`` in batches → [N, D] float64."""
    import torch

    outs = []
    with torch.no_grad():
        for s in range(0, len(x), batch):
            y = net(torch.from_numpy(np.ascontiguousarray(x[s : s + batch])))
            if not isinstance(y, torch.Tensor) or y.ndim != 2:
                raise FeatureNetError(
                    f"--{what}: expected [N, D] features, got {getattr(y, 'shape', type(y))}"
                )
            outs.append(y.double().numpy())
    feats = np.concatenate(outs)
    if not np.isfinite(feats).all():
        raise FeatureNetError(f"--{what}: the network returned NaN/inf features")
    return feats


def frechet_distance(a: np.ndarray, b: np.ndarray) -> float:
    """||μa − μb||² + Tr(Σa + Σb − 2 (Σa Σb)^½) of two feature sets [N, D] (FID / FVD)."""
    from scipy import linalg

    if len(a) < 2 or len(b) < 2:
        raise FeatureNetError(
            f"a Fréchet distance needs at least 2 samples a side, got {len(a)} and {len(b)}"
        )
    mu_a, mu_b = a.mean(0), b.mean(0)
    ca, cb = np.atleast_2d(np.cov(a, rowvar=False)), np.atleast_2d(np.cov(b, rowvar=False))
    root = linalg.sqrtm(ca @ cb)
    if not np.isfinite(root).all():  # singular product: regularise as FID implementations do
        eps = 1e-6 * np.eye(len(ca))
        root = linalg.sqrtm((ca + eps) @ (cb + eps))
    root = np.real(root)
    return float(((mu_a - mu_b) ** 2).sum() + np.trace(ca) + np.trace(cb) - 2.0 * np.trace(root))


def cosine_similarity(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise cosine similarity of [N, D] against [D] or [N, D]."""
    a = a / np.linalg.norm(a, axis=-1, keepdims=True)
    b = b / np.linalg.norm(b, axis=-1, keepdims=True)
    return (a * b).sum(-1)
