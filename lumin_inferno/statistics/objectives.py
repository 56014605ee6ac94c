"""Objectives on the parameters of interest from the Fisher information: what an INFERNO-style loss minimises.

With I the Fisher information (the NLL Hessian on Asimov data) and every parameter but the POIs profiled, the POIs'
expected covariance is the POI block of I⁻¹, C = (I⁻¹)_PP (by the Schur complement this *is* the profiled
covariance). The objectives, all differentiable and all in POI units (squared, or log of a determinant):

* ``"variance"``: C₀₀, the variance of one POI (``poi``, default the first);
* ``"weighted_variance"``: Σ_k w_k C_kk, a weighted sum of POI variances (w default 1);
* ``"generalised_variance"``: log det C, the log of the volume of the POIs' confidence ellipsoid (neos's
  ``generalised_variance``; invariant under rescaling a POI, so no weights are needed).

Two objectives of searches need the likelihood itself, not only its curvature (:func:`model_objective`;
:mod:`lumin_inferno.statistics.search`):

* ``"discovery"``: 1/Z₀², with Z₀ the expected (Asimov) discovery significance of the signal of the POIs, every
  other parameter profiled (1/Z₀² ≈ σ²(μ) for a small signal: the same units as ``"variance"``, and positive, as
  LUMIN's ensemble weighting needs);
* ``"cls_limit"``: the median expected CLs upper limit at 95 % CL on the POIs' signal strength (q̃_μ,
  background-only Asimov data).
"""

from __future__ import annotations

import math
from typing import Optional, Sequence

import torch
from torch import Tensor

from ..exceptions import InvalidModelSpecError
from .hessian import cholesky_factor

__all__ = ["OBJECTIVES", "SEARCH_OBJECTIVES", "poi_covariance", "objective_value", "model_objective", "objective_scale"]

#: objectives of the POI covariance (from the Fisher information alone)
FISHER_OBJECTIVES = ("variance", "weighted_variance", "generalised_variance")
#: objectives of searches, from fits of the likelihood
SEARCH_OBJECTIVES = ("discovery", "cls_limit")
OBJECTIVES = FISHER_OBJECTIVES + SEARCH_OBJECTIVES


def poi_covariance(information: Tensor, poi_indices: Sequence[int]) -> Tensor:
    """(I⁻¹)_PP: the expected covariance of the POIs at ``poi_indices`` with every other parameter profiled,
    ``[n_poi, n_poi]``, via one Cholesky solve (differentiable). Raises :class:`SingularHessianError`."""
    n = information.shape[0]
    idx = list(poi_indices)
    if not idx or any(not 0 <= i < n for i in idx) or len(set(idx)) != len(idx):
        raise InvalidModelSpecError(f"poi indices must be distinct positions in 0..{n - 1}, got {idx}")
    chol = cholesky_factor(information)
    eye = torch.zeros(n, len(idx), dtype=information.dtype, device=information.device)
    eye[idx, torch.arange(len(idx))] = 1.0
    half = torch.linalg.solve_triangular(chol, eye, upper=False)  # L⁻¹ E, so C = (L⁻¹E)ᵀ(L⁻¹E)
    return half.transpose(0, 1) @ half


def objective_value(
    information: Tensor,
    poi_indices: Sequence[int],
    kind: str = "variance",
    weights: Optional[Sequence[float]] = None,
) -> Tensor:
    """The objective ``kind`` (:data:`OBJECTIVES`) of the POIs at ``poi_indices``; for ``"variance"`` only the
    first index counts. ``weights`` are the w_k of ``"weighted_variance"`` (default all 1)."""
    if kind not in FISHER_OBJECTIVES:
        raise InvalidModelSpecError(f"objective_value takes one of {FISHER_OBJECTIVES}, got {kind!r} (searches' "
                               "objectives need the model: model_objective)")
    idx = list(poi_indices)
    if kind == "variance":
        idx = idx[:1]
    cov = poi_covariance(information, idx)
    if kind == "variance":
        return cov[0, 0]
    if kind == "weighted_variance":
        w = torch.ones(len(idx), dtype=cov.dtype, device=cov.device) if weights is None else torch.as_tensor(
            list(weights), dtype=cov.dtype, device=cov.device
        )
        if w.shape != (len(idx),) or (w < 0).any() or not (w > 0).any():
            raise InvalidModelSpecError(f"weights must be {len(idx)} non-negative numbers, not all 0; got {weights}")
        return (w * torch.diagonal(cov)).sum()
    return torch.logdet(cov)


def model_objective(
    model,
    information: Tensor,
    poi_indices: Sequence[int],
    kind: str = "variance",
    weights: Optional[Sequence[float]] = None,
) -> Tensor:
    """The objective ``kind`` (:data:`OBJECTIVES`) of ``model`` (a :class:`~lumin_inferno.statistics.TemplateModel`)
    over the POIs at ``poi_indices``: from its Fisher ``information`` for the covariance objectives, from fits of
    the likelihood for ``"discovery"`` (1/Z₀²) and ``"cls_limit"`` (the expected CLs upper limit)."""
    if kind in FISHER_OBJECTIVES:
        return objective_value(information, poi_indices, kind, weights)
    if kind not in SEARCH_OBJECTIVES:
        raise InvalidModelSpecError(f"objective must be one of {OBJECTIVES}, got {kind!r}")
    from .search import discovery_significance, expected_cls_upper_limit

    names = [model.parameter_names[i] for i in poi_indices]
    if kind == "discovery":
        return discovery_significance(model, names).pow(-2)
    return expected_cls_upper_limit(model, names)


def objective_scale(model, poi_indices: Sequence[int], kind: str = "variance",
                    weights: Optional[Sequence[float]] = None) -> float:
    """The objective ``kind`` of ``model`` on its Asimov data as one number in POI units (lower is better), for
    model selection and reports: √C₀₀ (``"variance"``: σ of the POI), √(Σ w_k C_kk) (``"weighted_variance"``),
    (det C)^(1/2k) (``"generalised_variance"``: the geometric mean of the k POIs' σ for uncorrelated POIs), 1/Z₀
    (``"discovery"``) and the expected upper limit (``"cls_limit"``). Not differentiable (floats out)."""
    from .hessian import fisher_information

    with torch.enable_grad():
        information = fisher_information(model).detach()
        value = float(model_objective(model, information, poi_indices, kind, weights).detach())
    if kind in ("variance", "weighted_variance", "discovery"):
        return value ** 0.5
    if kind == "generalised_variance":
        return math.exp(value / (2 * len(list(poi_indices))))
    return value
