"""Build a multi-process :class:`TemplateModel` from per-process nominal and ±1σ shifted templates.

Pure torch, no LUMIN. Used by approximate INFERNO (templates from the nominal and the shifted inputs of the same
events) and usable for any binned analysis with several backgrounds: each process has a yield (a number of events,
or a parameter such as the signal yield), shape systematics given as shift_up/shift_down templates (pyhf
``code4p``, additive) and normalisation systematics given as factors κ (pyhf ``code4``, log-normal style). A
nuisance that appears on several processes under the same name is **one** parameter, i.e. fully correlated.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Dict, List, Mapping, Optional, Sequence, Tuple, Union

import torch
from torch import Tensor

from ..exceptions import InvalidModelSpec
from .likelihood import TEMPLATE_FLOOR, NormSystematic, Parameter, ShapeSystematic, TemplateModel

__all__ = ["ProcessSpec", "NormFactor", "norm_factors", "multi_process_model", "nuisance_names"]

#: A normalisation uncertainty: κ (symmetric log-normal, ×κ at +1σ and ×1/κ at −1σ) or (κ_up, κ_down).
NormFactor = Union[float, Tuple[float, float]]

_NAME = re.compile(r"^[A-Za-z0-9_.\-]+$")


def norm_factors(value: NormFactor) -> Tuple[float, float]:
    """(κ_up, κ_down) of a normalisation uncertainty: a single κ means log-normal symmetric, (κ, 1/κ); a pair is
    taken as given (asymmetric, e.g. (1.10, 0.95) for +10 % / −5 %). Both must be > 0."""
    if isinstance(value, (tuple, list)):
        if len(value) != 2:
            raise InvalidModelSpec(f"an asymmetric normalisation uncertainty is (kappa_up, kappa_down), got {value}")
        up, down = float(value[0]), float(value[1])
    else:
        up = float(value)
        down = 1.0 / up if up > 0 else float("nan")
    if not (up > 0 and down > 0):
        raise InvalidModelSpec(f"normalisation factors must be > 0, got {value}")
    return up, down


@dataclass
class ProcessSpec:
    """One process of a binned model.

    Args:
        name: process name, e.g. ``"signal"``, ``"ttbar"``.
        expected_yield: expected events of the process at the nominal point: a number (held fixed), or the name of a
            parameter whose value *is* the yield (the POI for the signal, or a free / constrained background
            normalisation).
        shape_systematics: names of the shape nuisances acting on this process; the caller provides its
            shift_up/shift_down templates (the ±1σ shifted inputs or weights of this process's events).
        norm_systematics: nuisance name → κ or (κ_up, κ_down), multiplying the yield at ±1σ (pyhf ``code4``).
    """

    name: str
    expected_yield: Union[float, str]
    shape_systematics: Sequence[str] = ()
    norm_systematics: Mapping[str, NormFactor] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.shape_systematics = tuple(self.shape_systematics)
        self.norm_systematics = {k: norm_factors(v) for k, v in dict(self.norm_systematics).items()}
        for n in (self.name, *self.shape_systematics, *self.norm_systematics):
            if not isinstance(n, str) or not _NAME.match(n):
                raise InvalidModelSpec(f"process {self.name!r}: names must match [A-Za-z0-9_.-]+, got {n!r}")
        if len(set(self.shape_systematics)) != len(self.shape_systematics):
            raise InvalidModelSpec(f"process {self.name!r}: duplicate shape systematics {self.shape_systematics}")
        if not isinstance(self.expected_yield, str) and not float(self.expected_yield) > 0:
            raise InvalidModelSpec(f"process {self.name!r}: expected yield must be > 0, got {self.expected_yield}")


def nuisance_names(processes: Sequence[ProcessSpec]) -> List[str]:
    """All nuisance names of the processes (shape first, then normalisation), in order of first appearance; a name
    shared by several processes appears once (one correlated parameter)."""
    names: Dict[str, None] = {}
    for p in processes:
        for n in p.shape_systematics:
            names.setdefault(n)
    for p in processes:
        for n in p.norm_systematics:
            names.setdefault(n)
    return list(names)


def multi_process_model(
    processes: Sequence[ProcessSpec],
    templates: Mapping[str, Tensor],
    shifted_templates: Mapping[Tuple[str, str], Tuple[Tensor, Tensor]],
    poi: Parameter,
    parameters: Sequence[Parameter] = (),
    steps: Optional[Mapping[str, float]] = None,
    floor: float = TEMPLATE_FLOOR,
) -> TemplateModel:
    r"""The binned likelihood of several processes, ν_i(θ) = Σ_p y_p(θ) Π_n f_{n,p}(θ) [T_{p,i} + Σ_k Δ_{k,p,i}].

    Args:
        processes: the processes, e.g. signal + several backgrounds.
        templates: process name → nominal template ``[n_bins]``, fraction of the process's yield per bin.
        shifted_templates: (process, nuisance) → (shift_up, shift_down) templates of that process, same convention
            (fraction of the *nominal* yield, so a weight systematic may also change the rate).
        poi: the parameter of interest; some process's ``expected_yield`` names it.
        parameters: every other parameter whose nominal/constraint should not be the default: background
            normalisations named by ``expected_yield`` (required) and nuisances (optional; default
            ``Parameter(name, 0.0, constraint=1.0)``, the pyhf convention of a unit Gaussian in units of the ±1σ shift).
        steps: nuisance name → physical shift at which the shifted templates were made (default 1.0), so that a
            nuisance given in physical units (e.g. ``Parameter("r", 0.0, constraint=0.4)`` with step 0.2) keeps
            them; normalisation nuisances use the same step.
        floor: added to every template bin (nominal, up and down alike), see :data:`TEMPLATE_FLOOR`.

    The parameter vector is (POI, yield parameters, nuisances) in that order.
    """
    processes = list(processes)
    steps = dict(steps or {})
    names = [p.name for p in processes]
    if len(set(names)) != len(names):
        raise InvalidModelSpec(f"duplicate process names in {names}")
    given = {p.name: p for p in parameters}
    if len(given) != len(list(parameters)):
        raise InvalidModelSpec(f"duplicate parameter names in {[p.name for p in parameters]}")
    if poi.name in given:
        raise InvalidModelSpec(f"the poi {poi.name!r} is passed as poi, not among the other parameters")
    yield_params: List[Parameter] = []
    for p in processes:
        y = p.expected_yield
        if isinstance(y, str) and y != poi.name and y not in [q.name for q in yield_params]:
            if y not in given:
                raise InvalidModelSpec(f"yield of process {p.name!r} refers to unknown parameter {y!r}")
            yield_params.append(given[y])
    if not any(p.expected_yield == poi.name for p in processes):
        raise InvalidModelSpec(f"no process has the poi {poi.name!r} as its yield")
    nuisances = nuisance_names(processes)
    clash = set(nuisances) & ({poi.name} | {q.name for q in yield_params})
    if clash:
        raise InvalidModelSpec(f"names used both as a yield parameter and as a nuisance: {sorted(clash)}")
    nuisance_params = [given.get(n, Parameter(n, 0.0, constraint=1.0)) for n in nuisances]
    unused = set(given) - {q.name for q in yield_params} - set(nuisances)
    if unused:
        raise InvalidModelSpec(f"parameters {sorted(unused)} are not used by any process")
    for n, s in steps.items():
        if not s > 0:
            raise InvalidModelSpec(f"step of nuisance {n!r} must be > 0, got {s}")

    missing = [p.name for p in processes if p.name not in templates]
    if missing:
        raise InvalidModelSpec(f"no nominal template for process(es) {missing}")
    nominal = torch.stack([templates[p.name] for p in processes]) + floor
    shapes, norms = [], []
    for p in processes:
        for n in p.shape_systematics:
            if (p.name, n) not in shifted_templates:
                raise InvalidModelSpec(f"no shift_up/shift_down templates for nuisance {n!r} of process {p.name!r}")
            up, down = shifted_templates[(p.name, n)]
            shapes.append(ShapeSystematic(n, p.name, up + floor, down + floor, step=float(steps.get(n, 1.0))))
        for n, (k_up, k_down) in p.norm_systematics.items():
            norms.append(NormSystematic(n, p.name, k_up, k_down, step=float(steps.get(n, 1.0))))
    return TemplateModel(
        processes=names,
        templates=nominal,
        yields={p.name: p.expected_yield for p in processes},
        parameters=[poi, *yield_params, *nuisance_params],
        poi=poi.name,
        shape_systematics=shapes,
        norm_systematics=norms,
    )
