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

from ..exceptions import InvalidModelSpecError
from .interpolation import NORM_INTERPOLATIONS, code1, code1_slope, code4, code4_slope, code4p, code4p_slope

__all__ = [
    "Parameter",
    "ShapeSystematic",
    "NormSystematic",
    "StatError",
    "TemplateModel",
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
            raise InvalidModelSpecError(f"Parameter {self.name!r}: constraint width must be > 0, got {self.constraint}")


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
    ``factor_down`` at ``nominal - step`` of ``parameter``, interpolated with pyhf ``code4`` (default) or ``code1``
    (κ^α) in between and beyond."""

    parameter: str
    process: str
    factor_up: float
    factor_down: float
    step: float = 1.0
    interpolation: str = "code4"


@dataclass
class StatError:
    """Barlow–Beeston-lite Monte Carlo statistical uncertainty (pyhf ``staterror``, combine ``autoMCStats``): one
    factor γ_i per bin multiplies the summed expected counts of ``processes`` in that bin; γ_i has nominal 1 and a
    Gaussian constraint of width δ_i = √(Σ_p σ²_{p,i}) / Σ_p ν_{p,i}, the relative MC uncertainty of those
    processes' total at the nominal point (pyhf's definition).

    Args:
        processes: the processes estimated from finite MC samples (the rows γ multiplies).
        uncertainty: ``[len(processes), n_bins]`` absolute MC uncertainty σ_{p,i} = √(Σ w²) of each process in each
            bin, in events (differentiable: soft templates give a σ that depends on the network).

    The model adds one parameter ``staterror_<channel>[<bin>]`` per bin whose σ is > 0 (after the other
    parameters); bins where every σ is 0 get none.
    """

    processes: Sequence[str]
    uncertainty: Tensor


def stack_rows(rows: Sequence[Tensor]) -> Tensor:
    """``torch.stack(rows)``, except when ``rows`` are exactly the rows of one 2-D tensor in order (views, as
    ``list(base)`` gives): then that tensor itself, with no copy and no per-row autograd nodes (builders of
    many systematics make their templates as one block; this keeps the training step's backward short)."""
    base = rows[0]._base if rows and isinstance(rows[0], Tensor) else None
    if (base is not None and base.dim() == 2 and base.shape[0] == len(rows) and base.is_contiguous()
            and all(r._base is base and r.shape == base.shape[1:] and r.storage_offset() == base.storage_offset()
                    + i * base.stride(0) for i, r in enumerate(rows))):
        return base
    return torch.stack(list(rows))


def _masked_products(mask: Tensor, values: Tensor) -> Tensor:
    """Row-wise Π_k values_k over the columns k where ``mask[:, k]`` (1 where none), by explicit products.
    ``torch.prod``'s backward divides by the product, which cancels catastrophically in second derivatives when a
    factor is near 0 (a signal strength fitted at its bound 0 gave ∂²NLL/∂μ² = 0 instead of 0.81)."""
    out = torch.ones(mask.shape[0], dtype=values.dtype, device=values.device)
    for k in range(mask.shape[1]):
        out = out * torch.where(mask[:, k], values[k], torch.ones_like(out))
    return out


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
        processes: process (sample) names, in the order of the rows of ``templates``.
        templates: ``[n_processes, n_bins]`` nominal templates, fraction of each process's yield per bin. Several
            channels are one row of bins, channel after channel (``channels``); a process absent from a channel
            has zeros there.
        yields: per process, either a fixed expected number of events or the name of a parameter whose value *is*
            the yield (e.g. ``{"signal": "s", "background": 1000.0}``).
        parameters: the floating parameters, in the order of the parameter vector θ. Parameters held fixed are
            simply not listed.
        poi: name of the parameter of interest, or several names (the first is the primary one: ``poi``,
            ``poi_index``; all are in ``pois``).
        shape_systematics / norm_systematics: the nuisance effects; their ``parameter`` must be in ``parameters``.
        factors: per process, parameters that multiply its yield (pyhf ``normfactor``: signal strengths μ, free
            background normalisations), ``{"ggH": ["mu_ggH"], "ttbar": ["k_tt"]}``; dimensionless, nominal 1
            unless the parameter says otherwise.
        staterror: the per-bin MC statistical factors (:class:`StatError`).
        channels: ``(name, n_bins)`` of each channel, in bin order; default one channel ``"summary"``.
    """

    processes: Sequence[str]
    templates: Tensor
    yields: Mapping[str, Union[float, str]]
    parameters: Sequence[Parameter]
    poi: Union[str, Sequence[str]]
    shape_systematics: Sequence[ShapeSystematic] = field(default_factory=list)
    norm_systematics: Sequence[NormSystematic] = field(default_factory=list)
    factors: Mapping[str, Sequence[str]] = field(default_factory=dict)
    staterror: Optional[StatError] = None
    channels: Optional[Sequence[Tuple[str, int]]] = None

    def __post_init__(self) -> None:
        self.processes = list(self.processes)
        self.parameters = list(self.parameters)
        self.pois = [self.poi] if isinstance(self.poi, str) else list(self.poi)
        if not self.pois:
            raise InvalidModelSpecError("the model needs at least one parameter of interest")
        if len(set(self.pois)) != len(self.pois):
            raise InvalidModelSpecError(f"duplicate parameters of interest {self.pois}")
        self.poi = self.pois[0]
        names = [p.name for p in self.parameters]
        if len(set(names)) != len(names):
            raise InvalidModelSpecError(f"duplicate parameter names in {names}")
        if len(set(self.processes)) != len(self.processes):
            raise InvalidModelSpecError(f"duplicate process names in {self.processes}")
        if not isinstance(self.templates, Tensor):
            raise InvalidModelSpecError(f"templates must be a torch tensor, got {type(self.templates).__name__}")
        if not self.templates.is_floating_point():
            raise InvalidModelSpecError(f"templates must be floating point, got {self.templates.dtype}")
        if self.templates.dim() != 2 or self.templates.shape[0] != len(self.processes):
            raise InvalidModelSpecError(
                f"templates must be [n_processes={len(self.processes)}, n_bins], got {tuple(self.templates.shape)}"
            )
        for poi in self.pois:
            if poi not in names:
                raise InvalidModelSpecError(f"poi {poi!r} is not among the parameters {names}")
        index = {n: i for i, n in enumerate(names)}
        proc_index = {p: i for i, p in enumerate(self.processes)}
        missing = set(self.processes) - set(self.yields)
        if missing or set(self.yields) - set(self.processes):
            raise InvalidModelSpecError(
                f"yields must name exactly the processes {self.processes}, got {sorted(self.yields)}"
            )
        dev, dt = self.templates.device, self.templates.dtype
        n_bins = self.templates.shape[1]
        if self.channels is None:
            self.channels = [("summary", n_bins)]
        self.channels = [(str(c), int(n)) for c, n in self.channels]
        if sum(n for _, n in self.channels) != n_bins:
            raise InvalidModelSpecError(f"channels {self.channels} do not add up to the templates' {n_bins} bins")
        for p in self.processes:
            v = self.yields[p]
            if isinstance(v, str) and v not in index:
                raise InvalidModelSpecError(f"yield of process {p!r} refers to unknown parameter {v!r}")
        self._yield_param = torch.tensor(
            [index.get(v, -1) if isinstance(v, str) else -1 for v in (self.yields[p] for p in self.processes)],
            device=dev,
        )
        self._yield_fixed = torch.tensor(
            [0.0 if isinstance(v, str) else float(v) for v in (self.yields[p] for p in self.processes)],
            device=dev,
            dtype=dt,
        )
        self._yield_is_param = self._yield_param >= 0
        self.factors = {p: list(f) for p, f in dict(self.factors).items()}
        rows, pars = [], []
        for p, fs in self.factors.items():
            if p not in proc_index:
                raise InvalidModelSpecError(f"factors given for unknown process {p!r}; processes are {self.processes}")
            if len(set(fs)) != len(fs):
                raise InvalidModelSpecError(f"process {p!r} lists a factor twice: {fs}")
            for f in fs:
                if f not in index:
                    raise InvalidModelSpecError(f"factor {f!r} of process {p!r} is not among the parameters {names}")
                rows.append(proc_index[p])
                pars.append(index[f])
        self._factor_rows = torch.tensor(rows, dtype=torch.long, device=dev)
        self._factor_par = torch.tensor(pars, dtype=torch.long, device=dev)
        self._factor_member = (
            torch.arange(len(self.processes), device=dev)[:, None] == self._factor_rows[None, :]
        )  # [n_processes, n_pairs]
        # pair k's "other factors of the same process" mask, for ∂y/∂θ_f without dividing by θ_f
        self._factor_others = (self._factor_rows[:, None] == self._factor_rows[None, :]) & ~torch.eye(
            len(rows), dtype=torch.bool, device=dev
        )
        for s in list(self.shape_systematics) + list(self.norm_systematics):
            if s.parameter not in index:
                raise InvalidModelSpecError(f"systematic on {s.process!r} refers to unknown parameter {s.parameter!r}")
            if s.process not in proc_index:
                raise InvalidModelSpecError(f"systematic {s.parameter!r} refers to unknown process {s.process!r}")
            if not s.step > 0:
                raise InvalidModelSpecError(f"systematic {s.parameter!r} on {s.process!r}: step must be > 0")
        for s in self.shape_systematics:
            if s.shift_up.shape != (n_bins,) or s.shift_down.shape != (n_bins,):
                raise InvalidModelSpecError(
                    f"shape systematic {s.parameter!r} on {s.process!r}: shift_up/shift_down must have shape "
                    f"({n_bins},), got {tuple(s.shift_up.shape)} / {tuple(s.shift_down.shape)}"
                )
        for s in self.norm_systematics:
            if s.interpolation not in NORM_INTERPOLATIONS:
                raise InvalidModelSpecError(
                    f"normalisation systematic {s.parameter!r} on {s.process!r}: interpolation must be one of "
                    f"{NORM_INTERPOLATIONS}, got {s.interpolation!r}"
                )
        self._index = index
        self._nominal = torch.tensor([p.nominal for p in self.parameters], device=dev, dtype=dt)
        self._constrained = torch.tensor([p.constraint is not None for p in self.parameters], device=dev)
        self._sigma = torch.tensor([p.constraint or 1.0 for p in self.parameters], device=dev, dtype=dt)
        if self.shape_systematics:
            self._shape_proc = torch.tensor([proc_index[s.process] for s in self.shape_systematics], device=dev)
            self._shape_par = torch.tensor([index[s.parameter] for s in self.shape_systematics], device=dev)
            self._shape_step = torch.tensor([s.step for s in self.shape_systematics], device=dev, dtype=dt)
            self._shape_up = stack_rows([s.shift_up for s in self.shape_systematics])
            self._shape_down = stack_rows([s.shift_down for s in self.shape_systematics])
        if self.norm_systematics:
            self._norm_proc = torch.tensor([proc_index[s.process] for s in self.norm_systematics], device=dev)
            self._norm_par = torch.tensor([index[s.parameter] for s in self.norm_systematics], device=dev)
            self._norm_step = torch.tensor([s.step for s in self.norm_systematics], device=dev, dtype=dt)
            self._norm_up = torch.tensor([s.factor_up for s in self.norm_systematics], device=dev, dtype=dt)
            self._norm_down = torch.tensor([s.factor_down for s in self.norm_systematics], device=dev, dtype=dt)
            self._norm_code1 = torch.tensor([s.interpolation == "code1" for s in self.norm_systematics], device=dev)
            if (self._norm_up <= 0).any() or (self._norm_down <= 0).any():
                raise InvalidModelSpecError("normalisation factors must be > 0")
        self._check_values()
        self._gamma_bins: Optional[Tensor] = None
        self._n_given = len(self.parameters)
        if self.staterror is not None:
            self._setup_staterror(proc_index, dev, dt)
        self._auxdata: Optional[Tensor] = None  # constraint centres, when not θ⁰ (with_auxdata)

    def _check_values(self) -> None:
        """Nominal templates finite and ≥ 0, shifted templates finite: one vectorised test (this runs on every
        training batch); only when it fails are the rows looked at, to name the process or systematic at fault."""
        rows = [self.templates.detach()]
        if self.shape_systematics:
            rows += [self._shape_up.detach(), self._shape_down.detach()]
        values = torch.cat(rows) if len(rows) > 1 else rows[0]
        n = len(self.processes)
        if bool(torch.isfinite(values).all() & (values[:n] >= 0).all()):  # one host sync per model
            return
        for p, t in zip(self.processes, self.templates.detach()):
            bad = (~torch.isfinite(t)).nonzero().flatten().tolist()
            if bad:
                raise InvalidModelSpecError(f"template of process {p!r} has non-finite bins {bad}")
            if (t < 0).any():
                raise InvalidModelSpecError(f"template of process {p!r} has negative bins "
                                            f"{(t < 0).nonzero().flatten().tolist()}: expected counts cannot be < 0")
        for s in self.shape_systematics:
            for label, t in (("shift_up", s.shift_up), ("shift_down", s.shift_down)):
                bad = (~torch.isfinite(t.detach())).nonzero().flatten().tolist()
                if bad:
                    raise InvalidModelSpecError(
                        f"{label} template of systematic {s.parameter!r} on {s.process!r} has non-finite bins {bad}")

    # ------------------------------------------------------------------------------------------------------------
    @property
    def parameter_names(self) -> list:
        return [p.name for p in self.parameters]

    @property
    def poi_index(self) -> int:
        """Position of the (primary) POI in θ."""
        return self._index[self.pois[0]]  # the primary POI

    @property
    def poi_indices(self) -> list:
        """Positions of every POI in θ, in the order of ``pois``."""
        return [self._index[p] for p in self.pois]

    @property
    def n_bins(self) -> int:
        return self.templates.shape[1]

    def index(self, name: str) -> int:
        """Position of parameter ``name`` in θ."""
        try:
            return self._index[name]
        except KeyError:
            raise InvalidModelSpecError(f"unknown parameter {name!r}; parameters are {self.parameter_names}") from None

    def _setup_staterror(self, proc_index: Mapping[str, int], dev, dt) -> None:
        se = self.staterror
        assert se is not None  # called only when the model has one
        unknown = [p for p in se.processes if p not in proc_index]
        if unknown or len(set(se.processes)) != len(se.processes):
            raise InvalidModelSpecError(f"staterror processes {list(se.processes)}: unknown or repeated names {unknown}")
        sigma = se.uncertainty
        if not isinstance(sigma, Tensor) or sigma.shape != (len(se.processes), self.n_bins):
            got = tuple(sigma.shape) if isinstance(sigma, Tensor) else type(sigma).__name__
            raise InvalidModelSpecError(f"staterror uncertainty must be a [{len(se.processes)}, {self.n_bins}] tensor, got {got}")
        if not torch.isfinite(sigma.detach()).all() or (sigma.detach() < 0).any():
            raise InvalidModelSpecError("staterror uncertainties must be finite and >= 0")
        rows = torch.tensor([proc_index[p] for p in se.processes], dtype=torch.long, device=dev)
        self._gamma_procs = torch.zeros(len(self.processes), dtype=torch.bool, device=dev)
        self._gamma_procs[rows] = True
        nu_mc = self.process_expected(self._nominal)[rows].sum(0)  # before γ exists: the nominal MC counts
        total = torch.sqrt((sigma.to(dt) ** 2).sum(0))
        has = (total.detach() > 0) & (nu_mc.detach() > 0)
        bins = has.nonzero().squeeze(1)
        delta = total[bins] / nu_mc[bins]
        names = []
        for c, sl in self.channel_slices().items():
            names += [f"staterror_{c}[{i}]" for i in range(sl.stop - sl.start)]
        clash = {names[int(i)] for i in bins} & set(self._index)
        if clash:
            raise InvalidModelSpecError(f"parameter names {sorted(clash)} are reserved for the staterror factors")
        gammas = [Parameter(names[int(i)], 1.0, constraint=max(float(d), 1e-300)) for i, d in zip(bins, delta.detach())]
        start = len(self.parameters)
        self.parameters = list(self.parameters) + gammas
        self._index.update({g.name: start + k for k, g in enumerate(gammas)})
        self._gamma_bins = bins
        self._gamma_par = torch.arange(start, start + len(gammas), device=dev)
        self._nominal = torch.cat([self._nominal, torch.ones(len(gammas), dtype=dt, device=dev)])
        self._constrained = torch.cat([self._constrained, torch.ones(len(gammas), dtype=torch.bool, device=dev)])
        self._sigma = torch.cat([self._sigma, delta.to(dt)])  # differentiable w.r.t. the templates
        self.gamma_widths = delta

    def channel_slices(self) -> dict:
        """Channel name → slice of its bins."""
        out, start = {}, 0
        assert self.channels is not None  # __post_init__ fills in the default
        for name, n in self.channels:
            out[name] = slice(start, start + n)
            start += n
        return out

    def detached(self, dtype: torch.dtype = torch.float64) -> "TemplateModel":
        """A copy whose templates carry no autograd graph, in ``dtype`` (fits never backprop into a network)."""
        from dataclasses import replace

        def d(t: Tensor) -> Tensor:
            return t.detach().to(dtype)

        staterror = self.staterror
        if staterror is not None:
            staterror = replace(staterror, uncertainty=d(staterror.uncertainty))
        out = replace(
            self,
            templates=d(self.templates),
            poi=list(self.pois),
            parameters=self.parameters[: self._n_given],
            staterror=staterror,
            shape_systematics=[
                replace(s, shift_up=d(s.shift_up), shift_down=d(s.shift_down)) for s in self.shape_systematics
            ],
            norm_systematics=list(self.norm_systematics),
        )
        if self._auxdata is not None:
            out._auxdata = self._auxdata.detach().to(dtype)
        return out

    @property
    def auxdata(self) -> Tensor:
        """The constraint centres ("global observables", pyhf's auxdata), one per parameter in parameter units:
        θ⁰ unless set by :meth:`with_auxdata` (unconstrained parameters' entries are ignored)."""
        return (self._nominal if self._auxdata is None else self._auxdata).clone()

    def with_auxdata(self, auxdata: Tensor) -> "TemplateModel":
        """A copy whose Gaussian constraints are centred on ``auxdata`` (one value per parameter, in parameter
        units) instead of θ⁰: the auxiliary measurements of a pseudo-experiment, where they are randomised with the
        main data. Only the constraint terms move; θ⁰ stays the point the shape and normalisation systematics
        interpolate around and the default start of fits."""
        import copy

        aux = torch.as_tensor(auxdata, dtype=self._nominal.dtype, device=self._nominal.device)
        if aux.shape != self._nominal.shape:
            raise InvalidModelSpecError(
                f"auxdata must have one value per parameter, shape ({len(self.parameters)},) for "
                f"{self.parameter_names}; got shape {tuple(aux.shape)}")
        if not torch.isfinite(aux).all():
            raise InvalidModelSpecError(f"auxdata has non-finite values: {aux.tolist()}")
        out = copy.copy(self)
        out._auxdata = aux.detach()
        return out

    def nominal(self) -> Tensor:
        """θ⁰, the parameter values at which Asimov data are generated."""
        return self._nominal.clone()

    def check_theta(self, theta: Tensor) -> Tensor:
        """``theta`` as a tensor of this model's dtype, after checking it has one finite value per parameter."""
        theta = torch.as_tensor(theta, dtype=self._nominal.dtype, device=self._nominal.device)
        if theta.shape != self._nominal.shape:
            raise InvalidModelSpecError(
                f"theta must have one value per parameter, shape ({len(self.parameters)},) for "
                f"{self.parameter_names}; got shape {tuple(theta.shape)}"
            )
        if not torch.isfinite(theta.detach()).all():
            raise InvalidModelSpecError(f"theta has non-finite values: {theta.detach().tolist()}")
        return theta

    def _norm_log_factors(self, theta: Tensor) -> Tuple[Tensor, Tensor]:
        """(z, f(z)) of every normalisation systematic, f from its interpolation code."""
        z = (theta[self._norm_par] - self._nominal[self._norm_par]) / self._norm_step
        f = torch.where(
            self._norm_code1, code1(z, self._norm_up, self._norm_down), code4(z, self._norm_up, self._norm_down)
        )
        return z, f

    def _norm_slopes(self, z: Tensor) -> Tensor:
        return torch.where(
            self._norm_code1,
            code1_slope(z, self._norm_up, self._norm_down),
            code4_slope(z, self._norm_up, self._norm_down),
        )

    def _factor_products(self, values: Tensor) -> Tensor:
        """Π of the normfactor ``values`` (one per (process, factor) pair) of each process, ``[n_processes]``."""
        return _masked_products(self._factor_member, values)

    def _base_yields(self, theta: Tensor) -> Tensor:
        """Yields before normalisation systematics: fixed or parameter yields times their normfactors."""
        y = torch.where(self._yield_is_param, theta[self._yield_param.clamp(min=0)], self._yield_fixed)
        if len(self._factor_rows):
            y = y * self._factor_products(theta[self._factor_par])
        return y

    def process_yields(self, theta: Tensor) -> Tensor:
        """Expected events per process, ``[n_processes]``, including normfactors and normalisation systematics."""
        y = self._base_yields(theta)
        if self.norm_systematics:
            _, f = self._norm_log_factors(theta)
            y = y * torch.exp(torch.zeros_like(y).index_add(0, self._norm_proc, torch.log(f)))
        return y

    def process_templates(self, theta: Tensor) -> Tensor:
        """Templates at θ, ``[n_processes, n_bins]``, including shape systematics."""
        t = self.templates
        if self.shape_systematics:
            z = (theta[self._shape_par] - self._nominal[self._shape_par]) / self._shape_step
            delta = code4p(z[:, None], t[self._shape_proc], self._shape_up, self._shape_down)
            t = t.index_add(0, self._shape_proc, delta)
        return t

    def _gamma_multiplier(self, theta: Tensor, like: Tensor) -> Optional[Tensor]:
        """``[n_processes, n_bins]`` factor γ_i on the staterror processes' bins, 1 elsewhere (None: no staterror)."""
        if self._gamma_bins is None or not len(self._gamma_bins):
            return None
        gamma = torch.ones(like.shape[1], dtype=like.dtype, device=like.device)
        gamma = gamma.index_put((self._gamma_bins,), theta[self._gamma_par])
        return torch.where(self._gamma_procs[:, None], gamma[None, :], torch.ones_like(like))

    def process_expected(self, theta: Tensor) -> Tensor:
        """Expected events per process and bin, ``[n_processes, n_bins]``."""
        counts = self.process_yields(theta)[:, None] * self.process_templates(theta)
        mult = self._gamma_multiplier(theta, counts)
        return counts if mult is None else counts * mult

    def expected(self, theta: Tensor) -> Tensor:
        """Expected events per bin ν(θ), ``[n_bins]``."""
        return self.process_expected(theta).sum(0)

    def jacobian(self, theta: Tensor) -> Tensor:
        """∂ν/∂θ, ``[n_bins, n_par]``, in closed form (equal to ``torch.func.jacfwd(self.expected)``, tested, but
        without the transform overhead: this is on the hot path of every INFERNO training step)."""
        n_par = len(self.parameters)
        base = self._base_yields(theta)
        factor = torch.ones_like(base)
        if self.norm_systematics:
            z_n, f_n = self._norm_log_factors(theta)
            factor = torch.exp(torch.zeros_like(base).index_add(0, self._norm_proc, torch.log(f_n)))
        yields = base * factor
        shapes = self.process_templates(theta)  # [P, B]
        mult = self._gamma_multiplier(theta, shapes)
        eff = shapes if mult is None else shapes * mult  # templates with the γ factors applied
        jac_t = torch.zeros(n_par, shapes.shape[1], dtype=shapes.dtype, device=shapes.device)  # [n_par, B]
        raw = torch.where(self._yield_is_param, torch.ones_like(base), self._yield_fixed)
        if len(self._factor_rows):
            vals = theta[self._factor_par]
            others = _masked_products(self._factor_others, vals)
            own_param = torch.where(
                self._yield_is_param[self._factor_rows], theta[self._yield_param.clamp(min=0)][self._factor_rows],
                self._yield_fixed[self._factor_rows],
            )
            coef = own_param * others * factor[self._factor_rows]  # ∂y_p/∂θ_f
            jac_t = jac_t.index_add(0, self._factor_par, coef[:, None] * eff[self._factor_rows])
            raw = raw * self._factor_products(vals)
        # yield parameters: dν/dy_p = (normfactors) F_p S_p
        if bool(self._yield_is_param.any()):
            rows = self._yield_is_param.nonzero().squeeze(1)
            jac_t = jac_t.index_add(0, self._yield_param[rows], (raw * factor)[rows, None] * eff[rows])
        if self.shape_systematics:
            z_s = (theta[self._shape_par] - self._nominal[self._shape_par]) / self._shape_step
            slope = code4p_slope(z_s[:, None], self.templates[self._shape_proc], self._shape_up, self._shape_down)
            if mult is not None:
                slope = slope * mult[self._shape_proc]
            contrib = yields[self._shape_proc, None] * slope / self._shape_step[:, None]
            jac_t = jac_t.index_add(0, self._shape_par, contrib)
        if self.norm_systematics:
            g = self._norm_slopes(z_n) / (f_n * self._norm_step)  # d log f / dθ
            contrib = (yields[self._norm_proc] * g)[:, None] * eff[self._norm_proc]
            jac_t = jac_t.index_add(0, self._norm_par, contrib)
        if mult is not None:
            mc = (yields[:, None] * shapes * self._gamma_procs[:, None]).sum(0)  # [B]
            rows_g = torch.zeros_like(jac_t).index_put((self._gamma_par, self._gamma_bins), mc[self._gamma_bins])
            jac_t = jac_t + rows_g
        return jac_t.transpose(0, 1)

    def asimov(self, theta: Optional[Tensor] = None) -> Tensor:
        """Asimov data: the expected counts at θ (default: the nominal parameters). Not detached: where the
        templates depend on a network, so do the Asimov data (the data of an expected-uncertainty calculation are
        a function of the templates); fits detach the model first."""
        return self.expected(self._nominal if theta is None else self.check_theta(theta))

    def constraint_nll(self, theta: Tensor, auxdata: Optional[Tensor] = None) -> Tensor:
        """Gaussian constraint terms Σ ½((θ-a)/σ)² over constrained parameters, centred on the auxdata a: ``auxdata``
        if given, else the model's (θ⁰ unless :meth:`with_auxdata` moved them)."""
        if auxdata is None:
            auxdata = self._nominal if self._auxdata is None else self._auxdata
        pull = (theta - auxdata) / self._sigma
        return 0.5 * (pull * pull * self._constrained).sum(-1)

    def nll(self, theta: Tensor, observed: Tensor, auxdata: Optional[Tensor] = None) -> Tensor:
        """Negative log-likelihood of ``observed`` counts at θ (Poisson relative to saturated + constraints centred
        on ``auxdata``, default the model's :attr:`auxdata`)."""
        return poisson_nll(self.expected(theta), observed) + self.constraint_nll(theta, auxdata)

    def constraint_precision(self) -> Tensor:
        """Diagonal of the constraint terms' Hessian, 1/σ² for constrained parameters and 0 otherwise."""
        return torch.where(self._constrained, 1.0 / (self._sigma * self._sigma), torch.zeros_like(self._sigma))
