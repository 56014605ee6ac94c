"""Exact INFERNO (de Castro & Dorigo 2018) as a stateful LUMIN callback, for any :class:`~lumin_inferno.analysis.
Analysis` whose shape systematics are differentiable input transforms.

Per batch the callback turns the network's softmax output into soft templates of every process, differentiates
them w.r.t. the ``"transform"`` nuisances (the transform moves the inputs of the events of the processes each
systematic acts on), builds the analysis's binned likelihood with those templates linear in the nuisances (exact at
first order, all the Fisher information at the Asimov point needs), adds the fixed channels, normalisation
systematics and MC statistics, and sets ``fit_params.loss_val`` to the analysis's objective. All statistics are
done by :mod:`lumin_inferno.statistics`; this module only reads LUMIN's ``fit_params``.
"""

from __future__ import annotations

import math
import warnings
from typing import Callable, Dict, List, Optional, Tuple

import numpy as np
import torch
from lumin.nn.callbacks.callback import Callback
from torch import Tensor

from ..analysis import Analysis, SummaryTemplates, template_model
from ..exceptions import ConfigurationError, EmptyProcessError, InputTransformError, InvalidModelSpecError, TargetShapeError
from ..exceptions import UnsupportedNetworkError
from ..models.tangents import ForwardTangents
from ..statistics.hessian import fisher_information
from ..statistics.objectives import model_objective, poi_covariance
from .common import (
    DenormalFlush,
    add_sigma_metrics,
    check_softmax_output,
    nominal_soft_templates,
    denormals_flushed,
    prepare_fit_for_batch_loss,
    process_masks,
    restores_denormals,
)

__all__ = ["InfernoCallback", "InputTransform", "DenormalFlush", "denormals_flushed"]

#: ``transform(x, nuisances, mask) -> x'``: the inputs with the analysis's ``"transform"`` nuisances applied to the
#: events where ``mask`` is True. ``nuisances`` maps name → α in the analysis's units (0 = nominal), a 0-d tensor or
#: one value per row ``[n]`` (the callback passes per-row values, 0 on events of processes a nuisance does not act
#: on). Must be differentiable, must not modify ``x`` in place, and must return ``x`` unchanged at α = 0.
#:
#: Optionally the transform may have a method ``tangents(x, names) -> Tensor [K, n, n_inputs]``, the exact
#: derivatives ∂x'/∂α_k at α = 0 for every row of ``x`` (as if ``mask`` were all True), for the nuisances ``names``
#: in that order. It saves the autograd pass the callback otherwise takes per batch; the callback checks it against
#: autograd on its first batch (:class:`InputTransformError` if they differ).
InputTransform = Callable[[Tensor, Dict[str, Tensor], Tensor], Tensor]

_JACOBIAN_MODES = ("auto", "recorded", "forward", "reverse")


