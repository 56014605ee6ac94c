"""Binned Poisson likelihood over processes × bins, with a parameter of interest and nuisance parameters.

Pure torch, no LUMIN: the same :class:`TemplateModel` serves the INFERNO training loss (soft, differentiable
templates from a network) and the evaluation of a trained summary statistic (hard-assigned histograms).

Expected counts in bin *i* are

.. math::  \\nu_i(\\theta) = \\sum_p y_p(\\theta)\\, \\prod_n f_{n,p}(\\theta)\\,
           \\big[T_{p,i} + \\sum_k \\Delta_{k,p,i}(z_k)\\big],

with :math:`y_p` the process yield (a fixed number of events, or a parameter such as the signal yield *s* or a
free background yield *b*), :math:`f_{n,p}` normalisation systematics (pyhf ``code4``), :math:`T_p` the nominal
template (fraction of the process's nominal yield in each bin) and :math:`\\Delta` shape systematics (pyhf
``code4p``) in :math:`z_k = (\\theta_k - \\theta_k^0)/\\text{step}_k`, i.e. the parameter measured in units of the
template shift. The negative log-likelihood is the Poisson term plus Gaussian constraints
:math:`\\tfrac12((\\theta_k - \\theta_k^0)/\\sigma_k)^2` for constrained parameters.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping, Optional, Sequence, Tuple, Union

import torch
from torch import Tensor

from ..exceptions import InvalidModelSpec
from .interpolation import code4, code4_slope, code4p, code4p_slope

__all__ = [
    "Parameter",
    "ShapeSystematic",
    "NormSystematic",
    "TemplateModel",
    "signal_background_model",
    "linearised_signal_background",
    "poisson_nll",
    "TEMPLATE_FLOOR",
]

#: Fraction of a process's yield added to every bin of every template (nominal, shift_up and shift_down alike),
#: in training and in evaluation, so that an empty bin never yields 1/ν = ∞. Small enough to be invisible
#: (1e-7 × 1000 background events = 1e-4 events per bin).
TEMPLATE_FLOOR: float = 1e-7


@dataclass(frozen=True)
class Parameter:
    """A parameter of the likelihood.

    Args:
        name: unique name, e.g. ``"s"``, ``"b"``, ``"r"``, ``"lambda"``.
        nominal: value at which Asimov data are generated, in the parameter's own units (events for a yield,
            physical units for a shape nuisance).
        constraint: width σ of a Gaussian constraint centred on ``nominal``, same units; ``None`` = unconstrained.
        bounds: optional (low, high) limits for fits.
    """

    name: str
    nominal: float
    constraint: Optional[float] = None
    bounds: Optional[Tuple[Optional[float], Optional[float]]] = None

    def __post_init__(self) -> None:
        if self.constraint is not None and not self.constraint > 0:
            raise InvalidModelSpec(f"Parameter {self.name!r}: constraint width must be > 0, got {self.constraint}")


@dataclass
class ShapeSystematic:
    """A shape systematic of one process: its templates at ``nominal ± step`` of ``parameter``.

    ``shift_up``/``shift_down`` are the process's templates (same normalisation convention as the nominal one:
    fraction of the *nominal* yield per bin) with the parameter moved by +step / -step.
    """

    parameter: str
    process: str
    shift_up: Tensor
    shift_down: Tensor
    step: float = 1.0


@dataclass
class NormSystematic:
    """A normalisation systematic: the process yield is multiplied by ``factor_up`` at ``nominal + step`` and by
    ``factor_down`` at ``nominal - step`` of ``parameter`` (pyhf ``code4`` in between and beyond)."""

    parameter: str
    process: str
    factor_up: float
    factor_down: float
    step: float = 1.0


def poisson_nll(expected: Tensor, observed: Tensor) -> Tensor:
    """Poisson negative log-likelihood relative to the saturated model, summed over bins (unitless).

    :math:`\\sum_i \\nu_i - n_i + n_i \\log(n_i/\\nu_i)`; zero when ν = n, so fits work with numbers near zero.
    Expected counts are floored at 1e-12 so that a fit stepping into an unphysical region (templates extrapolated
    to negative counts) sees a very large NLL instead of NaN.
    """
    expected = expected.clamp_min(1e-12)
    return (expected - observed + torch.xlogy(observed, observed) - torch.xlogy(observed, expected)).sum(-1)


@dataclass
class TemplateModel:
    """A binned likelihood built from per-process templates.

    Args:
        processes: process names, in the order of the rows of ``templates``.
        templates: ``[n_processes, n_bins]`` nominal templates, fraction of each process's yield per bin.
        yields: per process, either a fixed expected number of events or the name of a parameter whose value *is*
            the yield (e.g. ``{"signal": "s", "background": 1000.0}``).
        parameters: the floating parameters, in the order of the parameter vector θ. Parameters held fixed are
            simply not listed.
        poi: name of the parameter of interest.
        shape_systematics / norm_systematics: the nuisance effects; their ``parameter`` must be in ``parameters``.
    """

    processes: Sequence[str]
    templates: Tensor
    yields: Mapping[str, Union[float, str]]
    parameters: Sequence[Parameter]
    poi: str
    shape_systematics: Sequence[ShapeSystematic] = field(default_factory=list)
    norm_systematics: Sequence[NormSystematic] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.processes = list(self.processes)
        self.parameters = list(self.parameters)
        names = [p.name for p in self.parameters]
        if len(set(names)) != len(names):
            raise InvalidModelSpec(f"duplicate parameter names in {names}")
        if len(set(self.processes)) != len(self.processes):
            raise InvalidModelSpec(f"duplicate process names in {self.processes}")
        if self.templates.dim() != 2 or self.templates.shape[0] != len(self.processes):
            raise InvalidModelSpec(
                f"templates must be [n_processes={len(self.processes)}, n_bins], got {tuple(self.templates.shape)}"
            )
        if self.poi not in names:
            raise InvalidModelSpec(f"poi {self.poi!r} is not among the parameters {names}")
        index = {n: i for i, n in enumerate(names)}
        proc_index = {p: i for i, p in enumerate(self.processes)}
        missing = set(self.processes) - set(self.yields)
        if missing or set(self.yields) - set(self.processes):
            raise InvalidModelSpec(
                f"yields must name exactly the processes {self.processes}, got {sorted(self.yields)}"
            )
        dev, dt = self.templates.device, self.templates.dtype
        self._yield_param = torch.tensor(
            [index.get(v, -1) if isinstance(v, str) else -1 for v in (self.yields[p] for p in self.processes)],
            device=dev,
        )
        for p in self.processes:
            v = self.yields[p]
            if isinstance(v, str) and v not in index:
                raise InvalidModelSpec(f"yield of process {p!r} refers to unknown parameter {v!r}")
        self._yield_fixed = torch.tensor(
            [0.0 if isinstance(v, str) else float(v) for v in (self.yields[p] for p in self.processes)],
            device=dev,
            dtype=dt,
        )
        self._yield_is_param = self._yield_param >= 0
        n_bins = self.templates.shape[1]
        for s in list(self.shape_systematics) + list(self.norm_systematics):
            if s.parameter not in index:
                raise InvalidModelSpec(f"systematic on {s.process!r} refers to unknown parameter {s.parameter!r}")
            if s.process not in proc_index:
                raise InvalidModelSpec(f"systematic {s.parameter!r} refers to unknown process {s.process!r}")
            if not s.step > 0:
                raise InvalidModelSpec(f"systematic {s.parameter!r} on {s.process!r}: step must be > 0")
        for s in self.shape_systematics:
            if s.shift_up.shape != (n_bins,) or s.shift_down.shape != (n_bins,):
                raise InvalidModelSpec(
                    f"shape systematic {s.parameter!r} on {s.process!r}: shift_up/shift_down must have shape "
                    f"({n_bins},), got {tuple(s.shift_up.shape)} / {tuple(s.shift_down.shape)}"
                )
        self._index = index
        self._nominal = torch.tensor([p.nominal for p in self.parameters], device=dev, dtype=dt)
        self._constrained = torch.tensor([p.constraint is not None for p in self.parameters], device=dev)
        self._sigma = torch.tensor([p.constraint or 1.0 for p in self.parameters], device=dev, dtype=dt)
        if self.shape_systematics:
            self._shape_proc = torch.tensor([proc_index[s.process] for s in self.shape_systematics], device=dev)
            self._shape_par = torch.tensor([index[s.parameter] for s in self.shape_systematics], device=dev)
            self._shape_step = torch.tensor([s.step for s in self.shape_systematics], device=dev, dtype=dt)
            self._shape_up = torch.stack([s.shift_up for s in self.shape_systematics])
            self._shape_down = torch.stack([s.shift_down for s in self.shape_systematics])
        if self.norm_systematics:
            self._norm_proc = torch.tensor([proc_index[s.process] for s in self.norm_systematics], device=dev)
            self._norm_par = torch.tensor([index[s.parameter] for s in self.norm_systematics], device=dev)
            self._norm_step = torch.tensor([s.step for s in self.norm_systematics], device=dev, dtype=dt)
            self._norm_up = torch.tensor([s.factor_up for s in self.norm_systematics], device=dev, dtype=dt)
            self._norm_down = torch.tensor([s.factor_down for s in self.norm_systematics], device=dev, dtype=dt)
            if (self._norm_up <= 0).any() or (self._norm_down <= 0).any():
                raise InvalidModelSpec("normalisation factors must be > 0")

    # ------------------------------------------------------------------------------------------------------------
    @property
    def parameter_names(self) -> list:
        return [p.name for p in self.parameters]

    @property
    def poi_index(self) -> int:
        return self._index[self.poi]

    @property
    def n_bins(self) -> int:
        return self.templates.shape[1]

    def index(self, name: str) -> int:
        """Position of parameter ``name`` in θ."""
        try:
            return self._index[name]
        except KeyError:
            raise InvalidModelSpec(f"unknown parameter {name!r}; parameters are {self.parameter_names}") from None

    def nominal(self) -> Tensor:
        """θ⁰, the parameter values at which Asimov data are generated."""
        return self._nominal.clone()

    def process_yields(self, theta: Tensor) -> Tensor:
        """Expected events per process, ``[n_processes]``, including normalisation systematics."""
        param_yields = theta[self._yield_param.clamp(min=0)]
        y = torch.where(self._yield_is_param, param_yields, self._yield_fixed)
        if self.norm_systematics:
            z = (theta[self._norm_par] - self._nominal[self._norm_par]) / self._norm_step
            log_f = torch.log(code4(z, self._norm_up, self._norm_down))
            y = y * torch.exp(torch.zeros_like(y).index_add(0, self._norm_proc, log_f))
        return y

    def process_templates(self, theta: Tensor) -> Tensor:
        """Templates at θ, ``[n_processes, n_bins]``, including shape systematics."""
        t = self.templates
        if self.shape_systematics:
            z = (theta[self._shape_par] - self._nominal[self._shape_par]) / self._shape_step
            delta = code4p(z[:, None], t[self._shape_proc], self._shape_up, self._shape_down)
            t = t.index_add(0, self._shape_proc, delta)
        return t

    def expected(self, theta: Tensor) -> Tensor:
        """Expected events per bin ν(θ), ``[n_bins]``."""
        return (self.process_yields(theta)[:, None] * self.process_templates(theta)).sum(0)

    def jacobian(self, theta: Tensor) -> Tensor:
        """∂ν/∂θ, ``[n_bins, n_par]``, in closed form (equal to ``torch.func.jacfwd(self.expected)``, tested, but
        without the transform overhead: this is on the hot path of every INFERNO training step)."""
        n_par = len(self.parameters)
        base = torch.where(self._yield_is_param, theta[self._yield_param.clamp(min=0)], self._yield_fixed)
        factor = torch.ones_like(base)
        if self.norm_systematics:
            z_n = (theta[self._norm_par] - self._nominal[self._norm_par]) / self._norm_step
            f_n = code4(z_n, self._norm_up, self._norm_down)
            factor = torch.exp(torch.zeros_like(base).index_add(0, self._norm_proc, torch.log(f_n)))
        yields = base * factor
        shapes = self.process_templates(theta)  # [P, B]
        jac_t = torch.zeros(n_par, shapes.shape[1], dtype=shapes.dtype, device=shapes.device)  # [n_par, B]
        # yield parameters: dν/dy_p = F_p S_p
        if bool(self._yield_is_param.any()):
            rows = self._yield_is_param.nonzero().squeeze(1)
            jac_t = jac_t.index_add(0, self._yield_param[rows], factor[rows, None] * shapes[rows])
        if self.shape_systematics:
            z_s = (theta[self._shape_par] - self._nominal[self._shape_par]) / self._shape_step
            slope = code4p_slope(z_s[:, None], self.templates[self._shape_proc], self._shape_up, self._shape_down)
            contrib = yields[self._shape_proc, None] * slope / self._shape_step[:, None]
            jac_t = jac_t.index_add(0, self._shape_par, contrib)
        if self.norm_systematics:
            g = code4_slope(z_n, self._norm_up, self._norm_down) / (f_n * self._norm_step)  # d log f / dθ
            contrib = (yields[self._norm_proc] * g)[:, None] * shapes[self._norm_proc]
            jac_t = jac_t.index_add(0, self._norm_par, contrib)
        return jac_t.transpose(0, 1)

    def asimov(self) -> Tensor:
        """Asimov data: the expected counts at the nominal parameters (detached: data are constants)."""
        return self.expected(self._nominal).detach()

    def constraint_nll(self, theta: Tensor) -> Tensor:
        """Gaussian constraint terms Σ ½((θ-θ⁰)/σ)² over constrained parameters."""
        pull = (theta - self._nominal) / self._sigma
        return 0.5 * (pull * pull * self._constrained).sum(-1)

    def nll(self, theta: Tensor, observed: Tensor) -> Tensor:
        """Negative log-likelihood of ``observed`` counts at θ (Poisson relative to saturated + constraints)."""
        return poisson_nll(self.expected(theta), observed) + self.constraint_nll(theta)

    def constraint_precision(self) -> Tensor:
        """Diagonal of the constraint terms' Hessian, 1/σ² for constrained parameters and 0 otherwise."""
        return torch.where(self._constrained, 1.0 / (self._sigma * self._sigma), torch.zeros_like(self._sigma))


