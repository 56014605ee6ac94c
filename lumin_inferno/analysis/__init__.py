"""The one description of a measurement (:class:`Analysis`) and the binned likelihood it defines."""

from .model import NUISANCE_BOUNDS, SummaryTemplates, template_model
from .spec import (
    SPEC_VERSION,
    SYSTEMATIC_KINDS,
    Analysis,
    FixedChannel,
    InputShift,
    NormFactor,
    Nuisance,
    Objective,
    Process,
    Systematic,
)

__all__ = [
    "Analysis",
    "Process",
    "NormFactor",
    "Nuisance",
    "Systematic",
    "InputShift",
    "FixedChannel",
    "Objective",
    "SummaryTemplates",
    "template_model",
    "NUISANCE_BOUNDS",
    "SPEC_VERSION",
    "SYSTEMATIC_KINDS",
]
