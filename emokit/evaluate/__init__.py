"""`emokit evaluate`: metrics of a generated talking-head video against a real one."""

from emokit.evaluate.report import PSNR_CAP_DB, EvalReport, EvaluateError, evaluate

__all__ = ["PSNR_CAP_DB", "EvalReport", "EvaluateError", "evaluate"]
