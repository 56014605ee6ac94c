"""LUMIN callbacks: the host integration. Thin; the statistics live in :mod:`lumin_inferno.statistics`."""

from .approx_inferno import ApproxInfernoCallback
from .inferno import DenormalFlush, InfernoCallback, InputTransform
from .pivot import LambdaRamp, PivotCallback
from .pred_handlers import HardBinPredHandler
from .schedules import TemperatureSchedule

__all__ = [
    "InfernoCallback",
    "InputTransform",
    "DenormalFlush",
    "ApproxInfernoCallback",
    "PivotCallback",
    "LambdaRamp",
    "HardBinPredHandler",
    "TemperatureSchedule",
]
