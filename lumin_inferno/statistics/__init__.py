"""Binned likelihoods, their curvature and fits. Pure torch (+ iminuit for fits); knows nothing of LUMIN."""

from .fit import (UNCERTAINTY_METHODS, FitResult, ProfileInterval, best_fit, expected_poi_uncertainties,
                  expected_poi_uncertainty, fit, profile_interval, profile_scan)
from .hessian import (
    covariance,
    fisher_from_jacobian,
    fisher_information,
    nll_hessian,
    poi_variance,
)
from .interpolation import code1, code4, code4p
from .objectives import (OBJECTIVES, SEARCH_OBJECTIVES, model_objective, objective_scale, objective_value,
                         poi_covariance)
from .search import discovery_significance, expected_cls_upper_limit
from .toys import COVERAGE_LEVELS, CoverageFraction, ToyFit, coverage_fraction, fit_toy, fit_toys, sample_toys, toy_arrays
from .unbinned import extended_fisher_information, unbinned_poi_uncertainty
from .likelihood import (
    TEMPLATE_FLOOR,
    NormSystematic,
    Parameter,
    ShapeSystematic,
    StatError,
    TemplateModel,
    poisson_nll,
)

__all__ = [
    "Parameter",
    "ShapeSystematic",
    "NormSystematic",
    "StatError",
    "TemplateModel",
    "poisson_nll",
    "TEMPLATE_FLOOR",
    "code1",
    "code4",
    "code4p",
    "nll_hessian",
    "fisher_information",
    "fisher_from_jacobian",
    "covariance",
    "poi_variance",
    "expected_poi_uncertainty",
    "expected_poi_uncertainties",
    "UNCERTAINTY_METHODS",
    "FitResult",
    "ProfileInterval",
    "fit",
    "profile_interval",
    "profile_scan",
    "best_fit",
    "sample_toys",
    "fit_toy",
    "fit_toys",
    "ToyFit",
    "toy_arrays",
    "CoverageFraction",
    "coverage_fraction",
    "COVERAGE_LEVELS",
    "extended_fisher_information",
    "unbinned_poi_uncertainty",
    "OBJECTIVES",
    "objective_value",
    "model_objective",
    "objective_scale",
    "SEARCH_OBJECTIVES",
    "poi_covariance",
    "discovery_significance",
    "expected_cls_upper_limit",
]
