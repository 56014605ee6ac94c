"""The hooks every INFERNO-style callback shares: a per-batch loss that is the analysis's objective on the binned
likelihood of the batch's soft templates.

A subclass says how the batch's templates are made (:meth:`TemplateLossCallback.summary_templates`: the exact
callback differentiates an input transform, the approximate one passes shifted copies of the events) and what it
needs per fold and per batch; this class does the rest (with ``template_average``, a moving average of the
templates over training batches): LUMIN's ``fit_params`` set-up, the output check, the
objective from the Fisher information (:mod:`lumin_inferno.statistics`), the per-batch σ(POI) record and LUMIN
metric columns, denormal flushing.
"""

from __future__ import annotations

import math
from typing import Dict, List

import numpy as np
import torch
from lumin.nn.callbacks.callback import Callback
from torch import Tensor

from ..analysis import Analysis, SummaryTemplates, template_model
from ..exceptions import ConfigurationError, EmptyProcessError, TargetShapeError
from ..statistics.hessian import fisher_information
from ..statistics.likelihood import TemplateModel
from ..statistics.objectives import model_objective, poi_covariance
from .common import add_sigma_metrics, check_softmax_output, prepare_fit_for_batch_loss
from .denormals import DenormalFlush, restores_denormals

__all__ = ["TemplateLossCallback"]


