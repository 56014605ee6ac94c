"""Approximate INFERNO: the INFERNO loss from ±1σ shifted inputs (or up/down weights) stored in the fold file.

Real analyses rarely have a differentiable model of a systematic's effect on the inputs; they have the same events
re-processed with the systematic shifted up and down. Per batch this callback passes the nominal inputs (LUMIN's
own forward pass) and the shifted inputs **of the same events** through the network, builds soft nominal /
shift_up / shift_down templates per process, interpolates them in each nuisance with pyhf ``code4p`` (shapes) and
``code4`` (normalisations), and sets ``fit_params.loss_val`` to (I⁻¹)_poi,poi, the expected variance of the POI from
the Fisher information of the binned Poisson likelihood on Asimov data. At the nominal point ``code4p``'s slope is
the central difference (shift_up − shift_down)/2, so the loss is exact INFERNO with ∂T/∂θ replaced by that finite
difference (equal for templates linear in the nuisance; tested).

How the shifted copies follow LUMIN's shuffling: in ``on_fold_begin`` the callback reads the fold's shifted data
(:mod:`lumin_inferno.data.systematics`) and stacks the **event's row number** as a second column onto the
BatchYielder's targets, which LUMIN shuffles together with the inputs; ``on_batch_begin`` slices it off again (so
other callbacks see the plain targets), looks the shifted rows up by it and checks a few rows of the batch against
the fold's nominal inputs. ``on_fold_end`` restores the targets. Statistics are in :mod:`lumin_inferno.statistics`.
"""

from __future__ import annotations

from typing import Dict, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from lumin.nn.callbacks.callback import Callback
from lumin.utils.misc import to_device
from torch import Tensor

from ..data.systematics import read_fold_systematics, systematics_info
from ..exceptions import ConfigurationError, EmptyProcessError, FoldFileError, InvalidModelSpec, TargetShapeError
from ..statistics.builders import ProcessSpec, multi_process_model
from ..statistics.hessian import fisher_information, poi_variance
from ..statistics.likelihood import Parameter, TemplateModel
from .inferno import DenormalFlush, check_softmax_output, prepare_fit_for_batch_loss, restores_denormals

__all__ = ["ApproxInfernoCallback"]

#: LUMIN's BatchYielder turns targets into float32 tensors: row numbers are exact up to 2**24.
_MAX_FOLD_EVENTS = 2**24
#: rows of every batch compared with the fold's nominal inputs, to prove the shifted copies follow the shuffling.
_N_ALIGN_CHECK = 4


