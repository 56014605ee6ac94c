"""Figures of merit of searches: the expected (Asimov) discovery significance Z₀ and the expected CLs upper limit on
a signal strength, in the asymptotic approximation of Cowan, Cranmer, Gross & Vitells (arXiv:1007.1727), with every
other parameter profiled. Both are differentiable w.r.t. the model's templates, so they can be training losses.

How they are differentiated (exactly, no unrolled optimiser):

* **Z₀.** On the Asimov data at the nominal point (signal strengths at their nominal, 1), the unconditional fit *is*
  the nominal point, so q₀ = 2[NLL(μ = 0, θ̂̂) − NLL(θ_nominal)]. θ̂̂, the fit with the signal strengths at 0, comes
  from MIGRAD; by the envelope theorem dq₀/dφ = 2[∂NLL/∂φ(θ̂̂) − ∂NLL/∂φ(θ_nominal)] (∂NLL/∂θ = 0 at both minima),
  so both NLLs are evaluated at those fixed points with the templates (and the Asimov data they imply) in the
  graph. Z₀ = √q₀.
* **Expected CLs limit.** With q̃_μ on the background-only Asimov data (μ̂ = 0 there), the median expected CLs is
  2(1 − Φ(√q̃_μ,A)) (Cowan et al. eq. 65 with the median of the background-only distribution of the test statistic,
  as pyhf's asymptotic calculator gives it), so the expected upper limit at CL 1 − α is the root μ_up of
  q̃_μ,A(μ) = Φ⁻¹(1 − α/2)². The root is found with conditional fits; its derivative by implicit differentiation,
  dμ_up/dφ = −(∂q̃/∂φ)/(∂q̃/∂μ) at (μ_up, θ̂̂), both partial derivatives by the envelope theorem. The returned tensor
  is μ_up − (q̃(μ_up) − c)/∂q̃/∂μ with the denominator detached: its value is μ_up and its gradient the implicit one.

The POIs of a model with several signal strengths: the tested ones (``pois``, default the model's primary POI) are set
to 0 together in the background-only hypothesis (Z₀) or scanned together as one signal strength (limit: all tested
POIs set to μ); every other parameter, other POIs included, is profiled.
"""

from __future__ import annotations

from typing import Optional, Sequence

import numpy as np
import torch
from scipy.stats import norm
from torch import Tensor

from ..exceptions import FailedMinimizationError, InvalidModelSpecError
from .fit import best_fit, parameter_bounds
from .likelihood import TemplateModel

__all__ = ["discovery_significance", "expected_cls_upper_limit"]


def _tested(model: TemplateModel, pois: Optional[Sequence[str]]) -> list:
    names = [model.poi] if pois is None else list(pois)
    if not names or any(p not in model.pois for p in names):
        raise InvalidModelSpecError(f"tested POIs {names} must be among the model's POIs {model.pois}")
    return names


def _signal_sensitive(model: TemplateModel, tested: list, theta: Tensor) -> None:
    """A named error when the tested signal strengths change no expected count (no signal-sensitive bin)."""
    with torch.no_grad():
        jac = model.jacobian(theta.to(model.templates.dtype))
    if not bool((jac[:, [model.index(p) for p in tested]].abs() > 0).any()):
        raise InvalidModelSpecError(f"the model has no bin sensitive to the tested POI(s) {tested}: no signal expected")


def discovery_significance(model: TemplateModel, pois: Optional[Sequence[str]] = None) -> Tensor:
    """Expected (Asimov) discovery significance Z₀ = √q₀ for the signal of ``pois`` (default the primary POI) at
    its nominal strength, every other parameter profiled; a 0-d tensor, differentiable w.r.t. the templates
    (module docstring). Raises :class:`InvalidModelSpecError` if no bin is sensitive to the signal."""
    tested = _tested(model, pois)
    theta0 = model.nominal().detach().to(torch.float64)
    _signal_sensitive(model, tested, theta0)
    asimov = model.asimov()  # in the graph: the data depend on the templates too
    fixed_model = model.detached()
    hat_hat = best_fit(fixed_model, asimov.detach().to(torch.float64), {p: 0.0 for p in tested}, theta0)
    dtype = model.templates.dtype
    q0 = 2.0 * (model.nll(hat_hat.to(dtype), asimov) - model.nll(theta0.to(dtype), asimov))
    return torch.sqrt(torch.clamp(q0, min=0.0))


