"""Maximum-likelihood fits and profile likelihoods of a :class:`TemplateModel`, with iminuit (MINUIT2).

Why iminuit: it is the minimiser HEP fits are validated against; MIGRAD + HESSE + MINOS give the profile-likelihood
interval directly (MINOS *is* the ΔNLL = ½ crossing with every other parameter re-minimised), and the results carry
validity flags that we turn into :class:`~lumin_inferno.exceptions.FailedMinimizationError` instead of returning a silent
number. The NLL and its exact gradient come from torch (float64), so MIGRAD needs no finite differences.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Optional, Sequence, Tuple

import numpy as np
import torch
from iminuit import Minuit
from torch import Tensor

from ..exceptions import FailedMinimizationError, InvalidModelSpecError
from .hessian import check_observed, fisher_information, nll_hessian, poi_variance
from .likelihood import TemplateModel

__all__ = ["FitResult", "ProfileInterval", "fit", "best_fit", "parameter_bounds", "profile_interval", "profile_scan",
           "expected_poi_uncertainty", "expected_poi_uncertainties", "UNCERTAINTY_METHODS"]

#: how :func:`expected_poi_uncertainty` obtains σ(POI)
UNCERTAINTY_METHODS = ("profile", "hessian")


@dataclass
class FitResult:
    """Best-fit values (dict by parameter name), NLL at the minimum, HESSE errors and MIGRAD's validity flag."""

    values: Dict[str, float]
    errors: Dict[str, float]
    nll: float
    valid: bool


@dataclass
class ProfileInterval:
    """Profile-likelihood interval of the POI at ΔNLL = ½ (MINOS), plus the width from the exact Hessian at the
    minimum, √(H⁻¹)_poi,poi, for comparison.

    ``sigma`` is the half-width (upper − lower)/2, the expected uncertainty on the POI in its own units.
    ``method`` says how the crossings were found: ``"minos"``, or ``"scan"`` where MINOS reported an invalid edge
    and the crossing was root-found on the profiled ΔNLL instead.
    """

    poi: str
    best_fit: float
    lower: float
    upper: float
    sigma_hesse: float
    method: str = "minos"

    @property
    def sigma(self) -> float:
        return 0.5 * (self.upper - self.lower)


def _objective(model: TemplateModel, observed: Tensor):
    dtype = torch.float64

    def nll(theta: np.ndarray) -> float:
        with torch.no_grad():
            return float(model.nll(torch.as_tensor(theta, dtype=dtype), observed))

    def grad(theta: np.ndarray) -> np.ndarray:
        th = torch.as_tensor(np.asarray(theta, dtype=float), dtype=dtype).requires_grad_(True)
        with torch.enable_grad():  # fits also run inside a caller's torch.no_grad()
            (g,) = torch.autograd.grad(model.nll(th, observed), th)
        return g.numpy()

    return nll, grad


def _minuit(model: TemplateModel, observed: Tensor, fixed: Optional[Dict[str, float]] = None) -> Minuit:
    nll, grad = _objective(model, observed)
    start = model.nominal().numpy().copy()
    names = model.parameter_names
    for k, v in (fixed or {}).items():
        start[model.index(k)] = v
    m = Minuit(nll, start, grad=grad, name=names)
    m.errordef = Minuit.LIKELIHOOD
    m.strategy = 1
    for p in model.parameters:
        if p.bounds is not None:
            m.limits[p.name] = p.bounds
        m.errors[p.name] = p.constraint or max(abs(p.nominal) * 0.1, 0.1)
    for k in fixed or {}:
        m.fixed[k] = True
    return m


def _migrad(model: TemplateModel, observed: Optional[Tensor], fixed: Optional[Dict[str, float]] = None):
    """(float64 graph-free model, data (default Asimov), Minuit after a valid MIGRAD) or FailedMinimizationError."""
    model = model.detached()
    if isinstance(observed, Tensor):
        observed = observed.detach()
    observed = model.asimov() if observed is None else check_observed(model, observed)
    m = _minuit(model, observed, fixed)
    m.migrad()
    if not m.valid:
        raise FailedMinimizationError(f"MIGRAD did not converge: {m.fmin}")
    return model, observed, m


def fit(model: TemplateModel, observed: Optional[Tensor] = None, fixed: Optional[Dict[str, float]] = None) -> FitResult:
    """Minimise the NLL with MIGRAD (default data: Asimov); ``fixed`` holds parameters at given values."""
    model, observed, m = _migrad(model, observed, fixed)
    m.hesse()  # MINUIT's numerical HESSE: errors are approximate; use nll_hessian for exact curvature
    return FitResult(dict(zip(m.parameters, m.values)), dict(zip(m.parameters, m.errors)), float(m.fval), m.valid)


