"""The description of a measurement, read by every layer: training, evaluation and every export.

An :class:`Analysis` says what is measured and how, as pyhf's workspace spec does for a final fit, but before
any histogram exists: the processes (with their fold-file target labels and nominal yields), the free factors
(signal strengths that are parameters of interest, free background normalisations), the nuisances and their
constraints, the systematics of each kind attached to processes, the learned summary channel (the network's bins)
plus any fixed-binning channels (control regions given as per-process yields with their variations), the MC
statistics switch and the training objective. It is validated on construction (every error names the process,
systematic or channel) and round-trips through JSON (:meth:`Analysis.to_json` / :meth:`Analysis.from_json`), so a
trained ensemble is saved with the very description it was trained for.

Conventions (pyhf's): a nuisance α is measured in units of its ±1σ variation (α = ±1 gives the shift_up /
shift_down inputs, weights or κ), with a unit Gaussian constraint unless declared otherwise; a factor multiplies
the yields of its processes and is 1 at nominal unless its ``nominal`` says otherwise.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

from ..exceptions import InvalidModelSpecError
from ..statistics.interpolation import NORM_INTERPOLATIONS
from ..statistics.objectives import OBJECTIVES

__all__ = [
    "SPEC_VERSION",
    "SYSTEMATIC_KINDS",
    "Process",
    "NormFactor",
    "Nuisance",
    "InputShift",
    "Systematic",
    "FixedChannel",
    "Objective",
    "Analysis",
]

SPEC_VERSION = 1
#: ``"inputs"``: shape from ±1σ shifted input columns in the fold file; ``"weights"``: shape (and rate) from up/down
#: event-weight columns; ``"norm"``: normalisation κ; ``"transform"``: exact shape through a differentiable shift of
#: input features (:class:`InputShift`), differentiated in training instead of finite-differenced.
SYSTEMATIC_KINDS = ("inputs", "weights", "norm", "transform")
ROLES = ("signal", "background")
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_.\-]*$")


def _name(what: str, value: Any) -> str:
    if not isinstance(value, str) or not _NAME.match(value):
        raise InvalidModelSpecError(f"{what} must be a name matching [A-Za-z_][A-Za-z0-9_.-]*, got {value!r}")
    return value


def _finite(what: str, value: Any) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise InvalidModelSpecError(f"{what} must be a number, got {value!r}") from None
    if not math.isfinite(v):
        raise InvalidModelSpecError(f"{what} must be finite, got {value!r}")
    return v


def _floats(what: str, values: Any, n: Optional[int] = None, positive: bool = False) -> Tuple[float, ...]:
    if isinstance(values, (str, bytes)) or not hasattr(values, "__iter__"):
        raise InvalidModelSpecError(f"{what} must be a sequence of numbers, got {values!r}")
    out = tuple(_finite(what, v) for v in values)
    if n is not None and len(out) != n:
        raise InvalidModelSpecError(f"{what} must have {n} values (one per bin), got {len(out)}")
    if positive and any(v < 0 for v in out):
        raise InvalidModelSpecError(f"{what} must be >= 0 in every bin, got {list(out)}")
    return out


@dataclass(frozen=True)
class Process:
    """A physics process (a pyhf sample).

    Args:
        name: e.g. ``"ggH"``, ``"ttbar"``.
        nominal_yield: expected events of the process in the learned summary channel (all its bins together); the
            network's templates are fractions of it. ``None`` for a process that appears only in fixed channels.
        labels: its target value(s) in the fold file (``fold_i/targets``); every training event belongs to exactly
            one process. Empty for a process only in fixed channels.
        role: ``"signal"`` or ``"background"`` (used by reports and by searches' objectives).
        mc_stat: whether its templates come from a finite MC sample (then it takes part in the staterror term).
    """

    name: str
    nominal_yield: Optional[float] = None
    labels: Tuple[int, ...] = ()
    role: str = "background"
    mc_stat: bool = True

    def __post_init__(self) -> None:
        _name("process name", self.name)
        labels = self.labels if isinstance(self.labels, (list, tuple)) else (self.labels,)
        try:
            labels = tuple(int(v) for v in labels)
        except (TypeError, ValueError):
            raise InvalidModelSpecError(f"process {self.name!r}: labels must be integers, got {self.labels!r}") from None
        if len(set(labels)) != len(labels):
            raise InvalidModelSpecError(f"process {self.name!r}: repeated labels {labels}")
        object.__setattr__(self, "labels", labels)
        if self.role not in ROLES:
            raise InvalidModelSpecError(f"process {self.name!r}: role must be one of {ROLES}, got {self.role!r}")
        if self.nominal_yield is not None:
            y = _finite(f"process {self.name!r}: nominal_yield", self.nominal_yield)
            if not y > 0:
                raise InvalidModelSpecError(f"process {self.name!r}: nominal_yield must be > 0 events, got {y}")
            object.__setattr__(self, "nominal_yield", y)
        if labels and self.nominal_yield is None:
            raise InvalidModelSpecError(f"process {self.name!r} has fold-file labels {labels} but no nominal_yield")
        if self.nominal_yield is not None and not labels:
            raise InvalidModelSpecError(
                f"process {self.name!r} has a nominal_yield in the summary channel but no fold-file labels"
            )


@dataclass(frozen=True)
class NormFactor:
    """A free factor multiplying the yields of ``processes`` in every channel (pyhf ``normfactor``, combine
    ``rateParam``): a signal strength (``poi=True``, a parameter of interest) or a background normalisation measured
    in data (``poi=False``: free, profiled).

    Args:
        nominal: its value at the Asimov point (1: the yields as given; 0 for a background-only Asimov).
        bounds: fit range.
        constraint: width of a Gaussian constraint around ``nominal`` (a normalisation known from elsewhere,
            e.g. 0.1 for ±10 %; pyhf's ``lumi`` modifier); ``None`` (default) = free. POIs are never constrained.
    """

    name: str
    processes: Tuple[str, ...]
    poi: bool = True
    nominal: float = 1.0
    bounds: Tuple[float, float] = (0.0, 10.0)
    constraint: Optional[float] = None

    def __post_init__(self) -> None:
        _name("factor name", self.name)
        procs = (self.processes,) if isinstance(self.processes, str) else tuple(self.processes)
        if not procs:
            raise InvalidModelSpecError(f"factor {self.name!r} multiplies no process")
        object.__setattr__(self, "processes", procs)
        object.__setattr__(self, "nominal", _finite(f"factor {self.name!r}: nominal", self.nominal))
        lo, hi = (_finite(f"factor {self.name!r}: bounds", b) for b in self.bounds)
        if not lo < hi or not lo <= self.nominal <= hi:
            raise InvalidModelSpecError(f"factor {self.name!r}: bounds {self.bounds} must contain nominal {self.nominal}")
        object.__setattr__(self, "bounds", (lo, hi))
        if self.constraint is not None:
            c = _finite(f"factor {self.name!r}: constraint", self.constraint)
            if not c > 0:
                raise InvalidModelSpecError(f"factor {self.name!r}: constraint width must be > 0, got {c}")
            if self.poi:
                raise InvalidModelSpecError(f"factor {self.name!r} is a POI and cannot be constrained")
            object.__setattr__(self, "constraint", c)


@dataclass(frozen=True)
class Nuisance:
    """A nuisance parameter α, in units of its ±1σ variation: ``constraint`` is the width of its Gaussian
    constraint in those units (1 = the variations are ±1σ; ``None`` = free, no constraint)."""

    name: str
    constraint: Optional[float] = 1.0

    def __post_init__(self) -> None:
        _name("nuisance name", self.name)
        if self.constraint is not None:
            c = _finite(f"nuisance {self.name!r}: constraint", self.constraint)
            if not c > 0:
                raise InvalidModelSpecError(f"nuisance {self.name!r}: constraint width must be > 0, got {c}")
            object.__setattr__(self, "constraint", c)


@dataclass(frozen=True)
class InputShift:
    """How a ``"transform"`` systematic moves one input feature, in the feature's physical units (before LUMIN's
    input pipe): x → x·(1 + scale·α) + shift·α; e.g. a 3 % energy scale is ``InputShift("pt", scale=0.03)``."""

    feature: str
    scale: float = 0.0
    shift: float = 0.0

    def __post_init__(self) -> None:
        if not isinstance(self.feature, str) or not self.feature:
            raise InvalidModelSpecError(f"InputShift feature must be a column name, got {self.feature!r}")
        s = _finite(f"InputShift {self.feature!r}: scale", self.scale)
        d = _finite(f"InputShift {self.feature!r}: shift", self.shift)
        if s == 0 and d == 0:
            raise InvalidModelSpecError(f"InputShift {self.feature!r} changes nothing (scale = shift = 0)")
        object.__setattr__(self, "scale", s)
        object.__setattr__(self, "shift", d)


@dataclass(frozen=True)
class Systematic:
    """One effect of a nuisance on some processes. Several entries with the same ``name`` are one nuisance
    (fully correlated), e.g. a jet energy scale that shifts the inputs of every process.

    Args:
        name: the nuisance's name.
        kind: one of :data:`SYSTEMATIC_KINDS`.
        processes: the processes it acts on.
        kappa_up / kappa_down: for ``"norm"``: the yield factors at α = ±1; ``kappa_down`` defaults to
            1/``kappa_up`` (symmetric log-normal).
        interpolation: for ``"norm"``: ``"code4"`` (default, smooth) or ``"code1"`` (κ^α, combine's ``lnN``).
        column: for ``"inputs"``/``"weights"``: the systematic's name in the fold file
            (``shift_up_inputs_<column>`` ...); default ``name``.
        shifts: for ``"transform"``: the feature shifts per unit α (:class:`InputShift`), applied through LUMIN's
            input pipe; empty when a custom transform given to the callback and the evaluation applies it (a
            non-linear effect, e.g. the paper's λ).
    """

    name: str
    kind: str
    processes: Tuple[str, ...]
    kappa_up: Optional[float] = None
    kappa_down: Optional[float] = None
    interpolation: str = "code4"
    column: Optional[str] = None
    shifts: Tuple[InputShift, ...] = ()

    def __post_init__(self) -> None:
        _name("systematic name", self.name)
        if self.kind not in SYSTEMATIC_KINDS:
            raise InvalidModelSpecError(f"systematic {self.name!r}: kind must be one of {SYSTEMATIC_KINDS}, got {self.kind!r}")
        procs = (self.processes,) if isinstance(self.processes, str) else tuple(self.processes)
        if not procs or len(set(procs)) != len(procs):
            raise InvalidModelSpecError(f"systematic {self.name!r}: needs distinct processes, got {self.processes!r}")
        object.__setattr__(self, "processes", procs)
        shifts = tuple(s if isinstance(s, InputShift) else InputShift(**s) for s in self.shifts)
        object.__setattr__(self, "shifts", shifts)
        if self.kind == "norm":
            if self.kappa_up is None:
                raise InvalidModelSpecError(f"normalisation systematic {self.name!r} needs kappa_up")
            up = _finite(f"systematic {self.name!r}: kappa_up", self.kappa_up)
            if not up > 0:
                raise InvalidModelSpecError(f"systematic {self.name!r}: kappa_up must be > 0, got {up}")
            down = 1.0 / up if self.kappa_down is None else self.kappa_down
            down = _finite(f"systematic {self.name!r}: kappa_down", down)
            if not (up > 0 and down > 0):
                raise InvalidModelSpecError(f"systematic {self.name!r}: kappa_up/kappa_down must be > 0, got {up}, {down}")
            if self.interpolation not in NORM_INTERPOLATIONS:
                raise InvalidModelSpecError(
                    f"systematic {self.name!r}: interpolation must be one of {NORM_INTERPOLATIONS}, got "
                    f"{self.interpolation!r}"
                )
            object.__setattr__(self, "kappa_up", up)
            object.__setattr__(self, "kappa_down", down)
        elif self.kappa_up is not None or self.kappa_down is not None:
            raise InvalidModelSpecError(f"systematic {self.name!r} of kind {self.kind!r} takes no kappa (only 'norm' does)")
        if self.kind != "transform" and shifts:
            raise InvalidModelSpecError(f"systematic {self.name!r} of kind {self.kind!r} takes no input shifts")
        if self.kind in ("inputs", "weights"):
            object.__setattr__(self, "column", _name(f"systematic {self.name!r}: column", self.column or self.name))
        elif self.column is not None:
            raise InvalidModelSpecError(f"systematic {self.name!r} of kind {self.kind!r} reads no fold-file column")

    @property
    def is_shape(self) -> bool:
        """Whether it changes the summary channel's templates (everything but ``"norm"``)."""
        return self.kind != "norm"

    @property
    def stored_column(self) -> str:
        """The fold-file column of an ``"inputs"`` or ``"weights"`` systematic (``shift_up_<kind>_<column>`` ...)."""
        if self.column is None:
            raise InvalidModelSpecError(f"systematic {self.name!r} of kind {self.kind!r} reads no fold-file column")
        return self.column


@dataclass(frozen=True)
class FixedChannel:
    """A channel with a fixed binning, e.g. a control region: per-process expected yields per bin (events), with
    the variations of the shape systematics that act there and, optionally, each process's absolute MC
    uncertainty √Σw² per bin and observed counts.

    Args:
        yields: process → yields per bin.
        variations: systematic name → process → (shift_up yields, shift_down yields). A shape systematic of the
            analysis without an entry here does not act in this channel; normalisation systematics act in every
            channel.
        mc_uncertainty: process → √Σw² per bin (events); missing: no MC uncertainty for that process here.
        observed: observed counts per bin (for fits to data; Asimov data otherwise).
    """

    name: str
    yields: Mapping[str, Tuple[float, ...]]
    variations: Mapping[str, Mapping[str, Tuple[Tuple[float, ...], Tuple[float, ...]]]] = field(default_factory=dict)
    mc_uncertainty: Mapping[str, Tuple[float, ...]] = field(default_factory=dict)
    observed: Optional[Tuple[float, ...]] = None

    def __post_init__(self) -> None:
        _name("channel name", self.name)
        if not self.yields:
            raise InvalidModelSpecError(f"channel {self.name!r} has no process yields")
        n = len(next(iter(self.yields.values())))
        if n < 1:
            raise InvalidModelSpecError(f"channel {self.name!r} has no bins")
        yields = {p: _floats(f"channel {self.name!r}, process {p!r}: yields", v, n, positive=True)
                  for p, v in self.yields.items()}
        total = [sum(v[i] for v in yields.values()) for i in range(n)]
        empty = [i for i, t in enumerate(total) if not t > 0]
        if empty:
            raise InvalidModelSpecError(f"channel {self.name!r}: bin(s) {empty} have no expected events")
        variations: Dict[str, Dict[str, Tuple[Tuple[float, ...], Tuple[float, ...]]]] = {}
        for syst, per_proc in dict(self.variations).items():
            variations[syst] = {}
            for p, pair in dict(per_proc).items():
                if p not in yields:
                    raise InvalidModelSpecError(
                        f"channel {self.name!r}: systematic {syst!r} varies process {p!r}, which has no yields here"
                    )
                if len(pair) != 2:
                    raise InvalidModelSpecError(f"channel {self.name!r}: systematic {syst!r} on {p!r} needs (up, down)")
                up, down = (
                    _floats(f"channel {self.name!r}, systematic {syst!r}, process {p!r}: {d}", v, n, positive=True)
                    for d, v in zip(("shift_up", "shift_down"), pair)
                )
                variations[syst][p] = (up, down)
        mc = {}
        for p, v in dict(self.mc_uncertainty).items():
            if p not in yields:
                raise InvalidModelSpecError(f"channel {self.name!r}: MC uncertainty given for process {p!r} without yields")
            mc[p] = _floats(f"channel {self.name!r}, process {p!r}: mc_uncertainty", v, n, positive=True)
        object.__setattr__(self, "yields", yields)
        object.__setattr__(self, "variations", variations)
        object.__setattr__(self, "mc_uncertainty", mc)
        if self.observed is not None:
            object.__setattr__(self, "observed", _floats(f"channel {self.name!r}: observed", self.observed, n, True))

    @property
    def n_bins(self) -> int:
        return len(next(iter(self.yields.values())))


@dataclass(frozen=True)
class Objective:
    """What training minimises (:mod:`lumin_inferno.statistics.objectives`): ``kind`` in :data:`OBJECTIVES`, over
    the POIs ``pois`` (default: every POI in declaration order; ``"variance"`` uses the first), with ``weights``
    for ``"weighted_variance"``."""

    kind: str = "variance"
    pois: Tuple[str, ...] = ()
    weights: Optional[Tuple[float, ...]] = None

    def __post_init__(self) -> None:
        if self.kind not in OBJECTIVES:
            raise InvalidModelSpecError(f"objective must be one of {OBJECTIVES}, got {self.kind!r}")
        pois = (self.pois,) if isinstance(self.pois, str) else tuple(self.pois)
        object.__setattr__(self, "pois", pois)
        if self.weights is not None:
            w = _floats("objective weights", self.weights, positive=True)
            if self.kind != "weighted_variance":
                raise InvalidModelSpecError(f"objective {self.kind!r} takes no weights (only 'weighted_variance')")
            if pois and len(w) != len(pois):
                raise InvalidModelSpecError(f"objective weights {w} must match its POIs {pois}")
            object.__setattr__(self, "weights", w)


@dataclass(frozen=True)
class Analysis:
    """The whole measurement. See the module docstring; every field is validated together on construction.

    Args:
        processes: the processes (:class:`Process`).
        factors: free factors (:class:`NormFactor`); at least one is a POI.
        systematics: the systematic effects (:class:`Systematic`).
        nuisances: constraints of nuisances that are not unit Gaussians (:class:`Nuisance`); every other nuisance
            named by a systematic gets ``Nuisance(name)`` (unit Gaussian).
        channels: fixed-binning channels (:class:`FixedChannel`), after the learned summary channel.
        n_bins: bins of the learned summary (the network's softmax outputs).
        summary: the learned channel's name.
        mc_stat: include the Barlow–Beeston-lite staterror term (γ per bin) for processes with ``mc_stat``.
        objective: the training objective (:class:`Objective`).
    """

    processes: Tuple[Process, ...]
    factors: Tuple[NormFactor, ...]
    systematics: Tuple[Systematic, ...] = ()
    nuisances: Tuple[Nuisance, ...] = ()
    channels: Tuple[FixedChannel, ...] = ()
    n_bins: int = 10
    summary: str = "summary"
    mc_stat: bool = True
    objective: Objective = field(default_factory=Objective)

    def __post_init__(self) -> None:
        def coerce(items, cls, what):
            items = tuple(items)
            out = []
            for x in items:
                if isinstance(x, cls):
                    out.append(x)
                elif isinstance(x, Mapping):
                    out.append(cls(**x))
                else:
                    raise InvalidModelSpecError(f"{what} must be {cls.__name__} objects, got {type(x).__name__}")
            return tuple(out)

        object.__setattr__(self, "processes", coerce(self.processes, Process, "processes"))
        object.__setattr__(self, "factors", coerce(self.factors, NormFactor, "factors"))
        object.__setattr__(self, "systematics", coerce(self.systematics, Systematic, "systematics"))
        object.__setattr__(self, "nuisances", coerce(self.nuisances, Nuisance, "nuisances"))
        object.__setattr__(self, "channels", coerce(self.channels, FixedChannel, "channels"))
        if isinstance(self.objective, Mapping):
            object.__setattr__(self, "objective", Objective(**self.objective))
        _name("summary channel name", self.summary)
        if isinstance(self.n_bins, bool) or not isinstance(self.n_bins, int) or self.n_bins < 2:
            raise InvalidModelSpecError(f"the learned summary needs n_bins >= 2 (an integer), got {self.n_bins!r}")
        self._validate()

    # ------------------------------------------------------------------------------------------------ checks
    def _validate(self) -> None:
        procs = [p.name for p in self.processes]
        if not procs:
            raise InvalidModelSpecError("the analysis has no processes")
        _unique("process", procs)
        trained = [p for p in self.processes if p.labels]
        if not trained:
            raise InvalidModelSpecError("no process has fold-file labels: nothing for the summary channel")
        owner: Dict[int, str] = {}
        for proc in trained:
            for v in proc.labels:
                if v in owner:
                    raise InvalidModelSpecError(f"target label {v} belongs to both {owner[v]!r} and {proc.name!r}")
                owner[v] = proc.name
        _unique("factor", [f.name for f in self.factors])
        if not any(f.poi for f in self.factors):
            raise InvalidModelSpecError("the analysis has no parameter of interest (a NormFactor with poi=True)")
        for f in self.factors:
            unknown = [p for p in f.processes if p not in procs]
            if unknown:
                raise InvalidModelSpecError(f"factor {f.name!r} multiplies unknown process(es) {unknown}; known: {procs}")
        channels = [self.summary] + [c.name for c in self.channels]
        _unique("channel", channels)
        for c in self.channels:
            unknown = [p for p in c.yields if p not in procs]
            if unknown:
                raise InvalidModelSpecError(f"channel {c.name!r} has yields of unknown process(es) {unknown}")
        kinds: Dict[str, set] = {}
        seen = set()
        for s in self.systematics:
            unknown = [p for p in s.processes if p not in procs]
            if unknown:
                raise InvalidModelSpecError(f"systematic {s.name!r} acts on unknown process(es) {unknown}; known: {procs}")
            for p in s.processes:
                key = (s.name, p, s.kind == "norm")
                if key in seen:
                    raise InvalidModelSpecError(f"systematic {s.name!r} is declared twice on process {p!r}")
                seen.add(key)
            if s.is_shape:
                untrained = [p for p in s.processes if not self.process(p).labels]
                varied = {p for c in self.channels for p in c.variations.get(s.name, {})}
                missing = [p for p in untrained if p not in varied]
                if missing:
                    raise InvalidModelSpecError(
                        f"shape systematic {s.name!r} on process(es) {missing} that have no events in the fold file "
                        "and no variations in any fixed channel"
                    )
            kinds.setdefault(s.name, set()).add("shape" if s.is_shape else "norm")
        names = list(kinds)
        clash = set(names) & ({f.name for f in self.factors} | set(procs))
        if clash:
            raise InvalidModelSpecError(f"names used both for a nuisance and a factor or process: {sorted(clash)}")
        _unique("nuisance", [n.name for n in self.nuisances])
        unused = [n.name for n in self.nuisances if n.name not in kinds]
        if unused:
            raise InvalidModelSpecError(f"nuisance(s) {unused} are declared but no systematic uses them")
        for c in self.channels:
            for syst, per_proc in c.variations.items():
                shape = [s for s in self.systematics if s.name == syst and s.is_shape]
                if not shape:
                    raise InvalidModelSpecError(
                        f"channel {c.name!r} has variations of {syst!r}, which is not a shape systematic of the "
                        "analysis"
                    )
                acting = {p for s in shape for p in s.processes}
                extra = [p for p in per_proc if p not in acting]
                if extra:
                    raise InvalidModelSpecError(
                        f"channel {c.name!r}: systematic {syst!r} varies process(es) {extra} it is not declared on"
                    )
        pois = self.poi_names
        for p in self.objective.pois:
            if p not in pois:
                raise InvalidModelSpecError(f"objective POI {p!r} is not a parameter of interest; POIs are {pois}")
        if self.objective.weights is not None and not self.objective.pois and len(self.objective.weights) != len(pois):
            raise InvalidModelSpecError(f"objective weights {self.objective.weights} must match the POIs {pois}")

    # ------------------------------------------------------------------------------------------------ views
    def process(self, name: str) -> Process:
        for p in self.processes:
            if p.name == name:
                return p
        raise InvalidModelSpecError(f"unknown process {name!r}; processes are {[p.name for p in self.processes]}")

    @property
    def poi_names(self) -> List[str]:
        """The parameters of interest, in declaration order."""
        return [f.name for f in self.factors if f.poi]

    @property
    def objective_pois(self) -> List[str]:
        """The POIs the objective is computed over."""
        return list(self.objective.pois) or self.poi_names

    @property
    def summary_processes(self) -> List[Process]:
        """Processes with events in the fold file (they make the learned summary's templates)."""
        return [p for p in self.processes if p.labels]

    def nuisance_names(self) -> List[str]:
        """Every nuisance, in order of first appearance among the systematics."""
        names = self.__dict__.get("_nuisance_names")  # frozen: computed once (read on every training batch)
        if names is None:
            names = self.__dict__["_nuisance_names"] = tuple(dict.fromkeys(s.name for s in self.systematics))
        return list(names)

    def nuisance(self, name: str) -> Nuisance:
        for n in self.nuisances:
            if n.name == name:
                return n
        if name in self.nuisance_names():
            return Nuisance(name)
        raise InvalidModelSpecError(f"unknown nuisance {name!r}; nuisances are {self.nuisance_names()}")

    def systematics_of(self, kind: str) -> List[Systematic]:
        return [s for s in self.systematics if s.kind == kind]

    def shape_systematics(self) -> List[Systematic]:
        return [s for s in self.systematics if s.is_shape]

    def labels(self) -> Dict[str, Tuple[int, ...]]:
        """Process name → its fold-file target labels (processes of the summary channel)."""
        return {p.name: p.labels for p in self.summary_processes}

    def without_nuisances(self, names: Sequence[str]) -> "Analysis":
        """The same analysis with every systematic (and constraint) of the nuisances ``names`` removed, e.g. for a
        summary statistic blind to them (its Fisher information would be singular with a free one)."""
        from dataclasses import replace

        dropped = set(names)
        unknown = dropped - set(self.nuisance_names())
        if unknown:
            raise InvalidModelSpecError(f"unknown nuisance(s) {sorted(unknown)}; nuisances are {self.nuisance_names()}")
        channels = tuple(replace(c, variations={k: v for k, v in c.variations.items() if k not in dropped})
                         for c in self.channels)
        return replace(self, systematics=tuple(s for s in self.systematics if s.name not in dropped),
                       nuisances=tuple(n for n in self.nuisances if n.name not in dropped), channels=channels)

    # ------------------------------------------------------------------------------------------------ JSON
    def to_dict(self) -> Dict[str, Any]:
        d = asdict(self)
        d["version"] = SPEC_VERSION
        return d

    def to_json(self, indent: Optional[int] = 1) -> str:
        return json.dumps(self.to_dict(), indent=indent)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "Analysis":
        d = dict(d)
        version = d.pop("version", SPEC_VERSION)
        if version != SPEC_VERSION:
            raise InvalidModelSpecError(f"analysis spec version {version} is not supported (this release reads {SPEC_VERSION})")
        known = {f for f in cls.__dataclass_fields__}
        extra = set(d) - known
        if extra:
            raise InvalidModelSpecError(f"unknown analysis field(s) {sorted(extra)}")
        channels = []
        for c in d.get("channels", ()):
            c = dict(c)
            c["variations"] = {s: {p: tuple(tuple(v) for v in pair) for p, pair in pp.items()}
                               for s, pp in c.get("variations", {}).items()}
            channels.append(FixedChannel(**c))
        d["channels"] = tuple(channels)
        d["systematics"] = tuple(
            Systematic(**{**s, "shifts": tuple(InputShift(**x) for x in s.get("shifts", ()))})
            for s in d.get("systematics", ())
        )
        for k in ("factors",):
            d[k] = tuple({**f, "bounds": tuple(f["bounds"])} if "bounds" in f else f for f in d.get(k, ()))
        return cls(**d)

    @classmethod
    def from_json(cls, text: str) -> "Analysis":
        try:
            d = json.loads(text)
        except json.JSONDecodeError as err:
            raise InvalidModelSpecError(f"analysis JSON does not parse: {err}") from None
        if not isinstance(d, dict):
            raise InvalidModelSpecError("analysis JSON must be an object")
        return cls.from_dict(d)

    def save(self, path: Union[str, Path]) -> Path:
        """Write the JSON atomically to ``path``."""
        from ..io import atomic_write_text

        return atomic_write_text(path, self.to_json())

    @classmethod
    def load(cls, path: Union[str, Path]) -> "Analysis":
        path = Path(path)
        if not path.is_file():
            raise InvalidModelSpecError(f"analysis file {path} does not exist")
        return cls.from_json(path.read_text())


def _unique(what: str, names: Sequence[str]) -> None:
    dup = sorted({n for n in names if list(names).count(n) > 1})
    if dup:
        raise InvalidModelSpecError(f"duplicate {what} name(s) {dup}")
