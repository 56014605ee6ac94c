"""From an :class:`~lumin_inferno.analysis.spec.Analysis` and the learned summary's templates to the binned
likelihood (:class:`~lumin_inferno.statistics.TemplateModel`) that training, evaluation and export all use.

The model's bins are the summary channel's bins followed by each fixed channel's. Each process is one row: its
expected counts are its summary yield times its summary template, then its yields in each fixed channel (zeros
where it is absent), so normfactors and normalisation systematics act on the process in every channel (pyhf's
and combine's convention for a modifier shared by name). Parameter order: the POIs, the other factors, the
nuisances, then the staterror γ's.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List, Mapping, Optional, Tuple

import torch
from torch import Tensor

from ..exceptions import InvalidModelSpecError
from ..statistics.likelihood import TEMPLATE_FLOOR, NormSystematic, Parameter, ShapeSystematic, StatError, TemplateModel
from .spec import Analysis

__all__ = ["SummaryTemplates", "template_model", "NUISANCE_BOUNDS"]

#: fit range of every nuisance α (pyhf's histosys/normsys default).
NUISANCE_BOUNDS: Tuple[float, float] = (-5.0, 5.0)


@dataclass
class SummaryTemplates:
    """The learned summary channel's templates of each process (soft in training, hard in evaluation).

    Args:
        nominal: process → ``[n_bins]`` fraction of the process's ``nominal_yield`` per bin (sums to 1).
        shifted: (process, systematic) → (shift_up, shift_down) templates, same convention (fractions of the
            *nominal* yield, so a weight systematic may change the rate). Not required to be ≥ 0: exact INFERNO
            passes T ± ∂T/∂α, linear templates whose only use is their slope at nominal.
        mc_variance: process → ``[n_bins]`` Σ (per-event contribution to the template)², i.e. the MC variance of
            the template in the same fraction units (events² after multiplying by nominal_yield²); needed when the
            analysis has ``mc_stat``.
    """

    nominal: Mapping[str, Tensor]
    shifted: Mapping[Tuple[str, str], Tuple[Tensor, Tensor]]
    mc_variance: Optional[Mapping[str, Tensor]] = None


def _fixed_cache(analysis: Analysis, dtype: torch.dtype, device) -> Dict[tuple, Tensor]:
    """Per analysis, dtype and device: the fixed channels' yields as tensors (built once, not on every batch). Kept
    on the (frozen) Analysis object itself, outside its fields, so it never enters equality or JSON."""
    store = analysis.__dict__.setdefault("_tensor_cache", {})
    return store.setdefault((dtype, str(device)), {})


class _Checks:
    """Validation of the templates of one model: type and shape per template as it is read. Their values (finite,
    ≥ 0 where required) are tested once, vectorised, by the :class:`TemplateModel` they build (this runs on every
    training batch); only when that test fails does :meth:`explain` look at each template, to name the analysis's
    process and systematic at fault. The model sees templates plus the floor (:data:`TEMPLATE_FLOOR`, 1e-7 of a
    process's events per bin), so a bin at most that far below 0 (a rounding-level sum of negative NLO weights) is
    accepted as the empty bin it is."""

    def __init__(self, n_bins: int):
        self.n_bins = n_bins
        self.items: List[Tuple[str, Tensor, bool]] = []

    def __call__(self, what: str, t: Tensor, n_bins: int, nonnegative: bool = True) -> Tensor:
        if not isinstance(t, Tensor):
            raise InvalidModelSpecError(f"{what} must be a torch tensor, got {type(t).__name__}")
        if t.shape != (n_bins,):
            raise InvalidModelSpecError(f"{what} must have shape ({n_bins},), got {tuple(t.shape)}")
        self.items.append((what, t, nonnegative))
        return t

    def explain(self) -> None:
        """Raise the named error of the first template with non-finite (or, where required, negative) bins."""
        for what, t, nonneg in self.items:
            _check(what, t, self.n_bins, nonneg)


def _check(what: str, t: Tensor, n_bins: int, nonnegative: bool = True) -> Tensor:
    if not isinstance(t, Tensor):
        raise InvalidModelSpecError(f"{what} must be a torch tensor, got {type(t).__name__}")
    if t.shape != (n_bins,):
        raise InvalidModelSpecError(f"{what} must have shape ({n_bins},), got {tuple(t.shape)}")
    d = t.detach()
    if not torch.isfinite(d).all():
        raise InvalidModelSpecError(f"{what} has non-finite bins {torch.nonzero(~torch.isfinite(d)).flatten().tolist()}")
    if nonnegative and (d < 0).any():
        raise InvalidModelSpecError(
            f"{what} has negative bins {torch.nonzero(d < 0).flatten().tolist()} (negative event weights may make "
            "single events negative, not a bin's sum)"
        )
    return t


def template_model(analysis: Analysis, templates: SummaryTemplates, floor: float = TEMPLATE_FLOOR) -> TemplateModel:
    """The binned likelihood of ``analysis`` with the learned summary's ``templates`` (differentiable w.r.t.
    them). ``floor`` is added to every summary-channel bin of every process (:data:`TEMPLATE_FLOOR`)."""
    a = analysis
    n_sum = a.n_bins
    procs = [p.name for p in a.processes]
    some = next(iter(templates.nominal.values()), None)
    dtype = some.dtype if isinstance(some, Tensor) and some.is_floating_point() else torch.float64
    device = some.device if isinstance(some, Tensor) else None
    zeros_sum = torch.zeros(n_sum, dtype=dtype, device=device)

    cache = _fixed_cache(a, dtype, device)

    def fixed(values) -> Tensor:
        key = values if isinstance(values, tuple) else tuple(values)
        if key not in cache:
            cache[key] = torch.as_tensor(values, dtype=dtype, device=device)
        return cache[key]

    def cr_part(p: str, syst: Optional[str] = None, direction: int = 0) -> List[Tensor]:
        parts = []
        for c in a.channels:
            if p not in c.yields:
                parts.append(torch.zeros(c.n_bins, dtype=dtype, device=device))
            elif syst is not None and p in c.variations.get(syst, {}):
                parts.append(fixed(c.variations[syst][p][direction]))
            else:
                parts.append(fixed(c.yields[p]))
        return parts

    unknown = [k for k in templates.nominal if k not in procs]
    if unknown:
        raise InvalidModelSpecError(f"templates given for unknown process(es) {unknown}")
    check = _Checks(n_sum)
    rows, totals = [], {}
    for p in a.processes:
        if p.labels:
            if p.name not in templates.nominal:
                raise InvalidModelSpecError(f"no summary template for process {p.name!r}")
            t = check(f"summary template of process {p.name!r}", templates.nominal[p.name], n_sum)
            assert p.nominal_yield is not None  # Process requires it of a process with labels
            summary = p.nominal_yield * (t + floor)
        else:
            summary = zeros_sum
        row = torch.cat([summary, *cr_part(p.name)])
        total = float(row.detach().sum())
        if not total > 0:
            check.explain()  # a non-finite or negative template is the first thing to name
            raise InvalidModelSpecError(f"process {p.name!r} has no expected events in any channel")
        totals[p.name] = total
        rows.append(row / total)
    nominal = torch.stack(rows)

    # every (process, shape systematic) pair in one block per direction: one stack, one affine map, one cat, so a
    # training step's graph does not grow by a dozen nodes per pair (tens of systematics)
    pairs = [(s, a.process(pname)) for s in a.shape_systematics() for pname in s.processes]
    shapes = []
    if pairs:
        blocks = []
        scale = torch.tensor([p.nominal_yield or 0.0 for _, p in pairs], dtype=dtype, device=device)[:, None]
        norm = torch.tensor([totals[p.name] for _, p in pairs], dtype=dtype, device=device)[:, None]
        for direction, label in ((0, "shift_up"), (1, "shift_down")):
            summaries = []
            for s, p in pairs:
                if p.labels:
                    key = (p.name, s.name)
                    if key not in templates.shifted:
                        raise InvalidModelSpecError(
                            f"no {label} summary template for systematic {s.name!r} ({s.kind}) of process {p.name!r}"
                        )
                    summaries.append(check(f"{label} template of systematic {s.name!r}, process {p.name!r}",
                                           templates.shifted[key][direction], n_sum, nonnegative=False))
                else:
                    summaries.append(zeros_sum)  # no summary events: its scale (nominal yield) is 0
            summary = scale * (torch.stack(summaries) + floor)
            if a.channels:
                ckey = ("shape_cr", direction)
                if ckey not in cache:
                    cache[ckey] = torch.stack([torch.cat(cr_part(p.name, s.name, direction)) for s, p in pairs])
                summary = torch.cat([summary, cache[ckey]], dim=1)
            blocks.append(summary / norm)
        shapes = [ShapeSystematic(s.name, p.name, up, down, step=1.0)
                  for (s, p), up, down in zip(pairs, blocks[0].unbind(0), blocks[1].unbind(0))]
    norms: List[NormSystematic] = []
    for s in a.systematics_of("norm"):
        assert s.kappa_up is not None and s.kappa_down is not None  # Systematic sets both for kind "norm"
        norms += [NormSystematic(s.name, p, s.kappa_up, s.kappa_down, step=1.0, interpolation=s.interpolation)
                  for p in s.processes]
    staterror = None
    mc = [p for p in a.processes if p.mc_stat]
    if a.mc_stat and mc:
        sigma = []
        for p in mc:
            if p.labels:
                var = None if templates.mc_variance is None else templates.mc_variance.get(p.name)
                if var is None:
                    raise InvalidModelSpecError(
                        f"the analysis has mc_stat on but no MC variance of process {p.name!r}'s summary template "
                        "was given (set mc_stat=False on the analysis or the process to leave it out)"
                    )
                var = check(f"MC variance of process {p.name!r}", var, n_sum)
                assert p.nominal_yield is not None  # Process requires it of a process with labels
                summary = p.nominal_yield * torch.sqrt(var + floor * floor)
            else:
                summary = zeros_sum
            parts = [
                fixed(c.mc_uncertainty[p.name]) if p.name in c.mc_uncertainty
                else torch.zeros(c.n_bins, dtype=dtype, device=device)
                for c in a.channels
            ]
            sigma.append(torch.cat([summary, *parts]))
        staterror = StatError([p.name for p in mc], torch.stack(sigma))
    factors: Dict[str, List[str]] = {}
    for f in a.factors:
        for pname in f.processes:
            factors.setdefault(pname, []).append(f.name)
    ordered = [f for f in a.factors if f.poi] + [f for f in a.factors if not f.poi]
    params = [Parameter(f.name, f.nominal, constraint=f.constraint, bounds=f.bounds) for f in ordered]
    params += [
        Parameter(n, 0.0, constraint=a.nuisance(n).constraint, bounds=NUISANCE_BOUNDS) for n in a.nuisance_names()
    ]
    try:  # TemplateModel tests every value once; on failure, name the analysis's template at fault
        return TemplateModel(
            processes=procs,
            templates=nominal,
            yields=totals,
            parameters=params,
            poi=a.poi_names,
            shape_systematics=shapes,
            norm_systematics=norms,
            factors=factors,
            staterror=staterror,
            channels=[(a.summary, n_sum)] + [(c.name, c.n_bins) for c in a.channels],
        )
    except InvalidModelSpecError:
        check.explain()
        raise
