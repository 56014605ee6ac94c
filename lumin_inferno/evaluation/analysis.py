"""Evaluate a trained summary on an :class:`~lumin_inferno.analysis.Analysis`: hard-assigned templates of every
process, their ±1σ variations (shifted inputs re-binned, up/down weights re-weighted) and MC statistics (Σw²),
from a fold file, into the binned likelihood of the whole analysis (summary + fixed channels) for fits and
exports. This is the library path from an approximate-INFERNO model to σ(POI), a pyhf workspace or a datacard.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Dict, Mapping, Optional, Sequence, Tuple, cast

import numpy as np
import torch

from ..analysis import Analysis, SummaryTemplates, template_model
from ..data.systematics import read_fold_systematics
from ..exceptions import ConfigurationError, EmptyProcessError, FoldFileError, TargetShapeError
from ..statistics.likelihood import TemplateModel

__all__ = [
    "EventBins", "event_bins", "foldfile_event_bins", "hard_summary_templates", "transform_shifted_bins",
    "analysis_template_model", "foldfile_template_model",
]

BinFunction = Callable[[np.ndarray], np.ndarray]


def _histogram(bins: np.ndarray, w: np.ndarray, n_bins: int) -> Tuple[np.ndarray, np.ndarray]:
    return (np.bincount(bins, weights=w, minlength=n_bins)[:n_bins],
            np.bincount(bins, weights=w * w, minlength=n_bins)[:n_bins])


def hard_summary_templates(
    analysis: Analysis,
    bins: np.ndarray,
    targets: np.ndarray,
    weights: Optional[np.ndarray] = None,
    shifted_bins: Optional[Mapping[str, Tuple[np.ndarray, np.ndarray]]] = None,
    shifted_weights: Optional[Mapping[str, Tuple[np.ndarray, np.ndarray]]] = None,
) -> SummaryTemplates:
    """Hard-assigned summary templates of every process of ``analysis`` (fractions of its nominal weight per bin,
    float64), with their MC variance Σw²/(Σw)² per bin.

    Args:
        bins: integer bin of each event in [0, n_bins).
        targets / weights: process labels and event weights (default 1).
        shifted_bins: fold-file column of an ``"inputs"`` systematic → (bins of the shift_up inputs, of the
            shift_down inputs), the same events in the same order.
        shifted_weights: column of a ``"weights"`` systematic → (up weights, down weights).
    """
    n_bins = analysis.n_bins
    targets = np.asarray(targets).reshape(-1)
    bins = np.asarray(bins).reshape(-1)
    n = len(targets)
    w = np.ones(n) if weights is None else np.asarray(weights, dtype=np.float64).reshape(-1)
    if len(bins) != n or len(w) != n:
        raise TargetShapeError(f"{len(bins)} bin assignments, {n} targets and {len(w)} weights: need one each per event")
    for what, b in [("nominal", bins)] + [(f"{k} {d}", v) for k, pair in (shifted_bins or {}).items()
                                           for d, v in zip(("up", "down"), pair)]:
        b = np.asarray(b)
        if b.shape != (n,) or not np.issubdtype(b.dtype, np.integer) or (b < 0).any() or (b >= n_bins).any():
            raise TargetShapeError(f"{what} bins must be {n} integers in [0, {n_bins}), got shape {b.shape}")
    nominal, variance, shifted = {}, {}, {}
    masks = {p.name: np.isin(targets, p.labels) for p in analysis.summary_processes}
    assigned = np.any(np.stack(list(masks.values())), axis=0)
    if not assigned.all():
        raise TargetShapeError(f"target value(s) {sorted(set(targets[~assigned].tolist()))} belong to no process")
    for p in analysis.summary_processes:
        m = masks[p.name]
        total = w[m].sum()
        if not m.any() or not total > 0:
            raise EmptyProcessError(f"the evaluation sample has no events (or zero total weight) of process {p.name!r}")
        counts, sumw2 = _histogram(bins[m], w[m], n_bins)
        if (counts < 0).any():
            raise EmptyProcessError(
                f"process {p.name!r} has negative summed weight in bin(s) {np.nonzero(counts < 0)[0].tolist()} of the "
                "evaluation sample (negative event weights): merge bins or use more events"
            )
        nominal[p.name] = torch.as_tensor(counts / total)
        variance[p.name] = torch.as_tensor(sumw2 / total**2)
    for s in analysis.shape_systematics():
        for pname in s.processes:
            if pname not in masks:
                continue
            m, total = masks[pname], w[masks[pname]].sum()
            if s.kind == "inputs":
                column = s.stored_column
                if not shifted_bins or column not in shifted_bins:
                    raise FoldFileError(f"no shifted-input bins for systematic {s.name!r} (column {column!r})")
                pair = [np.asarray(b)[m] for b in shifted_bins[column]]
                shifted[(pname, s.name)] = tuple(torch.as_tensor(_histogram(b, w[m], n_bins)[0] / total) for b in pair)
            elif s.kind == "weights":
                column = s.stored_column
                if not shifted_weights or column not in shifted_weights:
                    raise FoldFileError(f"no up/down weights for systematic {s.name!r} (column {column!r})")
                shifted[(pname, s.name)] = tuple(
                    torch.as_tensor(_histogram(bins[m], np.asarray(v, dtype=np.float64).reshape(-1)[m], n_bins)[0] / total)
                    for v in shifted_weights[column]
                )
            else:  # "transform": the inputs moved by the transform to α = ±1, binned (transform_shifted_bins)
                key = f"transform:{s.name}"
                if not shifted_bins or key not in shifted_bins:
                    raise ConfigurationError(
                        f"no transformed-input bins for exact systematic {s.name!r}: evaluate with its transform "
                        "(analysis_template_model(..., transform=...))"
                    )
                pair = [np.asarray(b)[m] for b in shifted_bins[key]]
                shifted[(pname, s.name)] = tuple(torch.as_tensor(_histogram(b, w[m], n_bins)[0] / total) for b in pair)
    # one (up, down) pair of templates per (process, systematic)
    return SummaryTemplates(nominal, cast(Dict[Tuple[str, str], Tuple[torch.Tensor, torch.Tensor]], shifted), variance)


def transform_shifted_bins(
    analysis: Analysis, bin_function: BinFunction, inputs: np.ndarray, targets: np.ndarray, transform
) -> Dict[str, Tuple[np.ndarray, np.ndarray]]:
    """Bins of the inputs moved by ``transform`` to α = ±1 for every ``"transform"`` systematic (on the events of
    the processes it acts on; the others keep their inputs), keyed ``"transform:<name>"`` for
    :func:`hard_summary_templates`."""
    exact = analysis.systematics_of("transform")
    if not exact:
        return {}
    if transform is None:
        raise ConfigurationError(
            f"exact systematic(s) {[s.name for s in exact]} need their input transform to be evaluated"
        )
    targets = np.asarray(targets).reshape(-1)
    x = torch.as_tensor(np.asarray(inputs, dtype=np.float32))
    out = {}
    for name in dict.fromkeys(s.name for s in exact):
        procs = {p for s in exact if s.name == name for p in s.processes}
        labels = [v for p in analysis.summary_processes if p.name in procs for v in p.labels]
        mask = torch.as_tensor(np.isin(targets, labels))
        pair = []
        for sign in (1.0, -1.0):
            with torch.no_grad():
                moved = transform(x, {name: torch.tensor(sign)}, mask)
            pair.append(np.asarray(bin_function(moved.numpy())))
        out[f"transform:{name}"] = (pair[0], pair[1])
    return out


@dataclass
class EventBins:
    """An evaluation sample summarised once: every event's bin under the nominal inputs and under each shifted input
    (``"inputs"`` columns, ``"transform:<name>"`` for exact systematics), with its weights and up/down weights.
    Templates of the whole sample or of any subset of its events (:meth:`template_model`, e.g. a smaller MC sample
    drawn for a pseudo-experiment) then cost histograms only, no network evaluation."""

    bins: np.ndarray
    targets: np.ndarray
    weights: np.ndarray
    shifted_bins: Dict[str, Tuple[np.ndarray, np.ndarray]]
    shifted_weights: Dict[str, Tuple[np.ndarray, np.ndarray]]

    def __len__(self) -> int:
        return len(self.bins)

    @classmethod
    def concatenate(cls, parts: Sequence["EventBins"]) -> "EventBins":
        """One EventBins of the events of ``parts`` (e.g. the folds of a fold file), in order."""
        if not parts or any(set(p.shifted_bins) != set(parts[0].shifted_bins)
                            or set(p.shifted_weights) != set(parts[0].shifted_weights) for p in parts):
            raise ConfigurationError("EventBins to concatenate must be at least one, with the same shifted inputs "
                                     "and weights")

        def cat(get):
            return np.concatenate([get(p) for p in parts])

        return cls(cat(lambda p: p.bins), cat(lambda p: p.targets), cat(lambda p: p.weights),
                   {k: (cat(lambda p: p.shifted_bins[k][0]), cat(lambda p: p.shifted_bins[k][1]))
                    for k in parts[0].shifted_bins},
                   {k: (cat(lambda p: p.shifted_weights[k][0]), cat(lambda p: p.shifted_weights[k][1]))
                    for k in parts[0].shifted_weights})

    def templates(self, analysis: Analysis, index: Optional[np.ndarray] = None) -> SummaryTemplates:
        """:func:`hard_summary_templates` of the events ``index`` (default all)."""
        take = (lambda v: np.asarray(v)) if index is None else (lambda v: np.asarray(v)[index])
        return hard_summary_templates(
            analysis, take(self.bins), take(self.targets), take(self.weights),
            {k: (take(u), take(d)) for k, (u, d) in self.shifted_bins.items()},
            {k: (take(u), take(d)) for k, (u, d) in self.shifted_weights.items()})

    def template_model(self, analysis: Analysis, index: Optional[np.ndarray] = None) -> TemplateModel:
        """The analysis's binned likelihood (float64) from the events ``index`` (default all)."""
        return template_model(analysis, self.templates(analysis, index))