def signal_background_model(
    templates: Tensor,
    poi: Parameter,
    background: Union[float, Parameter],
    shape_nuisances: Sequence[Parameter] = (),
    shape_systematics: Sequence[ShapeSystematic] = (),
) -> TemplateModel:
    """The two-process model of INFERNO: ``templates`` rows (signal, background); the signal yield is the POI, the
    background yield a fixed number or a (free / constrained) parameter; shape nuisances act on the background."""
    params = [poi]
    if isinstance(background, Parameter):
        params.append(background)
        bkg_yield: Union[str, float] = background.name
    else:
        bkg_yield = float(background)
    return TemplateModel(
        processes=["signal", "background"],
        templates=templates,
        yields={"signal": poi.name, "background": bkg_yield},
        parameters=params + list(shape_nuisances),
        poi=poi.name,
        shape_systematics=list(shape_systematics),
    )


def linearised_signal_background(
    signal: Tensor,
    background_template: Tensor,
    background_slopes: Tensor,
    poi: Parameter,
    background: Union[float, Parameter],
    shape_nuisances: Sequence[Parameter] = (),
) -> Tuple[Tensor, Tensor, Tensor]:
    r"""ν, ∂ν/∂θ and the constraint precisions at the nominal point of the two-process INFERNO model whose
    background template moves linearly in the shape nuisances, :math:`B + \sum_k (\theta_k - \theta^0_k)\,
    \partial B/\partial\theta_k`, in closed form (no :class:`TemplateModel` is built; this is the hot path of every
    INFERNO training step).

    Equal to ``model.expected``, ``model.jacobian`` and ``model.constraint_precision`` of
    :func:`signal_background_model` with ``ShapeSystematic(shift_up=B + slope, shift_down=B - slope, step=1)``
    (tested). Parameter order: POI (the signal yield), the background yield if it is a :class:`Parameter`, then
    ``shape_nuisances``.

    Args:
        signal / background_template: ``[n_bins]`` templates (fraction of the process's yield per bin).
        background_slopes: ``[n_bins, n_shape]`` ∂B/∂θ_k per unit of each shape nuisance.
    Returns:
        ``(nu [n_bins], jacobian [n_bins, n_par], precision [n_par])`` with ν in events.
    """
    s0 = float(poi.nominal)
    b_free = isinstance(background, Parameter)
    b0 = float(background.nominal) if b_free else float(background)
    nu = s0 * signal + b0 * background_template
    columns = [signal[:, None]] + ([background_template[:, None]] if b_free else [])
    if len(shape_nuisances):
        if background_slopes.shape != (len(signal), len(shape_nuisances)):
            raise InvalidModelSpec(
                f"background_slopes must be [n_bins={len(signal)}, n_shape={len(shape_nuisances)}], got "
                f"{tuple(background_slopes.shape)}"
            )
        columns.append(b0 * background_slopes)
    params = [poi] + ([background] if b_free else []) + list(shape_nuisances)
    precision = torch.tensor(
        [0.0 if p.constraint is None else 1.0 / p.constraint**2 for p in params], dtype=nu.dtype, device=nu.device
    )
    return nu, torch.cat(columns, dim=1), precision