def expected_cls_upper_limit(model: TemplateModel, pois: Optional[Sequence[str]] = None, cl: float = 0.95,
                             xtol: float = 1e-6) -> Tensor:
    """Median expected CLs upper limit at confidence level ``cl`` on the signal strength of ``pois`` (default the
    primary POI; several are scanned together) from q̃_μ on the background-only Asimov data, every other parameter
    profiled; a 0-d tensor in POI units, differentiable w.r.t. the templates by implicit differentiation (module
    docstring)."""
    if not 0.0 < cl < 1.0:
        raise InvalidModelSpecError(f"cl must be in (0, 1), got {cl}")
    tested = _tested(model, pois)
    dtype = model.templates.dtype
    theta_b = model.nominal().detach().to(torch.float64).clone()
    for p in tested:
        theta_b[model.index(p)] = 0.0
    _signal_sensitive(model, tested, model.nominal().detach().to(torch.float64))
    asimov_b = model.expected(theta_b.to(dtype))  # background-only Asimov data, in the graph
    fixed_model = model.detached()
    data = asimov_b.detach().to(torch.float64)
    nll_b = float(fixed_model.nll(theta_b, data))
    target = float(norm.ppf(1.0 - 0.5 * (1.0 - cl))) ** 2
    idx = torch.tensor([model.index(p) for p in tested])
    hi_bound = float(parameter_bounds(model)[1][idx].min())

    def q_and_slope(mu: float, start: Tensor):
        """q̃(μ) − target at θ̂̂(μ), and dq̃/dμ = 2 ∂NLL/∂μ there (envelope theorem)."""
        th = best_fit(fixed_model, data, {p: mu for p in tested}, start)
        with torch.enable_grad():  # also when the caller runs under torch.no_grad()
            mu_t = torch.tensor(mu, dtype=torch.float64, requires_grad=True)
            nll = fixed_model.nll(th.index_put((idx,), mu_t.expand(len(idx))), data)
            (slope,) = torch.autograd.grad(nll, mu_t)
        return 2.0 * (float(nll.detach()) - nll_b) - target, 2.0 * float(slope), th

    # Newton's method on q̃(μ) = target from the Fisher estimate μ ≈ √target σ_A (q̃ is close to quadratic), kept
    # inside a bracket [lo, hi] that bisection falls back to; each step is one warm-started conditional fit
    from .hessian import fisher_information, poi_variance

    with torch.no_grad():
        sigma_a = float(poi_variance(fisher_information(fixed_model, theta_b), int(idx[0])).sqrt())
    lo, hi = 0.0, hi_bound
    mu = min(float(np.sqrt(target)) * sigma_a, 0.5 * hi_bound)
    th = theta_b
    for _ in range(100):
        f, slope, th = q_and_slope(mu, th)
        if f > 0:
            hi = min(hi, mu)
        else:
            lo = max(lo, mu)
        if abs(f) < 1e-10 * target or hi - lo < xtol * max(mu, 1e-12):
            break
        step = mu - f / slope if slope > 0 else None
        if step is None or not lo < step < hi:
            step = 0.5 * (lo + hi) if np.isfinite(hi) else 2.0 * mu
        mu = step
    else:
        raise FailedMinimizationError(f"no expected CLs limit found: q̃_μ does not reach its threshold below {hi_bound}")
    if f < 0 and not np.isfinite(hi):
        raise FailedMinimizationError(f"q̃_μ stays below its CLs threshold up to the POI bound {hi_bound}")
    mu_up = mu
    dq_dmu = slope
    # implicit derivative: value μ_up, gradient −(∂q̃/∂φ)/(∂q̃/∂μ), both at (μ_up, θ̂̂)
    q_graph = 2.0 * (model.nll(th.to(dtype), asimov_b) - model.nll(theta_b.to(dtype), asimov_b))
    return mu_up - (q_graph - q_graph.detach()) / dq_dmu  # value μ_up; gradient −(∂q̃/∂φ)/(∂q̃/∂μ)
