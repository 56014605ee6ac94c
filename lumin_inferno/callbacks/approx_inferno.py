"""Approximate INFERNO: the INFERNO loss of an :class:`~lumin_inferno.analysis.Analysis` whose shape systematics
are ±1σ shifted inputs or up/down event weights stored in the fold file, as real analyses have them.

Per batch the callback passes the nominal inputs (LUMIN's own forward pass) and the shifted inputs **of the same
events** through the network, builds soft nominal / shift_up / shift_down templates per process (and their MC
variance Σ(w·p)²), adds the analysis's fixed channels, and sets ``fit_params.loss_val`` to the analysis's
objective (variance of a POI, weighted POI variances or log det of the POI covariance) from the Fisher information
of the full binned likelihood on Asimov data (:func:`~lumin_inferno.analysis.template_model`). At the nominal
point ``code4p``'s slope is the central difference (shift_up − shift_down)/2, so the loss is exact INFERNO with
∂T/∂α replaced by that finite difference (equal for templates linear in the nuisance; tested).

The batch's events are found by :class:`~lumin_inferno.callbacks.batches.RowTrackingYielder`, which LUMIN
iterates in place of its ``BatchYielder`` (same shuffle, int64 row numbers); a few rows of every batch are checked
against the fold's nominal inputs. Statistics are in :mod:`lumin_inferno.statistics`.
"""

from __future__ import annotations

import math
from typing import Dict, List, Optional, Tuple

import numpy as np
import torch
from lumin.nn.callbacks.callback import Callback
from lumin.utils.misc import to_device
from torch import Tensor

from ..analysis import Analysis, SummaryTemplates, Systematic, template_model
from ..data.systematics import read_fold_systematics, systematics_info
from ..exceptions import ConfigurationError, EmptyProcessError, FoldFileError, TargetShapeError
from ..statistics.hessian import fisher_information
from ..statistics.likelihood import TemplateModel
from ..statistics.objectives import model_objective, poi_covariance
from .batches import RowTrackingYielder
from .common import (
    DenormalFlush,
    add_sigma_metrics,
    check_softmax_output,
    nominal_soft_templates,
    prepare_fit_for_batch_loss,
    process_masks,
    restores_denormals,
    soft_template,
)

__all__ = ["ApproxInfernoCallback"]

#: rows of every batch compared with the fold's nominal inputs, to prove the shifted copies are the batch's events.
_N_ALIGN_CHECK = 4


