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

from typing import Dict, List, Optional, Set, Tuple

from torch import Tensor

from ..analysis import Analysis, SummaryTemplates
from ..exceptions import ConfigurationError, InputTransformError, InvalidModelSpecError
from ..models.jacobians import JACOBIAN_MODES, InputTransform, TransformJacobian
from .base import TemplateLossCallback
from .common import nominal_soft_templates, process_masks
from .denormals import restores_denormals

__all__ = ["InfernoCallback", "InputTransform"]


class InfernoCallback(TemplateLossCallback):
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
        template_average: β of the templates' moving average over training batches (0: none, the paper's loss;
            :class:`~lumin_inferno.callbacks.base.TemplateLossCallback`).

    Attributes (after training): those of :class:`~lumin_inferno.callbacks.base.TemplateLossCallback` (``history``,
    ``sigma``, ``clipped_bins``) and
        jacobian_used: the mode in effect (``"auto"`` resolved), and ``jacobian_note`` why, when it fell back.
    """

    def __init__(
        self,
        analysis: Analysis,
        transform: Optional[InputTransform] = None,
        jacobian: str = "auto",
        flush_denormals: bool = True,
        template_average: float = 0.0,
    ):
        super().__init__(analysis, flush_denormals, template_average)
        stored = [s.name for s in analysis.systematics if s.kind in ("inputs", "weights")]
        if stored:
            raise ConfigurationError(
                f"systematic(s) {stored} come from shifted inputs/weights in the fold file: train with "
                "ApproxInfernoCallback, or declare them as exact 'transform' systematics"
            )
        if jacobian not in JACOBIAN_MODES:
            raise InvalidModelSpecError(f"jacobian must be one of {JACOBIAN_MODES}, got {jacobian!r}")
        undeclared = [s.name for s in analysis.systematics_of("transform") if not s.shifts]
        if undeclared and transform is None:
            raise InvalidModelSpecError(
                f"transform systematic(s) {undeclared} declare no input shifts: pass transform=callable(x, "
                "nuisances, mask) that applies them"
            )
        self.transform = transform
        self.jacobian = jacobian
        self.nuisances: List[str] = list(dict.fromkeys(s.name for s in analysis.systematics_of("transform")))
        self._acts: Dict[str, Set[str]] = {}
        for s in analysis.systematics_of("transform"):
            self._acts.setdefault(s.name, set()).update(s.processes)
        self._jac: Optional[TransformJacobian] = None
        self._reset()

    def _reset(self) -> None:
        super()._reset()
        self._close_jacobian()
        self._masks: Dict[str, Tensor] = {}
        self._resolved = (self.jacobian, "")  # (mode, why it fell back) when no TransformJacobian is live

    def _close_jacobian(self) -> None:
        if self._jac is not None:
            self._jac.close()
            self._jac = None

    @property
    def jacobian_used(self) -> str:
        """The Jacobian mode in effect (``"auto"`` resolved)."""
        return self._jac.used if self._jac is not None else self._resolved[0]

    @property
    def jacobian_note(self) -> str:
        """Why the mode fell back to ``"forward"``, if it did."""
        return self._jac.note if self._jac is not None else self._resolved[1]

    # --------------------------------------------------------------------------------------------------- hooks
    def on_train_begin(self) -> None:
        super().on_train_begin()
        self._resolved = ("forward" if self.jacobian == "auto" else self.jacobian, "")
        self._start_jacobian()

    def _start_jacobian(self, lazy: bool = False) -> None:
        """The TransformJacobian of this training (at its start, or at the first batch when a script drives the
        hooks itself), with the default transform built from the fold file's features and input pipe."""
        if not self.nuisances or self._jac is not None:
            return
        fp = self.model.fit_params
        transform = self.transform
        if transform is None:
            from ..data.shifts import InputShiftTransform

            fy = getattr(fp, "fy", None)
            if fy is None:
                raise ConfigurationError("input shifts need LUMIN's fit_params.fy for the features and input pipe")
            transform = InputShiftTransform(self.analysis, list(fy.cont_feats) + list(fy.cat_feats),
                                            getattr(fy, "input_pipe", None))
        mode = self.jacobian
        if lazy and mode != "reverse":  # no on_train_begin (hooks driven by hand): no hooks left on the network
            mode = "forward"
        self._jac = TransformJacobian(self.nuisances, self._acts, transform, self.model.model, mode)

    def on_train_end(self) -> None:
        super().on_train_end()
        if self._jac is not None:  # keep the resolved mode readable, drop the network hooks
            self._resolved = (self._jac.used, self._jac.note)
        self._close_jacobian()

    @restores_denormals
    def on_batch_begin(self) -> None:
        fp = self.model.fit_params
        self._denormals.begin()
        if fp.state == "test":
            return
        self._masks = process_masks(fp.y, self.analysis, fp.state, not self._checked_output)
        self._start_jacobian(lazy=True)
        if self._jac is None:
            return
        if isinstance(fp.x, tuple):
            raise InputTransformError("input transforms of matrix inputs are not supported")
        fp.x, order, self._masks = self._jac.begin_batch(fp.x, self._masks)
        if order is not None:
            fp.y = fp.y[order]
            if fp.w is not None:
                fp.w = fp.w[order]

    def _clear_batch(self) -> None:
        if self._jac is not None:
            self._jac.end_batch()

    def summary_templates(self, probs: Tensor, w: Tensor) -> SummaryTemplates:
        """The templates of this batch: soft templates of every process from LUMIN's forward pass, their
        derivatives along each transform nuisance (templates T ± ∂T/∂α at α = ±1), MC variances."""
        a, masks, state = self.analysis, self._masks, self.model.fit_params.state
        totals, nominal, variance, clipped = nominal_soft_templates(a, masks, probs, w, self.mc_events, state)
        self.clipped_bins += clipped
        shifted: Dict[Tuple[str, str], Tuple[Tensor, Tensor]] = {}
        if self._jac is not None:
            users = [p.name for p in a.summary_processes if any(p.name in acts for acts in self._acts.values())]
            jac = self._jac.jacobian(probs, w, users, totals)  # [P_users, bins, K]
            for i, p in enumerate(users):
                for k, name in enumerate(self.nuisances):
                    if p in self._acts[name]:
                        shifted[(p, name)] = (nominal[p] + jac[i, :, k], nominal[p] - jac[i, :, k])
        return SummaryTemplates(nominal, shifted, variance)
