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

from typing import Dict, List, Optional, Tuple

import numpy as np
import torch
from torch import Tensor

from ..analysis import Analysis, SummaryTemplates, Systematic
from ..data.systematics import systematics_info
from ..exceptions import ConfigurationError, FoldFileError, TargetShapeError
from .base import TemplateLossCallback
from .batches import FoldShifts, RowTrackingYielder
from .common import nominal_soft_templates, process_masks, soft_template
from .denormals import restores_denormals

__all__ = ["ApproxInfernoCallback"]

#: rows of every batch compared with the fold's nominal inputs, to prove the shifted copies are the batch's events.
_N_ALIGN_CHECK = 4


class ApproxInfernoCallback(TemplateLossCallback):
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
        template_average: β of the templates' moving average over training batches (0: none, the paper's loss;
            :class:`~lumin_inferno.callbacks.base.TemplateLossCallback`).

    MC statistics in training: the batch's Σ(w·p)² estimates the variance of a template made from the batch; it is
    scaled by (events of the process in the batch) / (events of the process in the fold file) to estimate that of
    templates from the whole sample, the ones the final fit will use.

    Attributes (after training): those of :class:`~lumin_inferno.callbacks.base.TemplateLossCallback`
    (``history``, ``sigma``, ``clipped_bins``).

    Negative event weights (NLO samples) enter every template, weight ratio and Σw² with their sign; a process's
    total weight in a batch must stay > 0 (a named error otherwise).
    """

    def __init__(self, analysis: Analysis, flush_denormals: bool = True, template_average: float = 0.0):
        super().__init__(analysis, flush_denormals, template_average)
        exact = [s.name for s in analysis.systematics_of("transform")]
        if exact:
            raise ConfigurationError(
                f"systematic(s) {exact} are exact input transforms: train them with InfernoCallback, or store "
                "their ±1σ shifted inputs in the fold file and declare them as kind 'inputs'"
            )
        self._reset()

    def _reset(self) -> None:
        super()._reset()
        self._clear_fold()
        self._clear_batch()

    def _clear_fold(self) -> None:
        self._yielder: Optional[RowTrackingYielder] = None
        self._fold: Optional[FoldShifts] = None

    def _clear_batch(self) -> None:
        self._rows: Optional[Tensor] = None
        self._masks: Dict[str, Tensor] = {}

    # --------------------------------------------------------------------------------------------------- hooks
    def on_train_begin(self) -> None:
        fy = getattr(self.model.fit_params, "fy", None)
        if fy is None:
            raise ConfigurationError("ApproxInfernoCallback needs LUMIN's fit_params.fy (train through Model.fit)")
        super().on_train_begin()
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
        self._fold = FoldShifts(self.analysis, fp.fy, idx, by)
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
        self._masks = process_masks(fp.y, self.analysis, fp.state, not self._checked_output)
        if len(fp.y) != len(rows):
            raise TargetShapeError(f"{len(fp.y)} targets for a batch of {len(rows)} rows")
        self._check_alignment(fp.x, rows)
        self._rows = rows

    # -------------------------------------------------------------------------------------------------- pieces
    def _batch(self) -> Tuple[Tensor, Dict[str, Tensor], FoldShifts]:
        """(fold rows, process masks, the fold's shifts) of the current batch."""
        if self._rows is None or self._fold is None:
            raise ConfigurationError("ApproxInfernoCallback: no batch begun (on_fold_begin/on_batch_begin not called)")
        return self._rows, self._masks, self._fold

    def _check_alignment(self, x: Tensor, rows: Tensor) -> None:
        k = min(_N_ALIGN_CHECK, len(rows))
        assert self._fold is not None  # set in on_fold_begin
        expected = torch.as_tensor(self._fold.nominal_inputs[rows[:k].cpu().numpy()], dtype=x.dtype)
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
        rows, masks, fold = self._batch()
        chunks: List[Tensor] = []
        layout: List[Tuple[int, Tensor, int]] = []
        for i, s in enumerate(self.analysis.systematics_of("inputs")):
            users = [u for u in s.processes if u in masks]
            if not users:
                continue
            affected = torch.stack([masks[u] for u in users]).any(0)
            r = rows[affected]
            up, down = fold.inputs[s.stored_column]
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

    def summary_templates(self, probs: Tensor, w: Tensor) -> SummaryTemplates:
        """The templates of this batch: nominal soft templates from LUMIN's forward pass, shift_up /
        shift_down templates from one batched forward pass of the shifted inputs of the same events (only the rows
        of the processes a systematic acts on, :meth:`shifted_outputs`) or from the up/down weights (one matrix
        product per process for all weight systematics), the MC variance of each template."""
        (rows, masks, fold), a = self._batch(), self.analysis
        totals, nominal, variance, clipped = nominal_soft_templates(a, masks, probs, w, self.mc_events,
                                                                    self.model.fit_params.state)
        self.clipped_bins += clipped
        shifted: Dict[Tuple[str, str], Tuple[Tensor, Tensor]] = {}
        outputs = self.shifted_outputs(self.model.fit_params.x)
        for i, s in enumerate(a.systematics_of("inputs")):
            if i not in outputs:
                continue
            affected, pair = outputs[i]
            for u in s.processes:
                if u in masks:
                    sub = masks[u][affected]
                    up, down = (soft_template(ps[sub], w[masks[u]], totals[u]) for ps in pair)
                    shifted[(u, s.name)] = (up, down)
        by_process: Dict[str, List[Systematic]] = {}
        for s in a.systematics_of("weights"):
            for u in s.processes:
                if u in masks:
                    by_process.setdefault(u, []).append(s)
        for u, systs in by_process.items():
            m = masks[u]
            r = rows[m]
            stack, index = fold.weight_ratios, fold.weight_index
            assert stack is not None  # the fold has weight systematics
            pick = torch.tensor([index[s.stored_column] for s in systs], device=stack.device)
            ratios = stack[pick][:, :, r.to(stack.device)].to(w.device)  # [K, 2, n_u]
            contrib = ratios * w[m].double()  # shifted weights of the process's events
            t = contrib @ probs[m].double() / totals[u]  # [K, 2, bins]
            rows_t = t.reshape(-1, t.shape[-1]).unbind(0)  # one autograd node for all K pairs, not 2K selects
            for k, s in enumerate(systs):
                shifted[(u, s.name)] = (rows_t[2 * k], rows_t[2 * k + 1])
        return SummaryTemplates(nominal, shifted, variance)