class ApproxInfernoCallback(Callback):
    r"""Train a LUMIN model on the INFERNO loss with systematics given as ±1σ shifted inputs / weights.

    Use through ``train_models(..., cb_partials=[partial(ApproxInfernoCallback, ...)])`` on a fold file written by
    :func:`~lumin_inferno.data.systematics.write_systematics_foldfile`; the model must end in a softmax over the
    bins (e.g. :class:`~lumin_inferno.models.SoftmaxTemperatureTail`, objective ``"classification"``).

    Args:
        poi: the parameter of interest, the expected yield (events) of the process whose ``expected_yield`` names it,
            e.g. ``Parameter("s", 50.0)``; the loss is its variance in events².
        processes: the processes (:class:`~lumin_inferno.statistics.builders.ProcessSpec`): yield, the names of the
            shape systematics acting on each (their shifted inputs or weights must be in the fold file) and
            normalisation systematics κ or (κ_up, κ_down). A nuisance named on several processes is one parameter
            (fully correlated).
        labels: process name → target value(s) of its events in the fold file, e.g. ``{"signal": 1,
            "background": 0}``. Every event must belong to exactly one process.
        parameters: background-yield parameters named by ``expected_yield`` (required) and nuisances whose default
            ``Parameter(name, 0.0, constraint=1.0)`` (a unit Gaussian, in units of the ±1σ shift) does not fit,
            e.g. ``Parameter("r", 0.0)`` for a free nuisance.
        steps: nuisance name → the physical shift of the stored ±1σ copies (e.g. ``{"r": 0.2}``), so that the
            nuisances above can be written in physical units; default 1 (units of the shift).
        flush_denormals: flush denormal numbers to zero on the CPU during each batch, as
            :class:`~lumin_inferno.callbacks.InfernoCallback` does (:class:`~lumin_inferno.callbacks.DenormalFlush`).

    Attributes (after training):
        history: ``{"train": [...], "valid": [...]}`` per-batch loss values (variance of the POI).
    """

    def __init__(
        self,
        poi: Parameter,
        processes: Sequence[ProcessSpec],
        labels: Mapping[str, Union[int, Sequence[int]]],
        parameters: Sequence[Parameter] = (),
        steps: Optional[Mapping[str, float]] = None,
        flush_denormals: bool = True,
    ):
        super().__init__()
        self.flush_denormals = flush_denormals
        self._denormals = DenormalFlush(flush_denormals)
        self.poi = poi
        self.processes = list(processes)
        self.parameters = list(parameters)
        self.steps = dict(steps or {})
        self.labels: Dict[str, Tuple[int, ...]] = {}
        for p in self.processes:
            if p.name not in labels:
                raise InvalidModelSpec(f"no target label given for process {p.name!r}")
            v = labels[p.name]
            self.labels[p.name] = tuple(int(x) for x in (v if isinstance(v, (list, tuple)) else [v]))
        extra = set(labels) - {p.name for p in self.processes}
        if extra:
            raise InvalidModelSpec(f"labels given for unknown process(es) {sorted(extra)}")
        flat = [x for v in self.labels.values() for x in v]
        if len(set(flat)) != len(flat):
            raise InvalidModelSpec(f"a target label belongs to more than one process: {self.labels}")
        if not poi.nominal > 0:
            raise InvalidModelSpec(f"the poi {poi.name!r} is a yield and must be > 0 at nominal, got {poi.nominal}")
        self.shape_systematics: List[str] = list(dict.fromkeys(n for p in self.processes for n in p.shape_systematics))
        self._dry_run()  # every specification error now, not at the first batch
        self._reset()

    def _dry_run(self) -> None:
        flat = torch.full((2,), 0.5, dtype=torch.float64)
        shifted = {(p.name, n): (flat, flat) for p in self.processes for n in p.shape_systematics}
        multi_process_model(self.processes, {p.name: flat for p in self.processes}, shifted, self.poi,
                            self.parameters, self.steps)

    # --------------------------------------------------------------------------------------------------- state
    def _reset(self) -> None:
        self.history: Dict[str, List[float]] = {"train": [], "valid": []}
        self._checked_output = False
        self._kinds: Dict[str, str] = {}
        self._clear_fold()
        self._clear_batch()

    def _clear_fold(self) -> None:
        self._fold_inputs: Optional[np.ndarray] = None
        self._orig_targets: Optional[np.ndarray] = None
        self._shift_inputs: Dict[str, Tuple[Tensor, Tensor]] = {}
        self._weight_ratios: Dict[str, Tuple[Tensor, Tensor]] = {}

    def _clear_batch(self) -> None:
        self._rows: Optional[Tensor] = None
        self._masks: Dict[str, Tensor] = {}

    # --------------------------------------------------------------------------------------------------- hooks
    def on_train_begin(self) -> None:
        super().on_train_begin()
        self._reset()
        fp = self.model.fit_params
        fy = getattr(fp, "fy", None)
        if fy is None:
            raise ConfigurationError("ApproxInfernoCallback needs LUMIN's fit_params.fy (train through Model.fit)")
        prepare_fit_for_batch_loss(fp)
        info = systematics_info(fy)
        for name in self.shape_systematics:
            if name in info.input_systematics:
                self._kinds[name] = "inputs"
            elif name in info.weight_systematics:
                self._kinds[name] = "weights"
            else:
                users = [p.name for p in self.processes if name in p.shape_systematics]
                raise FoldFileError(
                    f"systematic {name!r} (on {users}) has no shifted inputs or weights in {fy.foldfile.filename}; "
                    f"it has input systematics {info.input_systematics} and weight systematics "
                    f"{info.weight_systematics}"
                )

    def on_fold_begin(self) -> None:
        fp = self.model.fit_params
        if fp.state == "test":
            return
        idx = fp.trn_idx if fp.state == "train" else fp.val_idx
        by = fp.by
        if isinstance(by.inputs, tuple) or getattr(by, "matrix_inputs", None) is not None:
            raise ConfigurationError("ApproxInfernoCallback supports flat inputs only (no matrix inputs)")
        if by.targets is None or "multiclass" in by.objective:
            raise ConfigurationError(
                "ApproxInfernoCallback needs targets and a non-multiclass objective (use 'classification')"
            )
        targets = np.asarray(by.targets)
        n = len(by.inputs)
        if targets.reshape(n, -1).shape[1] != 1:
            raise TargetShapeError(f"targets must be one column of process labels, got shape {targets.shape}")
        if n >= _MAX_FOLD_EVENTS:
            raise ConfigurationError(f"fold {idx} has {n} events; at most {_MAX_FOLD_EVENTS - 1} per fold are supported")
        inputs_names = [s for s, k in self._kinds.items() if k == "inputs"]
        weight_names = [s for s, k in self._kinds.items() if k == "weights"]
        shifted = read_fold_systematics(fp.fy, idx, inputs_names, weight_names)
        columns = self._input_columns(fp.fy, by)
        for name, (up, down) in shifted.inputs.items():
            up, down = up[:, columns], down[:, columns]
            if up.shape != by.inputs.shape:
                raise FoldFileError(
                    f"systematic {name!r}: fold {idx} shifted inputs have shape {up.shape} after feature selection "
                    f"but the batch inputs {by.inputs.shape}"
                )
            # on LUMIN's device once per fold, as BatchYielder(bulk_move=True) does with the nominal inputs
            self._shift_inputs[name] = (to_device(torch.as_tensor(up)), to_device(torch.as_tensor(down)))
        if shifted.weights:
            nominal_w = fp.fy.get_column("weights", n_folds=1, fold_idx=idx)
            nominal_w = np.ones(n, dtype=np.float32) if nominal_w is None else nominal_w.reshape(-1)
            for name, pair in shifted.weights.items():
                ratios = []
                for direction, w_shift in zip(("up", "down"), pair):
                    bad = (nominal_w == 0) & (w_shift != 0)
                    if bad.any():
                        raise FoldFileError(
                            f"weight systematic {name!r}: fold {idx} has {int(bad.sum())} event(s) with zero nominal "
                            f"weight but non-zero {direction} weight; their shift cannot be expressed per event"
                        )
                    ratio = np.divide(w_shift, nominal_w, out=np.zeros(n, dtype=np.float64), where=nominal_w != 0)
                    ratios.append(to_device(torch.as_tensor(ratio, dtype=torch.float64)))
                self._weight_ratios[name] = (ratios[0], ratios[1])
        self._fold_inputs = by.inputs
        self._orig_targets = by.targets
        by.targets = np.hstack([targets.reshape(n, 1).astype(np.float64), np.arange(n, dtype=np.float64)[:, None]])

    def on_fold_end(self) -> None:
        fp = self.model.fit_params
        if fp.state == "test" or self._orig_targets is None:
            return
        fp.by.targets = self._orig_targets  # metrics read by.targets at epoch end; the val yielder is reused
        self._clear_fold()

    @restores_denormals
    def on_batch_begin(self) -> None:
        fp = self.model.fit_params
        self._denormals.begin()
        if fp.state == "test":
            return
        y = fp.y
        if self._fold_inputs is None or y is None or y.dim() != 2 or y.shape[1] != 2:
            raise ConfigurationError(
                "the batch targets do not carry the event index that ApproxInfernoCallback stacked on in "
                "on_fold_begin (another callback replaced the targets, or the model was not trained via Model.fit)"
            )
        labels, rows = y[:, 0], y[:, 1].long()
        fp.y = y[:, :1]  # other callbacks and metrics see the plain targets
        self._check_alignment(fp.x, rows)
        self._rows = rows
        self._masks = self._process_masks(labels)

    @restores_denormals
    def on_forwards_end(self) -> None:
        fp = self.model.fit_params
        if fp.state == "test":
            return
        probs = fp.y_pred
        if not self._checked_output:
            self._check_output(probs)
        w = torch.ones(len(probs), dtype=probs.dtype, device=probs.device) if fp.w is None else fp.w.reshape(-1)
        if len(w) != len(probs):
            raise TargetShapeError(f"{len(probs)} events but {len(w)} weights; weights must be one value per event")
        model = self.template_model(fp.x, probs, w)
        var = poi_variance(fisher_information(model), model.poi_index)
        fp.loss_val = var
        self.history[fp.state].append(float(var.detach()))

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
                "the batch inputs are not the fold's rows the stacked event index points to: the shifted copies "
                "would not be the batch's events (a callback before ApproxInfernoCallback changed the inputs?)"
            )

    def _process_masks(self, labels: Tensor) -> Dict[str, Tensor]:
        if not self._checked_output and not torch.all((labels == labels.round()) & torch.isfinite(labels)):
            raise TargetShapeError("targets must be integer process labels")
        masks = {}
        for p in self.processes:
            m = torch.zeros_like(labels, dtype=torch.bool)
            for v in self.labels[p.name]:
                m |= labels == v
            masks[p.name] = m
        assigned = torch.stack(list(masks.values())).any(0)
        if not assigned.all():
            other = sorted({float(v) for v in labels[~assigned].unique()})
            raise TargetShapeError(f"target value(s) {other} belong to no process; labels are {self.labels}")
        for name, m in masks.items():
            if not m.any():
                raise EmptyProcessError(
                    f"a {self.model.fit_params.state} batch of {len(labels)} events has no events of process "
                    f"{name!r} (labels {self.labels[name]}); use larger or stratified batches"
                )
        return masks

    def _check_output(self, probs: Tensor) -> None:
        check_softmax_output(probs)
        self._checked_output = True

    @staticmethod
    def _soft_template(probs: Tensor, w: Tensor, total: Tensor) -> Tensor:
        """Soft histogram Σ w·p / Σ w_nominal (fraction of the process's nominal yield per bin), float64."""
        return (w[:, None].double() * probs.double()).sum(0) / total

    def template_model(self, x: Tensor, probs: Tensor, w: Tensor) -> TemplateModel:
        """The binned likelihood of this batch: nominal soft templates from LUMIN's forward pass, shift_up /
        shift_down templates from forward passes of the shifted inputs of the same events (only of the processes a
        systematic acts on) or from the up/down weights, yields from the process specifications."""
        rows, masks = self._rows, self._masks
        totals: Dict[str, Tensor] = {}
        templates: Dict[str, Tensor] = {}
        for p in self.processes:
            total = w[masks[p.name]].sum().double()
            if not total > 0:
                raise EmptyProcessError(f"events of process {p.name!r} in this batch have zero total weight")
            totals[p.name] = total
            templates[p.name] = self._soft_template(probs[masks[p.name]], w[masks[p.name]], total)
        shifted: Dict[Tuple[str, str], Tuple[Tensor, Tensor]] = {}
        for name in self.shape_systematics:
            users = [p.name for p in self.processes if name in p.shape_systematics]
            if self._kinds[name] == "inputs":
                affected = torch.stack([masks[u] for u in users]).any(0)
                pair = []
                for shift in self._shift_inputs[name]:
                    x_shift = shift.to(device=x.device, dtype=x.dtype)[rows[affected]]
                    probs_shift = self.model.model(x_shift)
                    pair.append(probs_shift)
                for u in users:
                    sub = masks[u][affected]
                    up, down = (self._soft_template(ps[sub], w[masks[u]], totals[u]) for ps in pair)
                    shifted[(u, name)] = (up, down)
            else:
                ratio_up, ratio_down = (r.to(w.device)[rows] for r in self._weight_ratios[name])
                for u in users:
                    m = masks[u]
                    shifted[(u, name)] = (
                        self._soft_template(probs[m], w[m] * ratio_up[m], totals[u]),
                        self._soft_template(probs[m], w[m] * ratio_down[m], totals[u]),
                    )
        return multi_process_model(self.processes, templates, shifted, self.poi, self.parameters, self.steps)
