"""emokit: audio-driven portrait video (EMO) — dataset pipeline, diffusion model, trainer, generator.

The Python API, loaded on first use (``import emokit`` itself imports no torch)::

    import emokit

    emokit.ingest(["talks/"], "ds")                      # videos → clip windows (manifest)
    emokit.label("ds")                                    # crops, pose, audio tokens → shards
    emokit.train("ds", "runs/emo", 1, emokit.TrainConfig())  # one EMO stage; rerun to resume
    pipe = emokit.EMOPipeline.from_pretrained("runs/emo/stage1/final")
    pipe("me.jpg", "speech.wav", "me_talking.mp4")        # → mp4 as long as the audio
    emokit.evaluate("me_talking.mp4", "real.mp4")         # metrics against a real video
"""

from __future__ import annotations

import importlib
import sys
import types
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# public name → module that defines it (imported when the name is first used)
_LAZY = {
    "ingest": "emokit.data.ingest",
    "label": "emokit.data.label",
    "train": "emokit.train.loop",
    "EMOPipeline": "emokit.pipeline.emo_pipeline",
    "load_pipeline": "emokit.pipeline.emo_pipeline",
    "evaluate": "emokit.evaluate.report",
    "EMOModel": "emokit.models.emo",
    "EMOConfig": "emokit.models.config",
    "TrainConfig": "emokit.config",
}

__all__ = [
    "EMOConfig",
    "EMOModel",
    "EMOPipeline",
    "TrainConfig",
    "__version__",
    "evaluate",
    "ingest",
    "label",
    "load_pipeline",
    "train",
]

if TYPE_CHECKING:  # what type checkers and IDEs see: the real signatures and docstrings
    from emokit.data.ingest import ingest
    from emokit.data.label import label
    from emokit.evaluate.report import evaluate
    from emokit.config import TrainConfig
    from emokit.models.config import EMOConfig
    from emokit.models.emo import EMOModel
    from emokit.pipeline.emo_pipeline import EMOPipeline, load_pipeline
    from emokit.train.loop import train


def _public(name: str) -> Any:
    return getattr(importlib.import_module(_LAZY[name]), name)


class _Api(types.ModuleType):
    """``emokit``'s module type: a public name is looked up in its defining module on every use, so
    the import is cheap (the CLI and the data tools need no torch) and ``emokit.train`` /
    ``emokit.evaluate`` stay the functions once their packages of the same name are imported
    (the import system then stores the package under that name in this module)."""

    def __getattribute__(self, name: str) -> Any:
        if name in _LAZY:
            return _public(name)
        return super().__getattribute__(name)

    def __dir__(self) -> list[str]:
        return sorted({*super().__dir__(), *_LAZY})


sys.modules[__name__].__class__ = _Api
