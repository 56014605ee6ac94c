"""Exact INFERNO (de Castro & Dorigo 2018) as a stateful LUMIN callback.

Per batch the callback turns the network's softmax output into soft histograms (templates) of signal and
background, differentiates the background template w.r.t. the shape nuisances through a user-given input transform,
and sets ``fit_params.loss_val`` to the expected variance of the parameter of interest, (I⁻¹)_poi,poi, where I is
the Fisher information of the binned Poisson likelihood on Asimov data (equal to the NLL Hessian there). All
statistics are done by :mod:`lumin_inferno.statistics`; this module only reads LUMIN's ``fit_params``.
"""

from __future__ import annotations

from typing import Callable, Dict, List, Optional, Sequence, Union

import functools
import warnings

import torch
from lumin.nn.callbacks.callback import Callback
from torch import Tensor

from ..exceptions import (
    ConfigurationError,
    EmptyProcessError,
    InputTransformError,
    InvalidModelSpec,
    TargetShapeError,
    UnsupportedNetworkError,
)
from ..models.tangents import ForwardTangents
from ..statistics.hessian import fisher_from_jacobian, poi_variance
from ..statistics.likelihood import (
    TEMPLATE_FLOOR,
    Parameter,
    ShapeSystematic,
    TemplateModel,
    linearised_signal_background,
    signal_background_model,
)

__all__ = ["InfernoCallback", "InputTransform", "DenormalFlush", "denormals_flushed"]

#: ``transform(x, nuisances, mask) -> x'``: returns the inputs with the shape nuisances applied to the events where
#: ``mask`` is True. ``nuisances`` maps nuisance name to a 0-d tensor in physical units. Must be differentiable,
#: must not modify ``x`` in place, and must return ``x`` unchanged at the nominal values.
#:
#: Optionally the transform may also have a method ``tangents(x, names) -> Tensor [K, n, n_inputs]``, the exact
#: derivatives ∂x'/∂θ_k at the nominal values for every row of ``x`` (as if ``mask`` were all True), for the
#: nuisances ``names`` in that order. It saves the autograd pass the callback otherwise takes per batch; the
#: callback checks it against autograd on its first batch (:class:`InputTransformError` if they differ).
InputTransform = Callable[[Tensor, Dict[str, Tensor], Tensor], Tensor]

_JACOBIAN_MODES = ("auto", "recorded", "forward", "reverse")


def denormals_flushed() -> bool:
    """Whether this thread's CPU currently flushes denormal float32 numbers to zero (probed: PyTorch sets the mode
    with ``torch.set_flush_denormal`` but has no getter)."""
    return bool((torch.full((1,), 1e-39, dtype=torch.float32) * 0.5 == 0).item())


def restores_denormals(hook: Callable) -> Callable:
    """Decorate a callback hook so that an exception raised in it first ends the callback's ``_denormals`` flush
    (LUMIN calls no ``on_batch_end`` after an error, which would leave the flush mode on for the process)."""

    @functools.wraps(hook)
    def wrapped(self, *args, **kwargs):
        try:
            return hook(self, *args, **kwargs)
        except BaseException:
            self._denormals.end()
            raise

    return wrapped


class DenormalFlush:
    """Flush denormal numbers (|x| < 1.2e-38 in float32) to zero on the CPU for the duration of each batch, and put
    the previous mode back after it.

    A softmax at INFERNO's temperatures (τ ≈ 0.1) sends the far-off bins' probabilities and their gradients into the
    denormal range once the network separates events; x86 CPUs take a slow microcode path for every such operand,
    which made a training step of a trained benchmark-4 model 1.4× slower (``benchmarks/bench_training_step.py``).
    Flushing changes only values below 1.2e-38, far under the template floor of 1e-7. Uses
    ``torch.set_flush_denormal``, which sets the calling thread's mode (PyTorch's intra-op worker threads keep
    theirs); no effect where the CPU lacks the mode, or on CUDA.
    """

    def __init__(self, enabled: bool = True):
        self.enabled = enabled
        self._before: Optional[bool] = None

    def begin(self) -> None:
        if self.enabled and self._before is None:
            self._before = denormals_flushed()
            torch.set_flush_denormal(True)

    def end(self) -> None:
        if self._before is not None:
            torch.set_flush_denormal(self._before)
            self._before = None


