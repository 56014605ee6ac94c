"""The measurement as LUMIN's validation metric: the hard-binned objective of the analysis on the validation fold,
for ``SaveBest`` and ``EarlyStopping`` to follow instead of the soft loss."""

from __future__ import annotations

import math
from typing import Dict, List, Optional

import numpy as np
import torch
from lumin.nn.metrics.eval_metric import EvalMetric

from ..analysis import Analysis
from ..evaluation.analysis import foldfile_template_model
from ..evaluation.templates import bin_occupancy, memoised_bins
from ..exceptions import ConfigurationError, FailedMinimizationError, SingularHessianError
from ..statistics.objectives import objective_scale

__all__ = ["HardSigmaMetric"]


class HardSigmaMetric(EvalMetric):
    """The analysis's objective on the **hard-binned** summary of the validation fold, in POI units
    (:func:`~lumin_inferno.statistics.objective_scale`: σ(POI) = √(I⁻¹)_poi,poi for ``"variance"``, every nuisance
    profiled), as LUMIN's main metric: ``SaveBest`` keeps the epoch where it is lowest and ``EarlyStopping``
    (``train_models(patience=...)``) stops when it stops falling.

    The soft validation loss is computed at the epoch's softmax temperature, so losses of different epochs under a
    temperature schedule are not comparable, and neither is the soft loss the number the final fit sees. This metric
    is: at the end of each validation epoch it bins the whole validation fold by the argmax of the network's output
    (independent of τ), builds the analysis's likelihood exactly as the final evaluation does
    (:func:`~lumin_inferno.evaluation.foldfile_template_model`: shifted inputs and weights from the fold file,
    ``"transform"`` systematics through ``transform``, MC statistics, control regions) and evaluates the objective
    on its Asimov data.

    Use: ``train_models(..., metric_partials=[partial(HardSigmaMetric, analysis)])``. The value is in LUMIN's
    history and results under ``name`` (default ``"hard_sigma"``). A likelihood without finite variance (e.g. all
    events in one bin early in training) scores ``inf``.

    Attributes (after training): ``occupancy``: per validation epoch, the fraction of the fold's events in each bin;
    ``empty_bins``: per epoch, how many bins received no event.
    """

    def __init__(self, analysis: Analysis, transform=None, name: Optional[str] = "hard_sigma",
                 main_metric: bool = True):
        super().__init__(name=name, lower_metric_better=True, main_metric=main_metric)
        if not isinstance(analysis, Analysis):
            raise ConfigurationError(f"HardSigmaMetric takes an Analysis, got {type(analysis).__name__}")
        self.analysis, self.transform = analysis, transform
        self.occupancy: List[np.ndarray] = []
        self.empty_bins: List[int] = []

    def on_train_begin(self) -> None:
        super().on_train_begin()
        self.occupancy, self.empty_bins = [], []

    def on_forwards_end(self) -> None:  # the metric re-reads the whole fold; nothing to collect per batch
        pass

    def on_epoch_end(self) -> None:
        fp = self.model.fit_params
        if fp.state != "valid":
            return
        self.metric = self.evaluate_fold(self.model, fp.fy, fp.val_idx)

    def evaluate(self) -> float:
        return self.evaluate_fold(self.model, self.model.fit_params.fy, self.model.fit_params.val_idx)

    def evaluate_model(self, model, fy, fold_idx, inputs, targets, weights=None, bs=None) -> float:
        raise ConfigurationError(
            "HardSigmaMetric re-reads the fold (shifted inputs, weights) and cannot score LUMIN's permuted inputs: "
            "use lumin_inferno.permutation_importance for feature importance in units of the measurement"
        )

    def bin_function(self, model):
        """Inputs (the fold file's feature order) → argmax bin of ``model`` (a LUMIN ``Model``), in eval mode."""
        net = model.model
        mask = getattr(model, "input_mask", None)
        device = next(net.parameters()).device

        def bins(x: np.ndarray) -> np.ndarray:
            x = np.asarray(x, dtype=np.float32)
            if mask is not None:
                x = x[:, mask]
            was_training = net.training
            net.eval()
            try:
                with torch.no_grad():
                    out = [net(torch.as_tensor(x[i:i + 65_536], device=device)).argmax(-1).cpu()
                           for i in range(0, len(x), 65_536)]
            finally:
                net.train(was_training)
            return torch.cat(out).numpy()

        return bins

    def evaluate_fold(self, model, fy, fold_idx: int) -> float:
        """The metric of ``model`` on fold ``fold_idx`` of ``fy``; records the fold's bin occupancy."""
        fn = memoised_bins(self.bin_function(model))  # the nominal fold is binned here and again for the model
        data = fy.get_fold(fold_idx)
        occ = bin_occupancy(fn(data["inputs"]), self.analysis.n_bins, data["weights"])
        self.occupancy.append(occ)
        self.empty_bins.append(int((occ <= 0).sum()))
        a = self.analysis
        try:
            tm = foldfile_template_model(a, fn, fy, fold_idx, self.transform)
            return objective_scale(tm, [tm.index(p) for p in a.objective_pois], a.objective.kind,
                                   a.objective.weights)
        except (SingularHessianError, FailedMinimizationError):
            return math.inf

    def get_metric(self) -> float:
        return math.nan if self.metric is None else float(self.metric)

    @property
    def history(self) -> Dict[str, list]:
        """``{"empty_bins": [...], "occupancy": [...]}`` per validation epoch."""
        return {"empty_bins": list(self.empty_bins), "occupancy": [o.tolist() for o in self.occupancy]}
