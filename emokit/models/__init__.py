"""The EMO model (diffusers-based): config, model, stages and checkpoint files."""

from emokit.models.config import ConfigError, EMOConfig
from emokit.models.emo import EMOModel, InputShapeError
from emokit.models.pretrained import (
    CheckpointError,
    InitWeightsError,
    MotionLoad,
    load_motion_adapter,
    read_config,
)
from emokit.models.reference import ReferenceFeatures
from emokit.models.speed import speed_encoding
from emokit.models.stages import STAGE_GROUPS, StageError, count_parameters, group_parameters

__all__ = [
    "STAGE_GROUPS",
    "CheckpointError",
    "ConfigError",
    "EMOConfig",
    "EMOModel",
    "InitWeightsError",
    "InputShapeError",
    "MotionLoad",
    "ReferenceFeatures",
    "StageError",
    "count_parameters",
    "group_parameters",
    "load_motion_adapter",
    "read_config",
    "speed_encoding",
]
