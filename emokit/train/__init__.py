"""EMO training: shard dataset, the stage loop, checkpoints (see loop.py for the whole picture)."""

from emokit.train.checkpoint import CheckpointError, load_for_inference
from emokit.train.dataset import ClipDataset, DatasetError, index_clips
from emokit.train.loop import TrainError, TrainResult, train

__all__ = [
    "CheckpointError",
    "ClipDataset",
    "DatasetError",
    "TrainError",
    "TrainResult",
    "index_clips",
    "load_for_inference",
    "train",
]