class InfernoCallback(Callback):
    r"""Train a LUMIN model so that its binned output minimises the expected uncertainty on the signal yield.

    Use through ``train_models(..., cb_partials=[partial(InfernoCallback, ...)])``: every model of an ensemble
    gets a fresh instance. The model must end in a softmax over the bins, e.g.
    :class:`~lumin_inferno.models.SoftmaxTemperatureTail`.

    Args:
        poi: the parameter of interest, the expected **signal yield** in events (e.g. ``Parameter("s", 50.0)``);
            the loss is its variance in events².
        background: expected background yield: a number (held fixed) or a :class:`Parameter` (free, or with a
            Gaussian ``constraint`` in events), e.g. ``Parameter("b", 1000.0, constraint=100.0)``.
        shape_nuisances: nuisances acting on the background's input features, in physical units (``nominal`` is the
            value the sample was generated at; ``constraint`` a Gaussian width or ``None`` for free).
        transform: the input transform applying ``shape_nuisances`` (see :data:`InputTransform`); required when
            there are shape nuisances.
        signal_class: target value of signal events; all other events are background.
        jacobian: how ∂(template)/∂(nuisance) is obtained. All modes give the same loss and gradients (tested).

            - ``"recorded"``: forward-mode tangents built from the activations of LUMIN's own forward pass
              (:class:`~lumin_inferno.models.ForwardTangents`): no second pass over the network. The batch is
              reordered background-first. Needs a chain of known layers (LUMIN's FullyConnected body without
              batch norm, dropout or skip connections, :class:`~lumin_inferno.models.SoftmaxTemperatureTail`);
              otherwise :class:`UnsupportedNetworkError`.
            - ``"forward"``: one Jacobian-vector product per nuisance on a separate background pass (double-vjp
              trick, batched over nuisances); any network.
            - ``"reverse"``: the transform is applied in ``on_batch_begin`` with the nuisances as leaf tensors at
              nominal values, and the Jacobian is taken by batched reverse-mode autograd through LUMIN's pass.
            - ``"auto"`` (default): ``"recorded"`` where the network allows it, else ``"forward"``.
        flush_denormals: flush denormal numbers to zero on the CPU during each batch (:class:`DenormalFlush`;
            the previous mode is restored after the batch). Saturated softmax tails otherwise slow training ~1.4×.

    Attributes (after training):
        history: ``{"train": [...], "valid": [...]}`` per-batch loss values (variance of the POI).
        jacobian_used: the mode in effect (``"auto"`` resolved), and ``jacobian_note`` why, when it fell back.
    """

    def __init__(
        self,
        poi: Parameter,
        background: Union[float, Parameter],
        shape_nuisances: Sequence[Parameter] = (),
        transform: Optional[InputTransform] = None,
        signal_class: int = 1,
        jacobian: str = "auto",
        flush_denormals: bool = True,
    ):
        super().__init__()
        self.flush_denormals = flush_denormals
        self._denormals = DenormalFlush(flush_denormals)
        self.poi = poi
        self.background = background
        self.shape_nuisances = list(shape_nuisances)
        self.transform = transform
        self.signal_class = signal_class
        if jacobian not in _JACOBIAN_MODES:
            raise InvalidModelSpec(f"jacobian must be one of {_JACOBIAN_MODES}, got {jacobian!r}")
        self.jacobian = jacobian
        names = [poi.name] + ([background.name] if isinstance(background, Parameter) else [])
        names += [p.name for p in self.shape_nuisances]
        if len(set(names)) != len(names):
            raise InvalidModelSpec(f"parameter names must be unique, got {names}")
        if self.shape_nuisances and transform is None:
            raise InvalidModelSpec(
                f"shape nuisances {[p.name for p in self.shape_nuisances]} need an input transform "
                "(transform=callable(x, nuisances, mask))"
            )
        if isinstance(background, Parameter) and background.nominal <= 0 or not isinstance(
            background, Parameter
        ) and float(background) <= 0:
            raise InvalidModelSpec(f"background yield must be > 0, got {background}")
        if not poi.nominal > 0:
            raise InvalidModelSpec(f"the signal yield (poi {poi.name!r}) must be > 0 at nominal, got {poi.nominal}")
        self._reset()

    # --------------------------------------------------------------------------------------------------- state
    def _reset(self) -> None:
        self.history: Dict[str, List[float]] = {"train": [], "valid": []}
        self._checked_output = False
        self._checked_transform = False
        self._alpha: Optional[Tensor] = None
        self._x_nominal: Optional[Tensor] = None
        self._n_bkg: Optional[int] = None  # recorded mode: the batch is reordered, background rows first
        self._checked_tangents = False
        self._checked_input_tangents = False
        if getattr(self, "_tangents", None) is not None:
            self._tangents.detach()
        self._tangents: Optional[ForwardTangents] = None
        self.jacobian_used = self.jacobian
        self.jacobian_note = ""

    def _nuisance_nominals(self, like: Tensor) -> Tensor:
        return torch.tensor([p.nominal for p in self.shape_nuisances], dtype=like.dtype, device=like.device)

    def _apply_transform(self, x: Tensor, alpha: Tensor, mask: Tensor) -> Tensor:
        nuisances = {p.name: alpha[i] for i, p in enumerate(self.shape_nuisances)}
        out = self.transform(x, nuisances, mask)
        if not isinstance(out, Tensor) or out.shape != x.shape:
            raise InputTransformError(
                f"the input transform must return a tensor of the input shape {tuple(x.shape)}, got "
                f"{tuple(out.shape) if isinstance(out, Tensor) else type(out).__name__}"
            )
        return out

    def _check_transform(self, x: Tensor, mask: Tensor) -> None:
        """Once per training: the transform must be the identity at nominal values and must not write in place."""
        with torch.no_grad():
            before, version = x.clone(), x._version  # the version counter moves on any in-place write
            out = self._apply_transform(x, self._nuisance_nominals(x), mask)
            if x._version != version or not torch.equal(x, before):
                raise InputTransformError("the input transform modified its input in place; build a new tensor")
            if not torch.allclose(out, x, rtol=1e-5, atol=1e-6):
                worst = (out - x).abs().max().item()
                raise InputTransformError(
                    f"the input transform does not return the inputs unchanged at the nominal nuisance values "
                    f"(max |Δx| = {worst:.3g}); check the nominal values of {[p.name for p in self.shape_nuisances]}"
                )
        self._checked_transform = True

    # --------------------------------------------------------------------------------------------------- hooks
    def on_train_begin(self) -> None:
        super().on_train_begin()
        self._reset()
        prepare_fit_for_batch_loss(self.model.fit_params)
        if self.shape_nuisances and self.jacobian in ("auto", "recorded"):
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

    def _process_masks(self, y: Tensor) -> Tensor:
        if y is None:
            raise TargetShapeError("InfernoCallback needs targets (process labels) in the fold file")
        if not (y.dim() == 1 or (y.dim() == 2 and y.shape[1] == 1)):
            raise TargetShapeError(
                f"targets must be one column of process labels, shape (n,) or (n, 1); got {tuple(y.shape)}"
            )
        y = y.reshape(-1)
        is_sig = y == self.signal_class
        if not self._checked_output and not torch.all((y == y.round()) & torch.isfinite(y)):
            raise TargetShapeError("targets must be integer process labels (signal_class for signal, else background)")
        n_sig = int(is_sig.sum())
        if n_sig == 0 or n_sig == len(y):
            missing = "signal" if n_sig == 0 else "background"
            raise EmptyProcessError(
                f"a {self.model.fit_params.state} batch of {len(y)} events has no {missing} events "
                f"(signal_class={self.signal_class}); use larger or stratified batches"
            )
        return is_sig

    @restores_denormals
    def on_batch_begin(self) -> None:
        fp = self.model.fit_params
        self._denormals.begin()
        self._n_bkg = None
        if fp.state == "test":
            return
        self._is_sig = self._process_masks(fp.y)
        self._x_nominal = fp.x
        if not self.shape_nuisances:
            return
        if isinstance(fp.x, tuple):
            raise InputTransformError("shape-nuisance transforms of matrix inputs are not supported")
        is_bkg = ~self._is_sig
        if not self._checked_transform:
            self._check_transform(fp.x, is_bkg)
        if self._tangents is not None:  # background rows first, so that they are a view of every activation
            order = torch.cat((is_bkg.nonzero().squeeze(1), self._is_sig.nonzero().squeeze(1)))
            fp.x, fp.y = fp.x[order], fp.y[order]
            if fp.w is not None:
                fp.w = fp.w[order]
            self._is_sig, self._x_nominal = self._is_sig[order], fp.x
            self._n_bkg = int(is_bkg.sum())
            self._tangents.arm()
        elif self.jacobian == "reverse":
            self._alpha = self._nuisance_nominals(fp.x).requires_grad_(True)
            fp.x = self._apply_transform(fp.x, self._alpha, is_bkg)

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
        if self._n_bkg is not None:  # recorded mode: rows are background first
            nb = self._n_bkg
            probs_sig, w_sig, probs_bkg, w_bkg = probs[nb:], w[nb:], probs[:nb], w[:nb]
        else:
            is_sig, is_bkg = self._is_sig, ~self._is_sig
            probs_sig, w_sig, probs_bkg, w_bkg = probs[is_sig], w[is_sig], probs[is_bkg], w[is_bkg]
        sig_shape = self._soft_template(probs_sig, w_sig, "signal")
        bkg_shape = self._soft_template(probs_bkg, w_bkg, "background")
        if self.shape_nuisances:
            jac = self._background_jacobian(bkg_shape, w_bkg)
        else:
            jac = bkg_shape.new_zeros(len(bkg_shape), 0)
        nu, dnu, precision = linearised_signal_background(
            sig_shape + TEMPLATE_FLOOR, bkg_shape + TEMPLATE_FLOOR, jac, self.poi, self.background, self.shape_nuisances
        )
        var = poi_variance(fisher_from_jacobian(nu, dnu, precision), 0)
        fp.loss_val = var
        self.history[fp.state].append(float(var.detach()))

    def on_batch_end(self) -> None:
        self._alpha, self._x_nominal, self._n_bkg = None, None, None
        self._denormals.end()

    # -------------------------------------------------------------------------------------------------- pieces
    def _check_output(self, probs: Tensor) -> None:
        check_softmax_output(probs)
        self._checked_output = True

    @staticmethod
    def _soft_template(probs: Tensor, w: Tensor, process: str) -> Tensor:
        """Soft histogram Σ w·p / Σ w over the process's events (fraction of its yield per bin), float64."""
        total = w.sum()
        if not total > 0:
            raise EmptyProcessError(f"{process} events in this batch have zero total weight")
        return (w[:, None] * probs).sum(0).double() / total.double()

    def _background_jacobian(self, bkg_shape: Tensor, w_bkg: Tensor) -> Tensor:
        """∂(background template)/∂(shape nuisances), ``[n_bins, n_nuisances]``, differentiable w.r.t. the net."""
        if self.jacobian == "reverse":
            n_bins = bkg_shape.shape[0]
            eye = torch.eye(n_bins, dtype=bkg_shape.dtype, device=bkg_shape.device)
            (jac,) = torch.autograd.grad(
                bkg_shape, self._alpha, grad_outputs=eye, is_grads_batched=True, create_graph=True
            )
            return jac
        if self._n_bkg is not None:
            jac = self._recorded_jacobian(w_bkg)
            if jac is not None:
                return jac
        return self._forward_jacobian(w_bkg)

    def _input_tangents(self, x_bkg: Tensor) -> Tensor:
        """∂x/∂θ_k of the background inputs, ``[K, n_bkg, n_inputs]``: the transform's own ``tangents`` method if
        it has one (checked once against autograd), else autograd."""
        own = getattr(self.transform, "tangents", None)
        if own is None:
            return self._autograd_input_tangents(x_bkg)
        names = [p.name for p in self.shape_nuisances]
        with torch.no_grad():
            tangents = own(x_bkg.detach(), names)
        if not self._checked_input_tangents:
            expected = self._autograd_input_tangents(x_bkg)
            if not isinstance(tangents, Tensor) or tangents.shape != expected.shape:
                got = tuple(tangents.shape) if isinstance(tangents, Tensor) else type(tangents).__name__
                raise InputTransformError(
                    f"transform.tangents must return [K={len(names)}, n, n_inputs] = {tuple(expected.shape)}, got {got}"
                )
            if not torch.allclose(tangents, expected, rtol=1e-4, atol=1e-6):
                worst = float((tangents - expected).abs().max())
                raise InputTransformError(
                    f"transform.tangents differs from the autograd derivative of the transform by up to {worst:.3g}"
                    f" (nuisances {names}); fix it or remove the method"
                )
            self._checked_input_tangents = True
        return tangents

    def _autograd_input_tangents(self, x_bkg: Tensor) -> Tensor:
        """∂x/∂θ_k of the background inputs, ``[K, n_bkg, n_inputs]``, exact (double-vjp through the transform:
        cheap, the transform acts on the inputs only; no graph to the network)."""
        mask = torch.ones(len(x_bkg), dtype=torch.bool, device=x_bkg.device)
        alpha = self._nuisance_nominals(x_bkg).requires_grad_(True)
        with torch.enable_grad():
            x_shifted = self._apply_transform(x_bkg.detach(), alpha, mask)
            u = torch.zeros_like(x_shifted, requires_grad=True)
            (jt_u,) = torch.autograd.grad(x_shifted, alpha, grad_outputs=u, create_graph=True)
            eye = torch.eye(len(alpha), dtype=jt_u.dtype, device=jt_u.device)
            (tangents,) = torch.autograd.grad(jt_u, u, grad_outputs=eye, is_grads_batched=True)
        return tangents

    def _recorded_jacobian(self, w_bkg: Tensor) -> Optional[Tensor]:
        """∂(background template)/∂θ from the activations of LUMIN's forward pass (rows 0..n_bkg-1); ``None`` when
        the recorded pass is not the one that produced ``y_pred`` (then the generic route is used)."""
        fp = self.model.fit_params
        if self._tangents.output is not fp.y_pred:
            self._fall_back("the recorded forward pass is not the one that produced y_pred", warn=True)
            return None
        nb = self._n_bkg
        try:
            t_out = self._tangents.jvp(self._input_tangents(self._x_nominal[:nb]))  # [K, nb, bins]
        except UnsupportedNetworkError as err:
            problem = str(err)
        else:
            jac = torch.einsum("knb,n->bk", t_out, w_bkg / w_bkg.sum()).double()
            if self._checked_tangents:
                return jac
            # once: the chain rule over the listed layers must match the generic Jacobian of this network
            generic = self._forward_jacobian(w_bkg).detach()
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

    def _forward_jacobian(self, w_bkg: Tensor) -> Tensor:
        # JVPs J·e_k by the double-vjp trick: g(u) = Jᵀu is linear in u, so ∂(g·e_k)/∂u = J e_k. Two reverse passes
        # through a background-only forward pass; measured faster than torch.func.jacfwd's forward-mode
        # decompositions on CPU (benchmarks/README.md) and free of forward-AD gaps in arbitrary LUMIN blocks.
        x_bkg = self._x_nominal[~self._is_sig]
        mask = torch.ones(len(x_bkg), dtype=torch.bool, device=x_bkg.device)
        alpha = self._nuisance_nominals(x_bkg).requires_grad_(True)
        w_norm = (w_bkg / w_bkg.sum())[:, None]
        template = (w_norm * self.model.model(self._apply_transform(x_bkg, alpha, mask))).sum(0)
        u = torch.zeros_like(template, requires_grad=True)
        (jt_u,) = torch.autograd.grad(template, alpha, grad_outputs=u, create_graph=True)
        eye = torch.eye(len(alpha), dtype=jt_u.dtype, device=jt_u.device)
        (jac_t,) = torch.autograd.grad(jt_u, u, grad_outputs=eye, is_grads_batched=True, create_graph=True)
        return jac_t.transpose(0, 1).double()

    def template_model(self, sig_shape: Tensor, bkg_shape: Tensor, jac: Optional[Tensor]) -> TemplateModel:
        """The binned likelihood of this batch: soft templates, linear in the shape nuisances (exact at first
        order, which is all the Fisher information at the nominal point needs)."""
        sig = sig_shape + TEMPLATE_FLOOR
        bkg = bkg_shape + TEMPLATE_FLOOR
        systs = [
            ShapeSystematic(p.name, "background", shift_up=bkg + jac[:, i], shift_down=bkg - jac[:, i], step=1.0)
            for i, p in enumerate(self.shape_nuisances)
        ]
        return signal_background_model(
            torch.stack([sig, bkg]), self.poi, self.background, self.shape_nuisances, systs
        )


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
    function, gradients in validation too, monitors told the loss is not a mean over events; and raise
    :class:`ConfigurationError` when the batch size exceeds a training fold (LUMIN would yield no batch)."""
    fp.loss_func = None  # LUMIN skips its own loss (model.py:130); the callback sets loss_val in on_forwards_end
    fp.val_requires_grad = True  # the loss needs derivatives in validation too
    for c in fp.cbs:  # the loss is a per-batch statistic, not a mean over events
        if hasattr(c, "loss_is_meaned"):
            c.loss_is_meaned = False
    fy, bs = getattr(fp, "fy", None), getattr(fp, "bs", None)
    if fy is not None and bs is not None and getattr(fp, "trn_idxs", None):
        too_small = {i: n for i in fp.trn_idxs if (n := fy.get_data_count(i)) < bs}
        if too_small:
            raise ConfigurationError(
                f"batch size {bs} is larger than training fold(s) {too_small} (events per fold): LUMIN would "
                "yield no batch. Use a smaller bs or fewer, larger folds."
            )