class InfernoCallback(Callback):
    r"""Train a LUMIN model so that its binned output minimises the objective of ``analysis``.

    Use through ``train_models(..., cb_partials=[partial(InfernoCallback, analysis)])``: every model of an
    ensemble gets a fresh instance. The model must end in a softmax over ``analysis.n_bins`` bins, e.g.
    :class:`~lumin_inferno.models.SoftmaxTemperatureTail`.

    Args:
        analysis: the measurement; its shape systematics must be of kind ``"transform"`` (shifted inputs and
            weights from the fold file are :class:`~lumin_inferno.callbacks.ApproxInfernoCallback`'s).
        transform: the input transform applying the transform nuisances (:data:`InputTransform`); default: built
            from the systematics' :class:`~lumin_inferno.analysis.InputShift` declarations and the fold file's input
            pipe (:class:`~lumin_inferno.data.shifts.InputShiftTransform`).
        jacobian: how ∂(template)/∂α is obtained. All modes give the same loss and gradients (tested).

            - ``"recorded"``: forward-mode tangents built from the activations of LUMIN's own forward pass
              (:class:`~lumin_inferno.models.ForwardTangents`): no second pass over the network. The batch is
              reordered, events of affected processes first. Needs a chain of known layers; otherwise
              :class:`UnsupportedNetworkError`.
            - ``"forward"``: one Jacobian-vector product per nuisance on a separate pass over the affected events
              (double-vjp trick, batched over nuisances); any network.
            - ``"reverse"``: the transform is applied in ``on_batch_begin`` with the nuisances as leaf tensors at
              0, and the Jacobian is taken by batched reverse-mode autograd through LUMIN's pass.
            - ``"auto"`` (default): ``"recorded"`` where the network allows it, else ``"forward"``.
        flush_denormals: flush denormal numbers to zero on the CPU during each batch (:class:`DenormalFlush`).

    Attributes (after training):
        history: ``{"train": [...], "valid": [...]}`` per-batch objective values; ``sigma``:
            ``{"train": {poi: [...]}, "valid": {poi: [...]}}`` each POI's expected σ per batch.
            LUMIN's history and results hold them per epoch as ``sigma_<poi>`` (:class:`PoiSigmaMetric`).
        clipped_bins: nominal soft-template bins whose batch sum of (negative) event weights came out < 0 and were
            clipped to 0.
        jacobian_used: the mode in effect (``"auto"`` resolved), and ``jacobian_note`` why, when it fell back.
    """

    def __init__(
        self,
        analysis: Analysis,
        transform: Optional[InputTransform] = None,
        jacobian: str = "auto",
        flush_denormals: bool = True,
    ):
        super().__init__()
        if not isinstance(analysis, Analysis):
            raise ConfigurationError(f"InfernoCallback takes an Analysis, got {type(analysis).__name__}")
        stored = [s.name for s in analysis.systematics if s.kind in ("inputs", "weights")]
        if stored:
            raise ConfigurationError(
                f"systematic(s) {stored} come from shifted inputs/weights in the fold file: train with "
                "ApproxInfernoCallback, or declare them as exact 'transform' systematics"
            )
        if jacobian not in _JACOBIAN_MODES:
            raise InvalidModelSpecError(f"jacobian must be one of {_JACOBIAN_MODES}, got {jacobian!r}")
        undeclared = [s.name for s in analysis.systematics_of("transform") if not s.shifts]
        if undeclared and transform is None:
            raise InvalidModelSpecError(
                f"transform systematic(s) {undeclared} declare no input shifts: pass transform=callable(x, "
                "nuisances, mask) that applies them"
            )
        self.analysis = analysis
        self.transform = transform
        self.jacobian = jacobian
        self.flush_denormals = flush_denormals
        self._denormals = DenormalFlush(flush_denormals)
        self.nuisances: List[str] = list(dict.fromkeys(s.name for s in analysis.systematics_of("transform")))
        self._acts: Dict[str, set] = {}
        for s in analysis.systematics_of("transform"):
            self._acts.setdefault(s.name, set()).update(s.processes)
        self._reset()

    # --------------------------------------------------------------------------------------------------- state
    def _reset(self) -> None:
        self.history: Dict[str, List[float]] = {"train": [], "valid": []}
        self.clipped_bins = 0
        self.sigma: Dict[str, Dict[str, List[float]]] = {
            s: {p: [] for p in self.analysis.poi_names} for s in ("train", "valid")
        }
        self._checked_output = False
        self._checked_transform = False
        self._checked_tangents = False
        self._checked_input_tangents = False
        self._delta: Optional[Tensor] = None
        self._x_aff: Optional[Tensor] = None
        self._n_aff: Optional[int] = None
        self._process_events: Dict[str, int] = {}
        if getattr(self, "_tangents", None) is not None:
            self._tangents.detach()
        self._tangents: Optional[ForwardTangents] = None
        self._transform = self.transform
        self.jacobian_used = self.jacobian
        self.jacobian_note = ""

    # --------------------------------------------------------------------------------------------------- hooks
    def on_train_begin(self) -> None:
        super().on_train_begin()
        self._reset()
        add_sigma_metrics(self)
        fp = self.model.fit_params
        prepare_fit_for_batch_loss(fp)
        if self.nuisances and self._transform is None:
            from ..data.shifts import InputShiftTransform

            fy = getattr(fp, "fy", None)
            if fy is None:
                raise ConfigurationError("input shifts need LUMIN's fit_params.fy for the features and input pipe")
            self._transform = InputShiftTransform(self.analysis, list(fy.cont_feats) + list(fy.cat_feats),
                                                  getattr(fy, "input_pipe", None))
        if self.analysis.mc_stat:
            self._count_events(fp)
        if self.nuisances and self.jacobian in ("auto", "recorded"):
            try:
                self._tangents = ForwardTangents(self.model.model)
            except UnsupportedNetworkError as err:
                if self.jacobian == "recorded":
                    raise
                self._fall_back(f"no recorded tangents: {err}", warn=False)
            else:
                self._tangents.attach()
                self.jacobian_used = "recorded"
        elif self.jacobian == "auto":
            self.jacobian_used = "forward"

    def _count_events(self, fp) -> None:
        """Events per process in the fold file: the batch's Σ(w·p)² is scaled by (batch events)/(these) to estimate
        the MC variance of templates from the whole sample."""
        fy = getattr(fp, "fy", None)
        if fy is None:
            raise ConfigurationError("MC statistics in training need LUMIN's fit_params.fy (or mc_stat=False)")
        targets = np.concatenate([np.asarray(fy.get_column("targets", n_folds=1, fold_idx=i)).reshape(-1)
                                  for i in range(fy.n_folds)])
        for p in self.analysis.summary_processes:
            n = int(np.isin(targets, p.labels).sum())
            if n == 0:
                raise EmptyProcessError(f"process {p.name!r} (labels {p.labels}) has no events in the fold file")
            self._process_events[p.name] = n

    def on_train_end(self) -> None:
        super().on_train_end()
        self._denormals.end()
        if self._tangents is not None:
            self._tangents.detach()
            self._tangents = None

    def _fall_back(self, why: str, warn: bool) -> None:
        if self._tangents is not None:
            self._tangents.detach()
            self._tangents = None
        self.jacobian_used, self.jacobian_note = "forward", why
        if warn:
            warnings.warn(f"InfernoCallback: using jacobian='forward': {why}", RuntimeWarning, stacklevel=2)

    @restores_denormals
    def on_batch_begin(self) -> None:
        fp = self.model.fit_params
        self._denormals.begin()
        self._n_aff = None
        if fp.state == "test":
            return
        y = fp.y
        if y is None:
            raise TargetShapeError("InfernoCallback needs targets (process labels) in the fold file")
        if not (y.dim() == 1 or (y.dim() == 2 and y.shape[1] == 1)):
            raise TargetShapeError(
                f"targets must be one column of process labels, shape (n,) or (n, 1); got {tuple(y.shape)}"
            )
        self._masks = process_masks(y.reshape(-1), self.analysis, fp.state, not self._checked_output)
        if not self.nuisances:
            return
        if isinstance(fp.x, tuple):
            raise InputTransformError("input transforms of matrix inputs are not supported")
        affected = self._affected(self._masks)
        if not self._checked_transform:
            self._check_transform(fp.x, affected)
        if self._tangents is not None:  # affected rows first, so that they are a view of every activation
            order = torch.cat((affected.nonzero().squeeze(1), (~affected).nonzero().squeeze(1)))
            fp.x, fp.y = fp.x[order], fp.y[order]
            if fp.w is not None:
                fp.w = fp.w[order]
            self._masks = {k: m[order] for k, m in self._masks.items()}
            self._n_aff = int(affected.sum())
            self._x_aff = fp.x[: self._n_aff]
            self._tangents.arm()
        elif self.jacobian == "reverse":
            self._delta = torch.zeros(len(self.nuisances), dtype=fp.x.dtype, device=fp.x.device, requires_grad=True)
            fp.x = self._apply(fp.x, self._delta, self._masks)
        else:
            self._x_aff = fp.x[affected]
            self._aff_index = affected

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

    def on_batch_end(self) -> None:
        self._delta, self._x_aff, self._n_aff = None, None, None
        self._denormals.end()

    # -------------------------------------------------------------------------------------------------- pieces
    def _affected(self, masks: Dict[str, Tensor]) -> Tensor:
        """Events of any process a transform nuisance acts on."""
        names = {p for acts in self._acts.values() for p in acts if p in masks}
        return torch.stack([masks[p] for p in names]).any(0)

    def _row_masks(self, masks: Dict[str, Tensor]) -> Tensor:
        """``[K, n]``: 1 where nuisance k acts on the row's process."""
        rows = []
        for name in self.nuisances:
            m = torch.zeros_like(next(iter(masks.values())))
            for p in self._acts[name]:
                if p in masks:
                    m = m | masks[p]
            rows.append(m)
        return torch.stack(rows)

    def _apply(self, x: Tensor, delta: Tensor, masks: Dict[str, Tensor]) -> Tensor:
        """The transform with nuisance k at δ_k on the rows it acts on (per-row values, mask all True)."""
        rm = self._row_masks(masks).to(x.dtype)
        values = {name: delta[k] * rm[k] for k, name in enumerate(self.nuisances)}
        out = self._transform(x, values, torch.ones(len(x), dtype=torch.bool, device=x.device))
        if not isinstance(out, Tensor) or out.shape != x.shape:
            raise InputTransformError(
                f"the input transform must return a tensor of the input shape {tuple(x.shape)}, got "
                f"{tuple(out.shape) if isinstance(out, Tensor) else type(out).__name__}"
            )
        return out

    def _check_transform(self, x: Tensor, affected: Tensor) -> None:
        """Once per training: the transform must be the identity at α = 0 and must not write in place."""
        with torch.no_grad():
            before, version = x.clone(), x._version  # the version counter moves on any in-place write
            zeros = {n: torch.zeros((), dtype=x.dtype, device=x.device) for n in self.nuisances}
            out = self._transform(x, zeros, affected)
            if x._version != version or not torch.equal(x, before):
                raise InputTransformError("the input transform modified its input in place; build a new tensor")
            if not isinstance(out, Tensor) or out.shape != x.shape:
                raise InputTransformError(
                    f"the input transform must return a tensor of the input shape {tuple(x.shape)}, got "
                    f"{tuple(out.shape) if isinstance(out, Tensor) else type(out).__name__}"
                )
            if not torch.allclose(out, x, rtol=1e-5, atol=1e-6):
                worst = (out - x).abs().max().item()
                raise InputTransformError(
                    f"the input transform does not return the inputs unchanged at the nominal nuisance values "
                    f"(max |Δx| = {worst:.3g}); check the nominal values of {self.nuisances}"
                )
        self._checked_transform = True

    def _weight_matrix(self, w: Tensor, masks: Dict[str, Tensor], totals: Dict[str, Tensor], processes) -> Tensor:
        """``[P, n]``: w/W_p on the rows of process p (so that matrix × probs = the soft templates)."""
        return torch.stack([torch.where(masks[p], w.double(), torch.zeros_like(w, dtype=torch.float64)) / totals[p]
                            for p in processes])

    def template_model(self, probs: Tensor, w: Tensor):
        """The binned likelihood of this batch: soft templates of every process from LUMIN's forward pass, their
        derivatives along each transform nuisance (templates T ± ∂T/∂α at α = ±1), MC variances, fixed channels."""
        a, masks, state = self.analysis, self._masks, self.model.fit_params.state
        totals, nominal, variance, clipped = nominal_soft_templates(a, masks, probs, w, self._process_events, state)
        self.clipped_bins += clipped
        shifted: Dict[Tuple[str, str], Tuple[Tensor, Tensor]] = {}
        if self.nuisances:
            users = [p.name for p in a.summary_processes if any(p.name in acts for acts in self._acts.values())]
            jac = self._jacobian(probs, w, users, totals)  # [P_users, bins, K]
            for i, p in enumerate(users):
                for k, name in enumerate(self.nuisances):
                    if p in self._acts[name]:
                        shifted[(p, name)] = (nominal[p] + jac[i, :, k], nominal[p] - jac[i, :, k])
        return template_model(a, SummaryTemplates(nominal, shifted, variance if self._process_events else None))

    # ------------------------------------------------------------------------------------------ Jacobians
    def _jacobian(self, probs: Tensor, w: Tensor, users: List[str], totals) -> Tensor:
        """∂(template of each process in ``users``)/∂α, ``[len(users), n_bins, K]``, differentiable w.r.t. the net."""
        if self.jacobian == "reverse":
            wm = self._weight_matrix(w, self._masks, totals, users)
            templates = wm @ probs.double()  # [P, bins], a function of δ through fp.x
            flat = templates.reshape(-1)
            eye = torch.eye(len(flat), dtype=flat.dtype, device=flat.device)
            (jac,) = torch.autograd.grad(flat, self._delta, grad_outputs=eye, is_grads_batched=True,
                                         create_graph=True)
            return jac.reshape(len(users), -1, len(self.nuisances))
        if self._n_aff is not None:
            jac = self._recorded_jacobian(w, users, totals)
            if jac is not None:
                return jac
        return self._forward_jacobian(w, users, totals)

    def _aff_masks(self) -> Dict[str, Tensor]:
        """Process masks restricted to the affected rows (in the order of ``_x_aff``)."""
        if self._n_aff is not None:
            return {k: m[: self._n_aff] for k, m in self._masks.items()}
        return {k: m[self._aff_index] for k, m in self._masks.items()}

    def _aff_weights(self, w: Tensor) -> Tensor:
        return w[: self._n_aff] if self._n_aff is not None else w[self._aff_index]

    def _input_tangents(self, x_aff: Tensor, masks: Dict[str, Tensor]) -> Tensor:
        """∂x/∂α_k of the affected inputs, ``[K, n_aff, n_inputs]``, zero on rows k does not act on: the transform's
        own ``tangents`` method if it has one (checked once against autograd), else autograd."""
        rm = self._row_masks(masks).to(x_aff.dtype)[:, :, None]
        own = getattr(self._transform, "tangents", None)
        if own is None:
            return self._autograd_input_tangents(x_aff, masks)
        with torch.no_grad():
            tangents = own(x_aff.detach(), list(self.nuisances))
        if not isinstance(tangents, Tensor) or tangents.shape != (len(self.nuisances), *x_aff.shape):
            got = tuple(tangents.shape) if isinstance(tangents, Tensor) else type(tangents).__name__
            raise InputTransformError(
                f"transform.tangents must return [K={len(self.nuisances)}, n, n_inputs] = "
                f"{(len(self.nuisances), *x_aff.shape)}, got {got}"
            )
        tangents = tangents * rm
        if not self._checked_input_tangents:
            expected = self._autograd_input_tangents(x_aff, masks)
            if not torch.allclose(tangents, expected, rtol=1e-4, atol=1e-6):
                worst = float((tangents - expected).abs().max())
                raise InputTransformError(
                    f"transform.tangents differs from the autograd derivative of the transform by up to {worst:.3g}"
                    f" (nuisances {self.nuisances}); fix it or remove the method"
                )
            self._checked_input_tangents = True
        return tangents

    def _autograd_input_tangents(self, x_aff: Tensor, masks: Dict[str, Tensor]) -> Tensor:
        """Exact ∂x/∂α_k by the double-vjp trick through the transform (cheap: inputs only, no network)."""
        delta = torch.zeros(len(self.nuisances), dtype=x_aff.dtype, device=x_aff.device, requires_grad=True)
        with torch.enable_grad():
            x_shifted = self._apply(x_aff.detach(), delta, masks)
            u = torch.zeros_like(x_shifted, requires_grad=True)
            (jt_u,) = torch.autograd.grad(x_shifted, delta, grad_outputs=u, create_graph=True, allow_unused=True)
            if jt_u is None:
                raise InputTransformError(f"the input transform does not depend on the nuisances {self.nuisances}")
            eye = torch.eye(len(delta), dtype=jt_u.dtype, device=jt_u.device)
            (tangents,) = torch.autograd.grad(jt_u, u, grad_outputs=eye, is_grads_batched=True, allow_unused=True)
        if tangents is None:
            raise InputTransformError(f"the input transform does not depend on the nuisances {self.nuisances}")
        return tangents

    def _recorded_jacobian(self, w: Tensor, users: List[str], totals) -> Optional[Tensor]:
        """From the activations of LUMIN's forward pass (rows 0..n_aff-1); ``None`` when the recorded pass is not
        the one that produced ``y_pred`` (then the generic route is used)."""
        fp = self.model.fit_params
        if self._tangents.output is not fp.y_pred:
            self._fall_back("the recorded forward pass is not the one that produced y_pred", warn=True)
            return None
        masks = self._aff_masks()
        wm = self._weight_matrix(self._aff_weights(w), masks, totals, users)  # [P, n_aff]
        try:
            t_out = self._tangents.jvp(self._input_tangents(self._x_aff, masks))  # [K, n_aff, bins]
        except UnsupportedNetworkError as err:
            problem = str(err)
        else:
            jac = torch.einsum("knb,pn->pbk", t_out.double(), wm)
            if self._checked_tangents:
                return jac
            # once: the chain rule over the listed layers must match the generic Jacobian of this network
            generic = self._forward_jacobian(w, users, totals).detach()
            scale = generic.abs().max().clamp(min=1e-12)
            worst = float((jac.detach() - generic).abs().max() / scale)
            if torch.allclose(jac.detach(), generic, rtol=1e-3, atol=1e-4 * float(scale)):
                self._checked_tangents = True
                return jac
            problem = (
                f"recorded tangents differ from the generic Jacobian by {worst:.2g} (relative): the network does not "
                "apply its layers as the plain chain they are listed in"
            )
        if self.jacobian == "recorded":
            raise UnsupportedNetworkError(f"{problem}; use jacobian='forward'")
        self._fall_back(problem, warn=True)
        return None

    def _forward_jacobian(self, w: Tensor, users: List[str], totals) -> Tensor:
        # JVPs J·e_k by the double-vjp trick: g(u) = Jᵀu is linear in u, so ∂(g·e_k)/∂u = J e_k. Two reverse passes
        # through a pass over the affected events; measured faster than torch.func.jacfwd's forward-mode
        # decompositions on CPU (benchmarks/README.md) and free of forward-AD gaps in arbitrary LUMIN blocks.
        masks = self._aff_masks()
        x_aff = self._x_aff
        wm = self._weight_matrix(self._aff_weights(w), masks, totals, users)
        delta = torch.zeros(len(self.nuisances), dtype=x_aff.dtype, device=x_aff.device, requires_grad=True)
        templates = (wm @ self.model.model(self._apply(x_aff, delta, masks)).double()).reshape(-1)
        u = torch.zeros_like(templates, requires_grad=True)
        (jt_u,) = torch.autograd.grad(templates, delta, grad_outputs=u, create_graph=True, allow_unused=True)
        if jt_u is None:
            raise InputTransformError(f"the input transform does not depend on the nuisances {self.nuisances}")
        eye = torch.eye(len(delta), dtype=jt_u.dtype, device=jt_u.device)
        (jac_t,) = torch.autograd.grad(jt_u, u, grad_outputs=eye, is_grads_batched=True, create_graph=True,
                                       allow_unused=True)
        if jac_t is None:
            raise InputTransformError(f"the input transform does not depend on the nuisances {self.nuisances}")
        return jac_t.transpose(0, 1).reshape(len(users), -1, len(self.nuisances))
