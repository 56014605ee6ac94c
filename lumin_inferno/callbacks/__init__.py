"""LUMIN callbacks: the host integration. Thin; the statistics live in :mod:`lumin_inferno.statistics`."""

from .inferno import InfernoCallback, InputTransform
from .pred_handlers import HardBinPredHandler

__all__ = ["InfernoCallback", "InputTransform", "HardBinPredHandler"]