def profile_interval(
    model: TemplateModel, observed: Optional[Tensor] = None, poi: Optional[str] = None
) -> ProfileInterval:
    """Profile-likelihood interval of a POI (default the model's primary one) at ΔNLL = ½ with every other
    parameter profiled (MIGRAD + MINOS).

    Default data: Asimov at the nominal point, so the interval is the *expected* uncertainty.
    """
    model, observed, m = _migrad(model, observed)
    poi = model.pois[0] if poi is None else poi  # the primary POI
    index = model.index(poi)
    best = float(m.values[poi])
    theta_hat = torch.as_tensor(np.asarray(m.values), dtype=torch.float64)
    sigma_hesse = float(poi_variance(nll_hessian(model, observed, theta_hat), index).sqrt())
    m.minos(poi)
    me = m.merrors[poi]
    if me.is_valid:
        return ProfileInterval(poi, best, best + me.lower, best + me.upper, sigma_hesse)
    # MINOS can stop at an edge (e.g. a nuisance running into a limit); fall back to root-finding the crossing on
    # the profiled ΔNLL, each point a full MIGRAD fit of the nuisances.
    dnll = _profiled_dnll(model, observed, m, poi)
    lower, upper = (_crossing(dnll, best, sign * sigma_hesse) for sign in (-1.0, 1.0))
    return ProfileInterval(poi, best, lower, upper, sigma_hesse, method="scan")


def expected_poi_uncertainty(model: TemplateModel, *, poi: Optional[str] = None, method: str = "profile") -> float:
    """σ(POI), the expected 1σ uncertainty on a POI (default the model's primary one) on Asimov data at the nominal
    point, in the POI's units, every other parameter profiled: ``"profile"`` is the MINOS half-width at ΔNLL = ½
    (:func:`profile_interval`), ``"hessian"`` is √(I⁻¹)_poi,poi from the Fisher information (equal to the profile
    half-width for a likelihood parabolic in the POI; no fit, so fast)."""
    if method not in UNCERTAINTY_METHODS:
        raise InvalidModelSpecError(f"method must be one of {UNCERTAINTY_METHODS}, got {method!r}")
    poi = model.pois[0] if poi is None else poi  # the primary POI
    index = model.index(poi)
    if method == "profile":
        return profile_interval(model, poi=poi).sigma
    with torch.no_grad():
        return float(poi_variance(fisher_information(model), index).sqrt())


def expected_poi_uncertainties(model: TemplateModel, *, method: str = "profile") -> Dict[str, float]:
    """:func:`expected_poi_uncertainty` of every POI of ``model``, by name."""
    return {poi: expected_poi_uncertainty(model, poi=poi, method=method) for poi in model.pois}


def _profiled_dnll(model: TemplateModel, observed: Tensor, best: Minuit, poi: Optional[str] = None):
    nll_min, poi = best.fval, (model.pois[0] if poi is None else poi)
    if len(model.parameters) == 1:
        nll, _ = _objective(model, observed)
        return lambda v: nll(np.asarray([v])) - nll_min
    m = _minuit(model, observed, fixed={poi: float(best.values[poi])})

    def dnll(v: float) -> float:
        m.values = best.values
        m.values[poi] = float(v)
        m.migrad()
        if not m.valid:
            raise FailedMinimizationError(f"profile fit at {poi} = {v} did not converge: {m.fmin}")
        return m.fval - nll_min

    return dnll


def _crossing(dnll, best: float, step: float) -> float:
    from scipy.optimize import brentq

    for k in (1.0, 1.5, 2.0, 3.0, 5.0, 10.0):
        edge = best + k * step
        if dnll(edge) > 0.5:
            return float(brentq(lambda v: dnll(v) - 0.5, best, edge, xtol=1e-5 * abs(step)))
    raise FailedMinimizationError(f"the profile likelihood does not reach ΔNLL = 1/2 within 10 Hessian widths of {best}")


def profile_scan(model: TemplateModel, poi_values: Sequence[float], observed: Optional[Tensor] = None) -> np.ndarray:
    """ΔNLL of the profile likelihood at each POI value (nuisances re-minimised by MIGRAD at each point, started
    from the global best fit); the ΔNLL = ½ crossings give the 68 % interval."""
    model, observed, best = _migrad(model, observed)
    dnll = _profiled_dnll(model, observed, best)
    return np.asarray([dnll(float(v)) for v in poi_values])


def parameter_bounds(model: TemplateModel) -> Tuple[Tensor, Tensor]:
    """(lower, upper) fit bounds of every parameter, ±inf where a parameter has none."""
    pairs = [p.bounds or (None, None) for p in model.parameters]
    return (torch.tensor([-np.inf if b[0] is None else b[0] for b in pairs], dtype=torch.float64),
            torch.tensor([np.inf if b[1] is None else b[1] for b in pairs], dtype=torch.float64))


