"""Pseudo-experiments (toys) of a binned likelihood and the frequentist coverage of its profile-likelihood intervals.

A toy is what a repeated experiment would record: main-measurement counts n_i ~ Poisson(ν_i(θ_true)) and, for every
constrained parameter, an auxiliary measurement a_j ~ N(θ_true,j, σ_j) (pyhf's "auxdata", combine's "global
observables"; the frequentist convention of both tools). Each toy is fitted with its constraints centred on its a_j
(:meth:`~lumin_inferno.statistics.TemplateModel.with_auxdata`).

For every POI μ the toy records, with every other parameter profiled:

* μ̂ and its Hessian error σ̂ = √(H⁻¹)_μμ at the minimum, hence the pull (μ̂ − μ_true)/σ̂;
* the profile-likelihood ratio at the true value, q(μ_true) = 2[NLL(μ_true, θ̂̂) − NLL(θ̂)].

The profile-likelihood interval {μ : q(μ) < c} covers μ_true exactly when q(μ_true) < c (Wilks: c = 1 for 68.27 %,
c = 3.84 for 95 %), so coverage needs two fits per POI and toy, not a MINOS scan.

:func:`fit_toys` fits many toys at once: Newton's method with the exact per-toy gradient and Hessian, vectorised over
toys with ``torch.func.vmap`` (one batched Hessian of 500 toys costs about what 20 single ones do); the few toys it
does not converge are refitted one by one by :func:`fit_toy` (Newton, then MIGRAD), so every toy gets the same
answer as the one-at-a-time path (tested), or a recorded failure.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from scipy.stats import binomtest, chi2
from torch import Tensor

from ..exceptions import FailedMinimizationError, InvalidModelSpecError
from .fit import best_fit, bound_active, decouple, parameter_bounds
from .hessian import check_observed, nll_hessian
from .likelihood import TemplateModel

__all__ = ["sample_toys", "ToyFit", "fit_toy", "fit_toys", "toy_arrays", "CoverageFraction", "coverage_fraction",
           "COVERAGE_LEVELS"]

#: confidence levels whose coverage is reported, and the q thresholds of their 1-D profile-likelihood intervals
COVERAGE_LEVELS: Dict[str, float] = {"68%": float(chi2.ppf(0.6827, 1)), "95%": float(chi2.ppf(0.95, 1))}


def sample_toys(model: TemplateModel, n_toys: int, theta: Optional[Tensor] = None,
                generator: Optional[torch.Generator] = None, randomise: Optional[Sequence[str]] = None
                ) -> Tuple[Tensor, Tensor]:
    """``n_toys`` pseudo-experiments of ``model`` at θ (default θ⁰), float64.

    Returns (observed ``[n_toys, n_bins]`` Poisson counts of ν(θ), auxdata ``[n_toys, n_par]``: a_j ~ N(θ_j, σ_j)
    for the constrained parameters named in ``randomise`` (default: every constrained one), θ_j otherwise).
    """
    if int(n_toys) < 1:
        raise InvalidModelSpecError(f"n_toys must be ≥ 1, got {n_toys}")
    model = model.detached()
    theta = model.nominal() if theta is None else model.check_theta(theta)
    with torch.no_grad():
        nu = model.expected(theta)
    observed = torch.poisson(nu.expand(int(n_toys), -1).contiguous(), generator=generator)
    names = model.parameter_names
    chosen = set(names if randomise is None else [randomise] if isinstance(randomise, str) else randomise)
    unknown = chosen - set(names)
    if unknown:
        raise InvalidModelSpecError(f"cannot randomise unknown parameter(s) {sorted(unknown)}; parameters are {names}")
    mask = torch.tensor([p.constraint is not None and p.name in chosen for p in model.parameters])
    sigma = torch.tensor([p.constraint or 0.0 for p in model.parameters], dtype=torch.float64)
    noise = torch.randn(int(n_toys), len(names), generator=generator, dtype=torch.float64)
    auxdata = theta + torch.where(mask, noise * sigma, torch.zeros_like(noise))
    return observed, auxdata


@dataclass
class ToyFit:
    """The fit of one toy, per POI (dicts keyed by POI name): best fit μ̂, Hessian error σ̂, q(μ_true); ``error`` is
    the message of a fit that failed (then the other fields are empty)."""

    best: Dict[str, float]
    sigma: Dict[str, float]
    q: Dict[str, float]
    error: Optional[str] = None

    def pull(self, poi: str, truth: float) -> float:
        """(μ̂ − μ_true)/σ̂."""
        return (self.best[poi] - truth) / self.sigma[poi]


def _true_pois(model: TemplateModel, truth: Optional[Dict[str, float]]) -> Dict[str, float]:
    """The true value of every POI: ``truth``, by default θ⁰; a named error for a POI without one."""
    truth = {p: float(model.nominal()[model.index(p)]) for p in model.pois} if truth is None else dict(truth)
    missing = [p for p in model.pois if p not in truth]
    if missing:
        raise InvalidModelSpecError(f"no true value given for POI(s) {missing}")
    return truth


def fit_toy(model: TemplateModel, observed: Tensor, auxdata: Optional[Tensor] = None,
            truth: Optional[Dict[str, float]] = None) -> ToyFit:
    """Fit one toy: unconditional fit, Hessian errors at its minimum, and one conditional fit per POI at its true
    value (default θ⁰) for q(μ_true). A fit that does not converge gives a :class:`ToyFit` with ``error`` set, never
    a number."""
    model = model.detached()
    if auxdata is not None:
        model = model.with_auxdata(auxdata)
    observed = check_observed(model, observed)
    truth = _true_pois(model, truth)
    try:
        hat = best_fit(model, observed)
        nll_hat = float(model.nll(hat, observed))
        conditional = {}
        for p in model.pois:
            start = hat.clone()
            start[model.index(p)] = truth[p]
            hat_hat = best_fit(model, observed, {p: truth[p]}, start)
            conditional[p] = (hat_hat, float(model.nll(hat_hat, observed)))
        lowest = min(conditional.values(), key=lambda c: c[1])
        if lowest[1] < nll_hat:  # a conditional fit went lower: the unconditional minimum was a local one
            hat = best_fit(model, observed, start=lowest[0])
            nll_hat = float(model.nll(hat, observed))
        hess = nll_hessian(model, observed, hat)
        if not bool(torch.linalg.eigvalsh(hess).min() > 0):
            raise FailedMinimizationError("the best fit is not a minimum: the Hessian there is not positive definite")
        cov = torch.linalg.inv(hess)  # positive definite: every variance > 0
        return ToyFit({p: float(hat[model.index(p)]) for p in model.pois},
                      {p: float(cov[model.index(p), model.index(p)].sqrt()) for p in model.pois},
                      {p: max(2.0 * (conditional[p][1] - nll_hat), 0.0) for p in model.pois})
    except FailedMinimizationError as e:
        return ToyFit({}, {}, {}, error=str(e))


@dataclass
class CoverageFraction:
    """Fraction of toys whose interval covers the truth, with its Clopper–Pearson 68.27 % interval."""

    covered: int
    n: int
    low: float
    high: float

    @property
    def fraction(self) -> float:
        return self.covered / self.n if self.n else float("nan")


def coverage_fraction(q: Union[Sequence[float], np.ndarray], threshold: float) -> CoverageFraction:
    """Coverage of the intervals {q < threshold} from the q(μ_true) of successful toys (NaNs are failed toys and
    are left out; count them separately)."""
    values = np.asarray(q, dtype=float)
    values = values[np.isfinite(values)]
    k, n = int((values < threshold).sum()), len(values)
    if n == 0:
        return CoverageFraction(0, 0, float("nan"), float("nan"))
    ci = binomtest(k, n).proportion_ci(confidence_level=0.6827, method="exact")
    return CoverageFraction(k, n, float(ci.low), float(ci.high))


def toy_arrays(fits: List[ToyFit], pois: Sequence[str]) -> Dict[str, np.ndarray]:
    """Columns of many toy fits: ``best_<poi>``, ``sigma_<poi>``, ``q_<poi>`` (NaN where a fit failed) and
    ``failed`` (bool)."""
    out: Dict[str, np.ndarray] = {"failed": np.array([f.error is not None for f in fits], dtype=bool)}
    for p in pois:
        for key in ("best", "sigma", "q"):
            out[f"{key}_{p}"] = np.array([getattr(f, key).get(p, np.nan) for f in fits], dtype=float)
    return out


def _batched_newton(model: TemplateModel, theta: Tensor, observed: Tensor, auxdata: Tensor, free: Tensor,
                    max_iter: int = 40, edm: float = 1e-10) -> Tuple[Tensor, Tensor]:
    """Minimise each toy's NLL over the ``free`` parameters (bool mask) from ``theta`` ``[T, P]``: Newton steps on
    the exact Hessian (eigenvalues floored at their absolute values, so every step descends), a per-toy
    backtracking line search inside the bounds. Returns (θ̂ ``[T, P]``, converged ``[T]``: half the Newton
    decrement gᵀH⁻¹g below ``edm``, MINUIT's EDM)."""
    if not bool(free.any()):  # nothing to fit: every parameter is held
        return theta.clone(), torch.ones(len(theta), dtype=torch.bool)
    from torch.func import grad, hessian, vmap

    nll, g_fn, h_fn = vmap(model.nll), vmap(grad(model.nll)), vmap(hessian(model.nll))
    lo, hi = (b[free] for b in parameter_bounds(model))
    theta = theta.clone()
    done = torch.zeros(len(theta), dtype=torch.bool)
    failed = torch.zeros(len(theta), dtype=torch.bool)
    fidx = free.nonzero().squeeze(1)
    for _ in range(max_iter):
        act = (~done & ~failed).nonzero().squeeze(1)
        if len(act) == 0:
            break
        th, n, a = theta[act], observed[act], auxdata[act]
        g = g_fn(th, n, a)[:, fidx]
        h = h_fn(th, n, a)[:, fidx][:, :, fidx]
        finite = torch.isfinite(g).all(-1) & torch.isfinite(h).all(-1).all(-1)
        if not bool(finite.all()):  # a toy whose curvature is not finite fails alone, not the whole batch
            failed[act[~finite]] = True
            act, th, n, a, g, h = act[finite], th[finite], n[finite], a[finite], g[finite], h[finite]
            if len(act) == 0:
                break
        active = bound_active(th[:, fidx], g, lo, hi)  # held at a bound: no step, no part in the convergence test
        g = g.masked_fill(active, 0.0)
        h = decouple(h, active)
        evals, evecs = torch.linalg.eigh(h)
        evals = evals.abs().clamp_min(1e-12 * evals.abs().amax(-1, keepdim=True).clamp_min(1e-300))
        step = evecs @ ((evecs.transpose(1, 2) @ g.unsqueeze(-1)) / evals.unsqueeze(-1))
        step = step.squeeze(-1)
        decrement = (g * step).sum(-1)
        ok = torch.isfinite(decrement)
        conv = ok & (0.5 * decrement < edm)
        done[act[conv]] = True
        failed[act[~ok]] = True
        move = ok & ~conv
        if not move.any():
            continue
        act, th, n, a, step = act[move], th[move], n[move], a[move], step[move]
        f0 = nll(th, n, a)
        t = torch.ones(len(act), dtype=th.dtype)
        accepted = torch.zeros(len(act), dtype=torch.bool)
        new = th.clone()
        for _ in range(30):
            trial = th.clone()
            trial[:, fidx] = torch.minimum(torch.maximum(th[:, fidx] - t[:, None] * step, lo), hi)
            better = ~accepted & (nll(trial, n, a) <= f0)
            new[better] = trial[better]
            accepted |= better
            if accepted.all():
                break
            t = torch.where(accepted, t, 0.5 * t)
        theta[act] = new
        failed[act[~accepted]] = True
    return theta, done & ~failed


def fit_toys(model: TemplateModel, observed: Tensor, auxdata: Optional[Tensor] = None,
             truth: Optional[Dict[str, float]] = None) -> List[ToyFit]:
    """:func:`fit_toy` of every toy (``observed`` ``[T, n_bins]``, ``auxdata`` ``[T, n_par]``, default θ⁰ for all),
    vectorised over toys (module docstring); toys the batched fit does not converge go through :func:`fit_toy`."""
    model = model.detached()
    observed = torch.as_tensor(observed, dtype=torch.float64)
    n_toys = observed.shape[0] if observed.dim() == 2 else -1
    if observed.dim() != 2 or observed.shape[1] != model.n_bins:
        raise InvalidModelSpecError(f"observed must be [n_toys, {model.n_bins}], got {tuple(observed.shape)}")
    aux = model.auxdata.expand(n_toys, -1) if auxdata is None else torch.as_tensor(auxdata, dtype=torch.float64)
    if aux.shape != (n_toys, len(model.parameters)):
        raise InvalidModelSpecError(f"auxdata must be [{n_toys}, {len(model.parameters)}], got {tuple(aux.shape)}")
    truth = _true_pois(model, truth)
    from torch.func import hessian, vmap

    n_par = len(model.parameters)
    try:
        start = model.nominal().expand(n_toys, -1).clone()
        all_free = torch.ones(n_par, dtype=torch.bool)
        hat, good = _batched_newton(model, start, observed, aux, all_free)
        nll = vmap(model.nll)
        nll_hat = nll(hat, observed, aux)
        nll_cond = {}
        for p in model.pois:
            i = model.index(p)
            free = all_free.clone()
            free[i] = False
            s = hat.clone()
            s[:, i] = truth[p]
            hh, ok = _batched_newton(model, s, observed, aux, free)
            good &= ok
            nll_cond[p] = nll(hh, observed, aux)
            good &= nll_cond[p] >= nll_hat - 1e-9  # else the unconditional minimum was a local one: refit singly
        cov = torch.full((n_toys, n_par, n_par), float("nan"), dtype=torch.float64)
        idx = good.nonzero().squeeze(1)
        if len(idx):
            h = vmap(hessian(model.nll))(hat[idx], observed[idx], aux[idx])
            inv, info = torch.linalg.inv_ex(h)
            cov[idx] = inv
            # a saddle point passes the Newton decrement test (|eigenvalues|): refit those one by one, which fails them
            good[idx[(info != 0) | ~(torch.linalg.eigvalsh(h).amin(-1) > 0)]] = False
    except (RuntimeError, NotImplementedError):  # an operation vmap cannot batch: every toy on its own
        good = torch.zeros(n_toys, dtype=torch.bool)
        cov = torch.full((n_toys, n_par, n_par), float("nan"), dtype=torch.float64)
    out: List[ToyFit] = []
    for k in range(n_toys):
        if not bool(good[k]):  # a good toy's Hessian is positive definite: every variance > 0
            out.append(fit_toy(model, observed[k], aux[k], truth))
            continue
        out.append(ToyFit({p: float(hat[k, model.index(p)]) for p in model.pois},
                          {p: float(cov[k, model.index(p), model.index(p)].sqrt()) for p in model.pois},
                          {p: max(2.0 * float(nll_cond[p][k] - nll_hat[k]), 0.0) for p in model.pois}))
    return out

