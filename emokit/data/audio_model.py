"""Where the Wav2Vec2 model comes from (hub id or local folder), checked without loading it.

Kept apart from emokit.data.wav2vec so the label command can reject a bad --audio-model in
milliseconds, before any worker starts, without importing torch or transformers (~4 s).
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = [
    "AudioModelError",
    "HOW_TO_PROVIDE",
    "PRECISIONS",
    "WEIGHT_FILES",
    "check_audio_model",
    "offline",
    "why_not",
]

PRECISIONS = ("auto", "fp32", "bf16", "fp16")  # wav2vec compute precision (see wav2vec.resolve_precision)
WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")  # what emokit.data.wav2vec_net reads

HOW_TO_PROVIDE = (
    "pass --audio-model a local directory holding config.json, the weights and "
    "preprocessor_config.json (e.g. made with `hf download facebook/wav2vec2-base-960h "
    "--local-dir DIR` on a machine with network), or a hub id while online"
)


class AudioModelError(ValueError):
    """The wav2vec model given by --audio-model cannot be loaded (one-line reason)."""


def offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in {"1", "true", "yes", "on"}


def _problem(name: str) -> str | None:
    """Why ``name`` surely cannot load (missing folder or files, offline and not cached), or None."""
    path = Path(name).expanduser()
    looks_local = path.exists() or name.startswith((".", "/", "~")) or name.count("/") > 1
    if path.is_dir():
        missing = [f for f in ("config.json", "preprocessor_config.json") if not (path / f).is_file()]
        if not any((path / w).is_file() for w in WEIGHT_FILES):
            missing.append(" or ".join(WEIGHT_FILES))
        return f"the directory has no {', '.join(missing)}" if missing else None
    if looks_local:
        return "no such directory"
    if offline():
        from huggingface_hub import try_to_load_from_cache

        if not isinstance(try_to_load_from_cache(name, "config.json"), str):
            return "not in the local Hugging Face cache and HF_HUB_OFFLINE is set"
    return None


def why_not(name: str, err: BaseException) -> str:
    """A short reason a load failed: the common cases by name, the library's own text otherwise."""
    return _problem(name) or " ".join(str(err).split())[:200] or type(err).__name__


def check_audio_model(model: str | Path) -> None:
    """Raise AudioModelError now for a model that surely cannot load; a pass is no guarantee
    (corrupt weights still fail at load time, with the same kind of error)."""
    if str(model) == "logmel":  # emokit.data.logmel: signal processing, nothing to load
        return
    reason = _problem(str(model))
    if reason:
        raise AudioModelError(
            f"cannot load wav2vec model --audio-model {str(model)!r}: {reason}; {HOW_TO_PROVIDE}"
        )