class TemplateLossCallback(Callback):
    """Base of :class:`~lumin_inferno.callbacks.InfernoCallback` and
    :class:`~lumin_inferno.callbacks.ApproxInfernoCallback`: sets ``fit_params.loss_val`` to the objective of
    ``analysis`` (``analysis.objective``: a POI's variance, weighted variances or log det of the POI covariance,
    from the Fisher information of :meth:`template_model` on its Asimov data) in ``on_forwards_end``.

    Attributes (after training):
        history: ``{"train": [...], "valid": [...]}`` per-batch objective values; ``sigma``:
            ``{"train": {poi: [...]}, "valid": {poi: [...]}}`` each POI's expected σ per batch (√ of the diagonal of
            the POI covariance, POI units). LUMIN's history and results hold them per epoch as ``sigma_<poi>``
            (:class:`~lumin_inferno.callbacks.common.PoiSigmaMetric`).
        clipped_bins: nominal soft-template bins whose batch sum of (negative) event weights came out < 0 and were
            clipped to 0.

    ``template_average`` = β in [0, 1): in training, the loss is the objective of the templates' exponential moving
    average over batches, T̄ₜ = β·T̄ₜ₋₁ + (1 − β)·Tₜ (restarted every epoch), with the gradient of the current
    batch's templates only (∂σ²/∂T at T̄ₜ times ∂Tₜ/∂θ). A batch's templates are a noisy estimate of the sample's,
    and σ² is not linear in them: at β = 0 (the default, the paper's loss) the loss and its gradient are evaluated
    at the noisy point, biased where bins hold few events; the average evaluates them near the sample's templates,
    from about 1/(1 − β) batches. Validation batches are not averaged.
    """

    def __init__(self, analysis: Analysis, flush_denormals: bool = True, template_average: float = 0.0):
        super().__init__()
        if not isinstance(analysis, Analysis):
            raise ConfigurationError(f"{type(self).__name__} takes an Analysis, got {type(analysis).__name__}")
        if not 0.0 <= template_average < 1.0:
            raise ConfigurationError(f"template_average must be in [0, 1), got {template_average}")
        self.template_average = float(template_average)
        self.analysis = analysis
        self.flush_denormals = flush_denormals
        self._denormals = DenormalFlush(flush_denormals)

    # --------------------------------------------------------------------------------------------------- state
    def _reset(self) -> None:
        self.history: Dict[str, List[float]] = {"train": [], "valid": []}
        self.clipped_bins = 0
        self.sigma: Dict[str, Dict[str, List[float]]] = {
            s: {p: [] for p in self.analysis.poi_names} for s in ("train", "valid")
        }
        self._checked_output = False
        self._process_events: Dict[str, int] = {}
        self._average: Dict[object, Tensor] = {}

    # --------------------------------------------------------------------------------------------------- hooks
    def on_train_begin(self) -> None:
        super().on_train_begin()
        self._reset()
        add_sigma_metrics(self)
        fp = self.model.fit_params
        prepare_fit_for_batch_loss(fp)
        fy = getattr(fp, "fy", None)
        if fy is not None:
            self._count_events(fy)
        elif self.analysis.mc_stat:
            raise ConfigurationError("MC statistics in training need LUMIN's fit_params.fy (or mc_stat=False)")

    def on_epoch_begin(self) -> None:
        if self.model.fit_params.state == "train":
            self._average = {}

    def _count_events(self, fy) -> None:
        """Events per summary process in the fold file (a named error for a process without any). With MC
        statistics, the batch's Σ(w·p)² is scaled by (events in the batch) / (these) to estimate the MC variance of
        templates made from the whole sample, the ones the final fit will use."""
        where = getattr(getattr(fy, "foldfile", None), "filename", "the fold file")
        folds = [fy.get_column("targets", n_folds=1, fold_idx=i) for i in range(fy.n_folds)]
        if any(t is None for t in folds):
            raise TargetShapeError(f"{type(self).__name__} needs targets (process labels) in {where}")
        targets = np.concatenate([np.asarray(t).reshape(-1) for t in folds])
        for p in self.analysis.summary_processes:
            n = int(np.isin(targets, p.labels).sum())
            if n == 0:
                raise EmptyProcessError(f"process {p.name!r} (labels {p.labels}) has no events in {where}")
            self._process_events[p.name] = n

    @property
    def mc_events(self) -> Dict[str, int]:
        """Events per process in the fold file when the analysis has MC statistics (else empty: no MC variance)."""
        return self._process_events if self.analysis.mc_stat else {}

    @restores_denormals
    def on_forwards_end(self) -> None:
        fp = self.model.fit_params
        if fp.state == "test":
            return
        probs = fp.y_pred
        if not self._checked_output:
            check_softmax_output(probs)
            if probs.shape[1] != self.analysis.n_bins:
                raise ConfigurationError(
                    f"the network has {probs.shape[1]} outputs but the analysis's summary has n_bins = "
                    f"{self.analysis.n_bins}"
                )
            self._checked_output = True
        w = torch.ones(len(probs), dtype=probs.dtype, device=probs.device) if fp.w is None else fp.w.reshape(-1)
        if len(w) != len(probs):
            raise TargetShapeError(f"{len(probs)} events but {len(w)} weights; weights must be one value per event")
        model = self.template_model(probs, w)
        info = fisher_information(model)
        a = self.analysis
        value = model_objective(model, info, [model.index(p) for p in a.objective_pois], a.objective.kind,
                                a.objective.weights)
        fp.loss_val = value
        self.history[fp.state].append(float(value.detach()))
        with torch.no_grad():
            var = poi_covariance(info.detach(), model.poi_indices).diagonal()
        for p, v in zip(model.pois, var.tolist()):
            self.sigma[fp.state][p].append(math.sqrt(max(v, 0.0)))

    def template_model(self, probs: Tensor, w: Tensor) -> TemplateModel:
        """The binned likelihood of this batch from the network's softmax output ``probs`` ``[n, n_bins]`` and the
        event weights ``w`` ``[n]``, differentiable w.r.t. the network: the analysis's model of
        :meth:`summary_templates`, averaged over batches in training when ``template_average`` > 0."""
        templates = self.summary_templates(probs, w)
        if self.template_average > 0 and self.model.fit_params.state == "train":
            templates = self._averaged(templates)
        return template_model(self.analysis, templates)

    def summary_templates(self, probs: Tensor, w: Tensor) -> SummaryTemplates:
        """This batch's soft templates of every process (nominal, shift_up/shift_down, MC variance)."""
        raise NotImplementedError

    def _averaged(self, t: SummaryTemplates) -> SummaryTemplates:
        """``t`` with every template replaced by its moving average (value) plus the batch's own template's
        gradient: T̄ + (T − T.detach()). The average is kept detached."""
        beta = self.template_average

        def average(key: object, x: Tensor) -> Tensor:
            past = self._average.get(key)
            now = x.detach() if past is None or past.shape != x.shape else beta * past + (1 - beta) * x.detach()
            self._average[key] = now
            return now + (x - x.detach())

        nominal = {p: average(("nominal", p), x) for p, x in t.nominal.items()}
        shifted = {k: (average(("up",) + k, up), average(("down",) + k, down)) for k, (up, down) in t.shifted.items()}
        variance = None if t.mc_variance is None else {p: average(("mc", p), x) for p, x in t.mc_variance.items()}
        return SummaryTemplates(nominal, shifted, variance)

    def on_batch_end(self) -> None:
        self._clear_batch()
        self._denormals.end()

    def _clear_batch(self) -> None:
        """Drop the batch's state (subclasses)."""

    def on_train_end(self) -> None:
        super().on_train_end()
        self._denormals.end()
