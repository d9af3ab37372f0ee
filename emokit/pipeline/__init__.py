"""The diffusers pipeline of a trained EMO model (``EMOPipeline``)."""

from emokit.pipeline.emo_pipeline import RAW_VARIANT, EMOPipeline, PipelineLoadError, load_pipeline

__all__ = ["RAW_VARIANT", "EMOPipeline", "PipelineLoadError", "load_pipeline"]