class ApproxInfernoCallback(Callback):
    r"""Train a LUMIN model on the INFERNO objective of ``analysis`` with systematics from the fold file.

    Use through ``train_models(..., cb_partials=[partial(ApproxInfernoCallback, analysis)])`` on a fold file
    written by :func:`~lumin_inferno.data.systematics.write_systematics_foldfile`; the model must end in a softmax
    over ``analysis.n_bins`` bins (e.g. :class:`~lumin_inferno.models.SoftmaxTemperatureTail`, objective
    ``"classification"``).

    Args:
        analysis: the measurement. Its ``"inputs"`` systematics read ``shift_{up,down}_inputs_<column>``, its
            ``"weights"`` systematics ``shift_{up,down}_weights_<column>`` from the fold file; ``"norm"``
            systematics, factors, fixed channels and MC statistics enter the likelihood as declared.
            ``"transform"`` systematics need :class:`~lumin_inferno.callbacks.InfernoCallback`.
        flush_denormals: flush denormal numbers to zero on the CPU during each batch
            (:class:`~lumin_inferno.callbacks.DenormalFlush`).

    MC statistics in training: the batch's Σ(w·p)² estimates the variance of a template made from the batch; it is
    scaled by (events of the process in the batch) / (events of the process in the fold file) to estimate that of
    templates from the whole sample, the ones the final fit will use.

    Attributes (after training):
        history: ``{"train": [...], "valid": [...]}`` per-batch objective values, and ``sigma`` :
            ``{"train": {poi: [...]}, "valid": {poi: [...]}}`` each POI's expected σ per batch; LUMIN's history and
            results hold them per epoch as ``sigma_<poi>`` (:class:`~lumin_inferno.callbacks.common.PoiSigmaMetric`).
        clipped_bins: nominal soft-template bins whose batch sum of (negative) event weights came out < 0 and were
            clipped to 0.

    Negative event weights (NLO samples) enter every template, weight ratio and Σw² with their sign; a process's
    total weight in a batch must stay > 0 (a named error otherwise).
    """

    def __init__(self, analysis: Analysis, flush_denormals: bool = True):
        super().__init__()
        if not isinstance(analysis, Analysis):
            raise ConfigurationError(f"ApproxInfernoCallback takes an Analysis, got {type(analysis).__name__}")
        exact = [s.name for s in analysis.systematics_of("transform")]
        if exact:
            raise ConfigurationError(
                f"systematic(s) {exact} are exact input transforms: train them with InfernoCallback, or store "
                "their ±1σ shifted inputs in the fold file and declare them as kind 'inputs'"
            )
        self.analysis = analysis
        self.flush_denormals = flush_denormals
        self._denormals = DenormalFlush(flush_denormals)
        self._reset()

    # --------------------------------------------------------------------------------------------------- state
    def _reset(self) -> None:
        self.history: Dict[str, List[float]] = {"train": [], "valid": []}
        self.clipped_bins = 0
        self.sigma: Dict[str, Dict[str, List[float]]] = {
            s: {p: [] for p in self.analysis.poi_names} for s in ("train", "valid")
        }
        self._checked_output = False
        self._process_events: Dict[str, int] = {}
        self._clear_fold()
        self._clear_batch()

    def _clear_fold(self) -> None:
        self._yielder: Optional[RowTrackingYielder] = None
        self._fold_inputs: Optional[np.ndarray] = None
        self._shift_inputs: Dict[str, Tuple[Tensor, Tensor]] = {}
        self._weight_ratios: Dict[str, Tuple[Tensor, Tensor]] = {}
        self._weight_stack: Optional[Tuple[Tensor, Dict[str, int]]] = None

    def _clear_batch(self) -> None:
        self._rows: Optional[Tensor] = None
        self._masks: Dict[str, Tensor] = {}

    # --------------------------------------------------------------------------------------------------- hooks
    def on_train_begin(self) -> None:
        super().on_train_begin()
        self._reset()
        add_sigma_metrics(self)
        fp = self.model.fit_params
        fy = getattr(fp, "fy", None)
        if fy is None:
            raise ConfigurationError("ApproxInfernoCallback needs LUMIN's fit_params.fy (train through Model.fit)")
        prepare_fit_for_batch_loss(fp)
        info = systematics_info(fy)
        for s in self.analysis.systematics:
            if s.kind not in ("inputs", "weights"):
                continue
            have = info.input_systematics if s.kind == "inputs" else info.weight_systematics
            if s.column not in have:
                raise FoldFileError(
                    f"systematic {s.name!r} (on {list(s.processes)}) has no shifted {s.kind} {s.column!r} in "
                    f"{fy.foldfile.filename}; it has input systematics {info.input_systematics} and weight "
                    f"systematics {info.weight_systematics}"
                )
        targets = np.concatenate([np.asarray(fy.get_column("targets", n_folds=1, fold_idx=i)).reshape(-1)
                                  for i in range(fy.n_folds)])
        for p in self.analysis.summary_processes:
            n = int(np.isin(targets, p.labels).sum())
            if n == 0:
                raise EmptyProcessError(
                    f"process {p.name!r} (labels {p.labels}) has no events in {fy.foldfile.filename}"
                )
            self._process_events[p.name] = n

    def on_fold_begin(self) -> None:
        fp = self.model.fit_params
        if fp.state == "test":
            return
        idx = fp.trn_idx if fp.state == "train" else fp.val_idx
        by = fp.by.yielder if isinstance(fp.by, RowTrackingYielder) else fp.by
        if isinstance(by.inputs, tuple) or getattr(by, "matrix_inputs", None) is not None:
            raise ConfigurationError("ApproxInfernoCallback supports flat inputs only (no matrix inputs)")
        if by.targets is None or "multiclass" in by.objective:
            raise ConfigurationError(
                "ApproxInfernoCallback needs targets and a non-multiclass objective (use 'classification')"
            )
        n = len(by.inputs)
        if np.asarray(by.targets).reshape(n, -1).shape[1] != 1:
            raise TargetShapeError(f"targets must be one column of process labels, got shape {np.shape(by.targets)}")
        columns = self._input_columns(fp.fy, by)
        inputs = {s.column: s for s in self.analysis.systematics_of("inputs")}
        weights = {s.column: s for s in self.analysis.systematics_of("weights")}
        shifted = read_fold_systematics(fp.fy, idx, list(inputs), list(weights))
        for column, (up, down) in shifted.inputs.items():
            up, down = up[:, columns], down[:, columns]
            if up.shape != by.inputs.shape:
                raise FoldFileError(
                    f"systematic {inputs[column].name!r}: fold {idx} shifted inputs have shape {up.shape} after "
                    f"feature selection but the batch inputs {by.inputs.shape}"
                )
            # on LUMIN's device once per fold, as BatchYielder(bulk_move=True) does with the nominal inputs
            self._shift_inputs[column] = (to_device(torch.as_tensor(up)), to_device(torch.as_tensor(down)))
        if shifted.weights:
            nominal_w = fp.fy.get_column("weights", n_folds=1, fold_idx=idx)
            nominal_w = np.ones(n, dtype=np.float32) if nominal_w is None else nominal_w.reshape(-1)
            for column, pair in shifted.weights.items():
                ratios = []
                for direction, w_shift in zip(("up", "down"), pair):
                    bad = (nominal_w == 0) & (w_shift != 0)
                    if bad.any():
                        raise FoldFileError(
                            f"weight systematic {weights[column].name!r}: fold {idx} has {int(bad.sum())} event(s) "
                            f"with zero nominal weight but non-zero {direction} weight; their shift cannot be "
                            "expressed per event"
                        )
                    ratio = np.divide(w_shift, nominal_w, out=np.zeros(n, dtype=np.float64), where=nominal_w != 0)
                    ratios.append(to_device(torch.as_tensor(ratio, dtype=torch.float64)))
                self._weight_ratios[column] = (ratios[0], ratios[1])
            columns_w = list(self._weight_ratios)
            self._weight_stack = (torch.stack([torch.stack(self._weight_ratios[c]) for c in columns_w]),
                                  {c: i for i, c in enumerate(columns_w)})  # [K, 2, n_fold], column → K index
        self._fold_inputs = by.inputs
        self._yielder = RowTrackingYielder(by)
        fp.by = self._yielder

    def on_fold_end(self) -> None:
        fp = self.model.fit_params
        if fp.state == "test" or self._yielder is None:
            return
        fp.by = self._yielder.yielder  # metrics read by.targets at epoch end; the val yielder is reused
        self._clear_fold()

    @restores_denormals
    def on_batch_begin(self) -> None:
        fp = self.model.fit_params
        self._denormals.begin()
        if fp.state == "test":
            return
        if self._yielder is None or self._yielder.rows is None or fp.by is not self._yielder:
            raise ConfigurationError(
                "the batch does not come from the row-tracking yielder ApproxInfernoCallback set in on_fold_begin "
                "(another callback replaced fit_params.by, or the model was not trained via Model.fit)"
            )
        rows = torch.as_tensor(self._yielder.rows, device=fp.x.device)
        if fp.y is None or fp.y.shape[0] != len(rows) or fp.y.reshape(len(rows), -1).shape[1] != 1:
            raise TargetShapeError("targets must be one column of process labels")
        self._check_alignment(fp.x, rows)
        self._rows = rows
        self._masks = process_masks(fp.y.reshape(-1), self.analysis, fp.state, not self._checked_output)

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
        model = self.template_model(fp.x, probs, w)
        info = fisher_information(model)
        a = self.analysis
        indices = [model.index(p) for p in a.objective_pois]
        value = model_objective(model, info, indices, a.objective.kind, a.objective.weights)
        fp.loss_val = value
        self.history[fp.state].append(float(value.detach()))
        with torch.no_grad():
            var = poi_covariance(info.detach(), model.poi_indices).diagonal()
        for p, v in zip(model.pois, var.tolist()):
            self.sigma[fp.state][p].append(math.sqrt(max(v, 0.0)))

    def on_batch_end(self) -> None:
        self._clear_batch()
        self._denormals.end()

    def on_train_end(self) -> None:
        super().on_train_end()
        self._denormals.end()

    # -------------------------------------------------------------------------------------------------- pieces
    @staticmethod
    def _input_columns(fy, by) -> np.ndarray:
        """Columns of the stored (full) inputs that reach the network: FoldYielder's ignored features removed, then
        the BatchYielder's input mask applied, exactly as LUMIN does to the nominal inputs."""
        feats = list(fy.input_feats)
        ignore = set(getattr(fy, "_ignore_feats", []))
        columns = np.array([i for i, f in enumerate(feats) if f not in ignore], dtype=np.int64)
        mask = getattr(by, "input_mask", None)
        return columns if mask is None else columns[np.asarray(mask)]

    def _check_alignment(self, x: Tensor, rows: Tensor) -> None:
        k = min(_N_ALIGN_CHECK, len(rows))
        expected = torch.as_tensor(self._fold_inputs[rows[:k].cpu().numpy()], dtype=x.dtype)
        if not torch.equal(x[:k].detach().cpu(), expected):
            raise ConfigurationError(
                "the batch inputs are not the fold's rows the yielder recorded: the shifted copies would not be the "
                "batch's events (a callback before ApproxInfernoCallback changed the inputs?)"
            )

    def shifted_outputs(self, x: Tensor) -> Dict[int, Tuple[Tensor, Tuple[Tensor, Tensor]]]:
        """Network outputs of the shifted copies of the batch's events, for every ``"inputs"`` systematic with
        processes in the batch: its index in ``analysis.systematics_of("inputs")`` → (mask of the batch rows it
        affects, (outputs at +1σ, at −1σ) of those rows). One forward pass for all systematics and both directions (the
        rows concatenated), so the cost is the network's on the affected rows, not a Python loop of small passes."""
        rows, masks = self._rows, self._masks
        chunks: List[Tensor] = []
        layout: List[Tuple[int, Tensor, int]] = []
        for i, s in enumerate(self.analysis.systematics_of("inputs")):
            users = [u for u in s.processes if u in masks]
            if not users:
                continue
            affected = torch.stack([masks[u] for u in users]).any(0)
            r = rows[affected]
            up, down = self._shift_inputs[s.column]
            chunks += [up[r], down[r]]
            layout.append((i, affected, len(r)))
        if not chunks:
            return {}
        out = self.model.model(torch.cat(chunks).to(device=x.device, dtype=x.dtype))
        result, start = {}, 0
        for i, affected, n in layout:
            result[i] = (affected, (out[start:start + n], out[start + n:start + 2 * n]))
            start += 2 * n
        return result

    def template_model(self, x: Tensor, probs: Tensor, w: Tensor) -> TemplateModel:
        """The binned likelihood of this batch: nominal soft templates from LUMIN's forward pass, shift_up /
        shift_down templates from one batched forward pass of the shifted inputs of the same events (only the rows
        of the processes a systematic acts on, :meth:`shifted_outputs`) or from the up/down weights (one matrix
        product per process for all weight systematics), the MC variance of each template, the fixed channels."""
        rows, masks, a = self._rows, self._masks, self.analysis
        totals, nominal, variance, clipped = nominal_soft_templates(a, masks, probs, w, self._process_events,
                                                                    self.model.fit_params.state)
        self.clipped_bins += clipped
        shifted: Dict[Tuple[str, str], Tuple[Tensor, Tensor]] = {}
        outputs = self.shifted_outputs(x)
        for i, s in enumerate(a.systematics_of("inputs")):
            if i not in outputs:
                continue
            affected, pair = outputs[i]
            for u in s.processes:
                if u in masks:
                    sub = masks[u][affected]
                    shifted[(u, s.name)] = tuple(soft_template(ps[sub], w[masks[u]], totals[u]) for ps in pair)
        by_process: Dict[str, List[Systematic]] = {}
        for s in a.systematics_of("weights"):
            for u in s.processes:
                if u in masks:
                    by_process.setdefault(u, []).append(s)
        for u, systs in by_process.items():
            m = masks[u]
            r = rows[m]
            stack, index = self._weight_stack
            k = torch.tensor([index[s.column] for s in systs], device=stack.device)
            ratios = stack[k][:, :, r.to(stack.device)].to(w.device)  # [K, 2, n_u]
            contrib = ratios * w[m].double()  # shifted weights of the process's events
            t = contrib @ probs[m].double() / totals[u]  # [K, 2, bins]
            rows_t = t.reshape(-1, t.shape[-1]).unbind(0)  # one autograd node for all K pairs, not 2K selects
            for k, s in enumerate(systs):
                shifted[(u, s.name)] = (rows_t[2 * k], rows_t[2 * k + 1])
        return template_model(a, SummaryTemplates(nominal, shifted, variance))
