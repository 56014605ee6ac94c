"""LUMIN callbacks: the host integration. Thin; the statistics live in :mod:`lumin_inferno.statistics`."""

from .._compat import import_lumin

import_lumin()  # LUMIN first, with pdpbox's global warning filter undone (lumin_inferno._compat)

from .approx_inferno import ApproxInfernoCallback
from .bins import ReseedEmptyBins
from .denormals import DenormalFlush
from .inferno import InfernoCallback, InputTransform
from .metrics import HardSigmaMetric
from .pivot import LambdaRamp, PivotCallback
from .pred_handlers import HardBinPredHandler
from .schedules import TemperatureSchedule

__all__ = [
    "InfernoCallback",
    "HardSigmaMetric",
    "ReseedEmptyBins",
    "InputTransform",
    "DenormalFlush",
    "ApproxInfernoCallback",
    "PivotCallback",
    "LambdaRamp",
    "HardBinPredHandler",
    "TemperatureSchedule",
]