def bound_active(theta: Tensor, grad: Tensor, lo: Tensor, hi: Tensor) -> Tensor:
    """Parameters held at a bound by the gradient: at the lower bound with ∂NLL/∂θ > 0, or at the upper one with
    ∂NLL/∂θ < 0 (the last dimension indexes parameters; works batched)."""
    return ((theta <= lo) & (grad > 0)) | ((theta >= hi) & (grad < 0))


def decouple(curvature: Tensor, active: Tensor) -> Tensor:
    """``curvature`` with the rows and columns of the ``active`` parameters replaced by the identity's, so that a
    Newton step leaves them where they are (works batched: ``[..., n, n]`` and ``[..., n]``)."""
    pair = active[..., :, None] | active[..., None, :]
    eye = torch.eye(curvature.shape[-1], dtype=curvature.dtype, device=curvature.device)
    return torch.where(pair, eye.expand_as(curvature), curvature)


def _newton_fit(model: TemplateModel, observed: Tensor, theta: Tensor, free: Tensor, edm: float = 1e-12,
                max_iter: int = 30) -> Optional[Tensor]:
    """Minimise the NLL over the ``free`` parameters by Newton's method with the exact Hessian and a backtracking
    line search, inside the parameters' bounds; ``None`` if it does not converge (the caller then runs MIGRAD).
    The Asimov fits of a search start next to their minimum, so a few steps suffice (~ms each)."""
    from .hessian import fisher_information, nll_hessian

    lo, hi = (b[free] for b in parameter_bounds(model))
    theta = theta.clone()
    with torch.enable_grad():
        for _ in range(max_iter):
            th = theta.clone().requires_grad_(True)
            nll = model.nll(th, observed)
            (grad,) = torch.autograd.grad(nll, th)
            g = grad[free]
            # a parameter at a bound whose gradient points outwards stays there (active set): no step, and it does
            # not count in the convergence test (its gradient never vanishes)
            active = bound_active(theta[free], g, lo, hi)
            g = g.masked_fill(active, 0.0)
            step, decrement = None, -1.0
            # the exact Hessian near the minimum; the Fisher information (Gauss–Newton, always positive definite)
            # where the Hessian is not (far from it, e.g. μ = 0 on signal-plus-background data)
            for curvature in (nll_hessian(model, observed, theta), fisher_information(model, theta)):
                try:
                    step = torch.linalg.solve(decouple(curvature[free][:, free], active), g)
                except RuntimeError:
                    continue
                decrement = float(g @ step)  # 2 × the expected NLL decrease (MINUIT's EDM is half of it)
                if decrement >= 0:
                    break
            if step is None or not decrement >= 0:
                return None
            if 0.5 * decrement < edm:
                return theta
            f0, t = float(nll.detach()), 1.0
            while t > 1e-6:
                trial = theta.clone()
                trial[free] = torch.minimum(torch.maximum(theta[free] - t * step, lo), hi)
                with torch.no_grad():
                    if float(model.nll(trial, observed)) <= f0:
                        break
                t *= 0.5
            else:
                return None
            theta = trial
    return None


def best_fit(model: TemplateModel, observed: Tensor, fixed: Optional[Dict[str, float]] = None,
             start: Optional[Tensor] = None) -> Tensor:
    """The parameters that minimise the NLL of ``observed``: θ̂, or θ̂̂ with the ``fixed`` parameters held at their
    values, from ``start`` (default θ⁰); a detached float64 vector. Newton's method with the exact Hessian first
    (a few ms near the minimum), MIGRAD if that does not converge; :class:`FailedMinimizationError` if neither does.
    ``model`` must be graph-free (``model.detached()``)."""
    fixed = dict(fixed or {})
    theta = (model.nominal() if start is None else start).detach().clone().to(torch.float64)
    for k, v in fixed.items():
        theta[model.index(k)] = v
    if len(fixed) == len(model.parameters):  # nothing left to profile
        return theta
    free = torch.tensor([i for i, n in enumerate(model.parameter_names) if n not in fixed])
    found = _newton_fit(model, observed, theta, free)
    if found is not None:
        return found
    m = _minuit(model, observed, fixed)
    m.tol = 1e-6  # EDM < 1e-9: the envelope-theorem gradient is first order in the fit's residual error
    m.values = theta.numpy().tolist()
    for k, v in fixed.items():
        m.values[k] = v
    m.migrad()
    if not m.valid:
        raise FailedMinimizationError(f"conditional fit at {fixed} did not converge: {m.fmin}")
    return torch.as_tensor(np.asarray(m.values), dtype=torch.float64)
