"""What every INFERNO-style callback shares: LUMIN fit-params set-up for a per-batch loss, the check that the
training folds hold a batch, the softmax-output check, per-process event masks from target labels, soft templates,
and the σ(POI) columns they add to LUMIN's history."""

from __future__ import annotations

import math
from typing import Dict, List, Optional

import torch
from lumin.nn.callbacks.callback import Callback
from torch import Tensor

from ..exceptions import ConfigurationError, EmptyProcessError, TargetShapeError

__all__ = [
    "PoiSigmaMetric",
    "add_sigma_metrics",
    "check_folds_hold_a_batch",
    "check_softmax_output",
    "prepare_fit_for_batch_loss",
    "process_masks",
    "soft_template",
    "nominal_soft_templates",
]


def check_softmax_output(probs: Tensor) -> None:
    """Raise :class:`ConfigurationError` unless ``probs`` is ``[n_events, n_bins ≥ 2]`` of rows of probabilities,
    the output INFERNO-style losses need (a softmax, not LUMIN's log-softmax multiclass tail)."""
    if probs.dim() != 2 or probs.shape[1] < 2:
        raise ConfigurationError(
            f"INFERNO needs a softmax output over >= 2 bins, got model output of shape {tuple(probs.shape)}; "
            "use tail=SoftmaxTemperatureTail in the ModelBuilder"
        )
    sums = probs.detach().sum(1)
    if (probs.detach() < 0).any() or not torch.allclose(sums, torch.ones_like(sums), atol=1e-3):
        raise ConfigurationError(
            "model output rows are not probabilities (non-negative, summing to 1); INFERNO needs a softmax "
            "output: use tail=SoftmaxTemperatureTail (and not a 'multiclass' objective, whose tail is log-softmax)"
        )


def prepare_fit_for_batch_loss(fp) -> None:
    """Set LUMIN's ``fit_params`` up for a loss the callback computes per batch (INFERNO-style): no LUMIN loss
    function, gradients in validation too, monitors told the loss is not a mean over events; and
    :func:`check_folds_hold_a_batch`."""
    fp.loss_func = None  # LUMIN skips its own loss (model.py:130); the callback sets loss_val in on_forwards_end
    fp.val_requires_grad = True  # the loss needs derivatives in validation too
    for c in fp.cbs:  # the loss is a per-batch statistic, not a mean over events
        if hasattr(c, "loss_is_meaned"):
            c.loss_is_meaned = False
    check_folds_hold_a_batch(fp)


def check_folds_hold_a_batch(fp) -> None:
    """Raise :class:`ConfigurationError` when LUMIN's batch size exceeds a training fold (``drop_last``: LUMIN would
    yield no batch from it)."""
    fy, bs = getattr(fp, "fy", None), getattr(fp, "bs", None)
    if fy is not None and bs is not None and getattr(fp, "trn_idxs", None):
        too_small = {i: n for i in fp.trn_idxs if (n := fy.get_data_count(i)) < bs}
        if too_small:
            raise ConfigurationError(
                f"batch size {bs} is larger than training fold(s) {too_small} (events per fold): LUMIN would "
                "yield no batch. Use a smaller bs or fewer, larger folds."
            )


def process_masks(targets: Optional[Tensor], analysis, state: str, check_integers: bool = True) -> Dict[str, Tensor]:
    """Boolean event masks of the analysis's summary processes from a batch's ``targets`` (process labels, shape
    ``[n]`` or ``[n, 1]``); raises :class:`TargetShapeError` for missing or mis-shaped targets and labels of no process,
    and :class:`EmptyProcessError` naming a process without events in the batch (``state``: LUMIN's
    ``train``/``valid``, for the message)."""
    if targets is None:
        raise TargetShapeError("INFERNO needs targets (process labels) in the fold file")
    if not (targets.dim() == 1 or (targets.dim() == 2 and targets.shape[1] == 1)):
        raise TargetShapeError(
            f"targets must be one column of process labels, shape (n,) or (n, 1); got {tuple(targets.shape)}"
        )
    labels = targets.reshape(-1)
    if check_integers and not torch.all((labels == labels.round()) & torch.isfinite(labels)):
        raise TargetShapeError("targets must be integer process labels")
    masks = {}
    for p in analysis.summary_processes:
        m = torch.zeros_like(labels, dtype=torch.bool)
        for v in p.labels:
            m |= labels == v
        masks[p.name] = m
    assigned = torch.stack(list(masks.values())).any(0)
    if not assigned.all():
        other = sorted({float(v) for v in labels[~assigned].unique()})
        raise TargetShapeError(f"target value(s) {other} belong to no process; labels are {analysis.labels()}")
    for name, m in masks.items():
        if not m.any():
            raise EmptyProcessError(
                f"a {state} batch of {len(labels)} events has no events of process {name!r} (labels "
                f"{analysis.process(name).labels}); use larger or stratified batches"
            )
    return masks