def event_bins(
    analysis: Analysis,
    bin_function: BinFunction,
    inputs: np.ndarray,
    targets: np.ndarray,
    weights: Optional[np.ndarray] = None,
    transform=None,
    shifted_inputs: Optional[Mapping[str, Tuple[np.ndarray, np.ndarray]]] = None,
    shifted_weights: Optional[Mapping[str, Tuple[np.ndarray, np.ndarray]]] = None,
) -> EventBins:
    """The :class:`EventBins` of an evaluation sample: ``bin_function`` applied to the nominal inputs, to each
    ``"inputs"`` systematic's shifted inputs (column → (up inputs, down inputs)) and, for ``"transform"``
    systematics, to the inputs moved by ``transform`` to α = ±1."""
    bins = {c: (np.asarray(bin_function(up)), np.asarray(bin_function(down)))
            for c, (up, down) in (shifted_inputs or {}).items()}
    bins.update(transform_shifted_bins(analysis, bin_function, inputs, targets, transform))
    targets = np.asarray(targets).reshape(-1)
    w = np.ones(len(targets)) if weights is None else np.asarray(weights, dtype=np.float64).reshape(-1)
    return EventBins(np.asarray(bin_function(inputs)), targets, w, bins,
                     {k: (np.asarray(u, dtype=np.float64).reshape(-1), np.asarray(d, dtype=np.float64).reshape(-1))
                      for k, (u, d) in (shifted_weights or {}).items()})


