"""Maximum-likelihood fits and profile likelihoods of a :class:`TemplateModel`, with iminuit (MINUIT2).

Why iminuit: it is the minimiser HEP fits are validated against; MIGRAD + HESSE + MINOS give the profile-likelihood
interval directly (MINOS *is* the ΔNLL = ½ crossing with every other parameter re-minimised), and the results carry
validity flags that we turn into :class:`~lumin_inferno.exceptions.FailedMinimization` instead of returning a silent
number. The NLL and its exact gradient come from torch (float64), so MIGRAD needs no finite differences.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Optional, Sequence

import numpy as np
import torch
from iminuit import Minuit
from torch import Tensor

from ..exceptions import FailedMinimization
from .hessian import nll_hessian, poi_variance
from .likelihood import TemplateModel

__all__ = ["FitResult", "ProfileInterval", "fit", "profile_interval", "profile_scan"]


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
    """

    poi: str
    best_fit: float
    lower: float
    upper: float
    sigma_hesse: float

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
        (g,) = torch.autograd.grad(model.nll(th, observed), th)
        return g.numpy()

    return nll, grad


def _detached(model: TemplateModel) -> TemplateModel:
    """A float64 copy of the model whose templates carry no autograd graph (fits never backprop into a network)."""
    from dataclasses import replace

    def d(t: Tensor) -> Tensor:
        return t.detach().to(torch.float64)

    return TemplateModel(
        processes=model.processes,
        templates=d(model.templates),
        yields=model.yields,
        parameters=model.parameters,
        poi=model.poi,
        shape_systematics=[replace(s, shift_up=d(s.shift_up), shift_down=d(s.shift_down)) for s in model.shape_systematics],
        norm_systematics=list(model.norm_systematics),
    )


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


def fit(model: TemplateModel, observed: Optional[Tensor] = None, fixed: Optional[Dict[str, float]] = None) -> FitResult:
    """Minimise the NLL with MIGRAD (default data: Asimov); ``fixed`` holds parameters at given values."""
    model = _detached(model)
    observed = model.asimov() if observed is None else observed.detach().to(torch.float64)
    m = _minuit(model, observed, fixed)
    m.migrad()
    if not m.valid:
        raise FailedMinimization(f"MIGRAD did not converge: {m.fmin}")
    m.hesse()  # MINUIT's numerical HESSE: errors are approximate; use nll_hessian for exact curvature
    return FitResult(dict(zip(m.parameters, m.values)), dict(zip(m.parameters, m.errors)), float(m.fval), m.valid)


def profile_interval(model: TemplateModel, observed: Optional[Tensor] = None) -> ProfileInterval:
    """Profile-likelihood interval of the POI at ΔNLL = ½ with every nuisance profiled (MIGRAD + MINOS).

    Default data: Asimov at the nominal point, so the interval is the *expected* uncertainty.
    """
    model = _detached(model)
    observed = model.asimov() if observed is None else observed.detach().to(torch.float64)
    m = _minuit(model, observed)
    m.migrad()
    if not m.valid:
        raise FailedMinimization(f"MIGRAD did not converge: {m.fmin}")
    m.minos(model.poi)
    me = m.merrors[model.poi]
    if not me.is_valid:
        raise FailedMinimization(f"MINOS failed for {model.poi!r}: {me}")
    best = float(m.values[model.poi])
    theta_hat = torch.as_tensor(np.asarray(m.values), dtype=torch.float64)
    sigma_hesse = float(poi_variance(nll_hessian(model, observed, theta_hat), model.poi_index).sqrt())
    return ProfileInterval(model.poi, best, best + me.lower, best + me.upper, sigma_hesse)


def profile_scan(model: TemplateModel, poi_values: Sequence[float], observed: Optional[Tensor] = None) -> np.ndarray:
    """ΔNLL of the profile likelihood at each POI value (nuisances re-minimised at each point, warm-started from
    the previous one); ``ΔNLL = ½`` crossings give the 68 % interval."""
    model = _detached(model)
    observed = model.asimov() if observed is None else observed.detach().to(torch.float64)
    best = _minuit(model, observed)
    best.migrad()
    if not best.valid:
        raise FailedMinimization(f"MIGRAD did not converge: {best.fmin}")
    nll_min = best.fval
    if len(model.parameters) == 1:  # nothing to profile
        nll, _ = _objective(model, observed)
        return np.asarray([nll(np.asarray([float(v)])) - nll_min for v in poi_values])
    m = _minuit(model, observed, fixed={model.poi: float(poi_values[0])})
    m.values = best.values
    out = []
    for v in poi_values:
        m.values[model.poi] = float(v)
        m.migrad()
        if not m.valid:
            raise FailedMinimization(f"profile fit at {model.poi} = {v} did not converge: {m.fmin}")
        out.append(m.fval - nll_min)
    return np.asarray(out)