def soft_template(probs: Tensor, w: Tensor, total: Tensor) -> Tensor:
    """Soft histogram Σ w·p / ``total`` (fraction of the process's nominal weight per bin), float64."""
    return (w[:, None].double() * probs.double()).sum(0) / total


def nominal_soft_templates(
    analysis, masks: Dict[str, Tensor], probs: Tensor, w: Tensor, process_events: Dict[str, int], state: str
):
    """Per summary process: the batch's total weight, its nominal soft template Σ w·p / Σ w (float64) and, when
    ``process_events`` (events of each process in the fold) is given, the template's MC variance Σ (w·p / Σw)²
    scaled by n_batch / n_fold (the batch estimates the fold's template, whose MC variance is what the final fit
    sees). Negative event weights (NLO samples) enter with their sign; a bin whose batch sum comes out negative is
    clipped to 0 (its expected count cannot be negative; the number clipped is returned so the callback can say so).

    Returns ``(totals, nominal, variance, n_clipped)``; ``variance`` is None without ``process_events``."""
    totals: Dict[str, Tensor] = {}
    nominal: Dict[str, Tensor] = {}
    variance: Dict[str, Tensor] = {}
    n_clipped = 0
    for p in analysis.summary_processes:
        m = masks[p.name]
        total = w[m].sum().double()
        if not total > 0:
            raise EmptyProcessError(f"events of process {p.name!r} in this {state} batch have zero total weight")
        totals[p.name] = total
        contrib = w[m][:, None].double() * probs[m].double() / total
        t = contrib.sum(0)
        negative = t.detach() < 0
        if negative.any():
            n_clipped += int(negative.sum())
            t = t.clamp_min(0.0)
        nominal[p.name] = t
        if process_events:
            variance[p.name] = (contrib * contrib).sum(0) * (int(m.sum()) / process_events[p.name])
    return totals, nominal, variance if process_events else None, n_clipped


class PoiSigmaMetric(Callback):
    """σ of one POI on the validation fold, as a LUMIN metric: the mean over the epoch's validation batches of the
    σ the INFERNO callback computed (√ of the POI's diagonal element of the inverted Fisher matrix, in units of the
    POI). LUMIN's ``MetricLogger`` writes it to the history and to the results as ``sigma_<poi>``; it is not a
    ``main_metric``, so ``SaveBest`` and ``EarlyStopping`` still follow the loss unless the user says otherwise."""

    lower_metric_better = True

    def __init__(self, source, poi: str, main_metric: bool = False):
        super().__init__()
        self.source, self.poi, self.main_metric = source, poi, main_metric  # source: the callback with ``sigma``
        self.name = f"sigma_{poi}"
        self._start = 0

    def on_epoch_begin(self) -> None:
        if self.model.fit_params.state == "valid":
            self._start = len(self._values())

    def _values(self) -> List[float]:
        return self.source.sigma["valid"][self.poi]

    def get_metric(self) -> float:
        values = self._values()[self._start:]
        return float(sum(values) / len(values)) if values else math.nan


def add_sigma_metrics(callback) -> None:
    """In the callback's ``on_train_begin``: append one :class:`PoiSigmaMetric` per POI to LUMIN's callback list (it
    runs before ``MetricLogger`` collects its metrics), unless the list already has them."""
    fp = callback.model.fit_params
    have = {c.poi for c in fp.cbs if isinstance(c, PoiSigmaMetric) and c.source is callback}
    for poi in callback.analysis.poi_names:
        if poi not in have:
            metric = PoiSigmaMetric(callback, poi)
            metric.set_model(callback.model)
            fp.cbs.append(metric)