def analysis_template_model(
    analysis: Analysis,
    bin_function: BinFunction,
    inputs: np.ndarray,
    targets: np.ndarray,
    weights: Optional[np.ndarray] = None,
    transform=None,
    shifted_inputs: Optional[Mapping[str, Tuple[np.ndarray, np.ndarray]]] = None,
    shifted_weights: Optional[Mapping[str, Tuple[np.ndarray, np.ndarray]]] = None,
) -> TemplateModel:
    """The analysis's binned likelihood (float64) of the summary ``bin_function`` on an evaluation sample:
    hard-assigned templates of every process, ``"transform"`` systematics from ``transform`` at α = ±1,
    ``"inputs"`` systematics from ``shifted_inputs`` (column → (up inputs, down inputs)), ``"weights"`` ones from
    ``shifted_weights`` (column → (up, down) weights), MC statistics from Σw², and the fixed channels."""
    return event_bins(analysis, bin_function, inputs, targets, weights, transform, shifted_inputs,
                      shifted_weights).template_model(analysis)


def foldfile_event_bins(analysis: Analysis, bin_function: BinFunction, fy, fold_idx: int = 0,
                        transform=None) -> EventBins:
    """The :class:`EventBins` of fold ``fold_idx`` of ``fy`` (a LUMIN ``FoldYielder`` or a fold-file path with
    shifted systematics): nominal, shifted inputs and up/down weights (:mod:`lumin_inferno.data.systematics`) and,
    for ``"transform"`` systematics, ``transform`` (default: the declared input shifts through ``fy``'s input
    pipe)."""
    if not hasattr(fy, "get_fold"):
        from ..data.foldfiles import open_foldfile

        fy = open_foldfile(fy)
    data = fy.get_fold(fold_idx)
    inputs = [s.stored_column for s in analysis.systematics_of("inputs")]
    weights = [s.stored_column for s in analysis.systematics_of("weights")]
    shifted = read_fold_systematics(fy, fold_idx, inputs, weights) if inputs or weights else None
    shifted_inputs: Dict[str, Tuple[np.ndarray, np.ndarray]] = {}
    if shifted is not None:
        ignore = set(getattr(fy, "_ignore_feats", []))
        columns = [i for i, f in enumerate(fy.input_feats) if f not in ignore]
        shifted_inputs = {c: (up[:, columns], down[:, columns]) for c, (up, down) in shifted.inputs.items()}
    if transform is None and analysis.systematics_of("transform"):
        from ..data.shifts import InputShiftTransform

        transform = InputShiftTransform(analysis, list(fy.cont_feats) + list(fy.cat_feats),
                                        getattr(fy, "input_pipe", None))
    return event_bins(analysis, bin_function, data["inputs"], data["targets"], data["weights"], transform,
                      shifted_inputs, None if shifted is None else shifted.weights)


def foldfile_template_model(
    analysis: Analysis, bin_function: BinFunction, fy, fold_idx: int = 0, transform=None
) -> TemplateModel:
    """The analysis's binned likelihood with the summary ``bin_function`` (inputs array → integer bins) applied
    to fold ``fold_idx`` of ``fy`` (a LUMIN ``FoldYielder`` or a fold-file path with shifted systematics), its
    shifted inputs and up/down weights (:mod:`lumin_inferno.data.systematics`) and, for ``"transform"``
    systematics, ``transform`` (default: the declared input shifts through ``fy``'s input pipe)."""
    return foldfile_event_bins(analysis, bin_function, fy, fold_idx, transform).template_model(analysis)
