"""Derivatives of a batch's soft templates along the nuisances of an input transform: ∂T_p/∂α_k, the shape part of
exact INFERNO (de Castro & Dorigo 2018).

T_p = Σ_{i∈p} w_i f(x_i(α)) / W_p is the soft template of process p (f: the network's softmax over bins, x(α): the
inputs with the nuisances applied, W_p: the process's batch weight). Four ways to the same numbers (tested equal):
recorded forward-mode tangents of LUMIN's own pass (:class:`~lumin_inferno.models.ForwardTangents`), Jacobian-vector
products on a second pass, or batched reverse mode through LUMIN's pass. Pure torch; the LUMIN hooks are
:class:`~lumin_inferno.callbacks.InfernoCallback`'s.
"""

from __future__ import annotations

import warnings
from typing import Callable, Dict, List, Optional, Set, Tuple

import torch
from torch import Tensor, nn

from ..exceptions import InputTransformError, InvalidModelSpecError, UnsupportedNetworkError
from .tangents import ForwardTangents

__all__ = ["TransformJacobian", "InputTransform", "JACOBIAN_MODES", "weight_matrix"]

#: ways :class:`TransformJacobian` can take the derivatives
JACOBIAN_MODES = ("auto", "recorded", "forward", "reverse")

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


def weight_matrix(w: Tensor, masks: Dict[str, Tensor], totals: Dict[str, Tensor], processes: List[str]) -> Tensor:
    """``[P, n]`` float64: w/W_p on the rows of process p, 0 elsewhere, so that matrix × probs = the soft templates."""
    zero = torch.zeros_like(w, dtype=torch.float64)
    return torch.stack([torch.where(masks[p], w.double(), zero) / totals[p] for p in processes])


class TransformJacobian:
    """∂(soft template of each process)/∂α_k for the nuisances ``nuisances`` of ``transform``, per batch.

    Args:
        nuisances: the transform's nuisance names, in the order of the Jacobian's last axis.
        acts: nuisance → the processes it acts on (events of other processes keep α = 0).
        transform: the input transform (:data:`InputTransform`).
        network: the network whose softmax output makes the templates.
        mode: ``"recorded"``, ``"forward"``, ``"reverse"`` or ``"auto"`` (recorded where the network is a chain of
            known layers, else forward); see :class:`~lumin_inferno.callbacks.InfernoCallback`.
        owner: name used in warnings.

    Per batch: :meth:`begin_batch` before the network's forward pass, :meth:`jacobian` after it,
    :meth:`end_batch`; :meth:`close` after training. ``used`` is the mode in effect, ``note`` why it fell back.
    """

    def __init__(self, nuisances: List[str], acts: Dict[str, Set[str]], transform: InputTransform, network: nn.Module,
                 mode: str = "auto", owner: str = "InfernoCallback"):
        if mode not in JACOBIAN_MODES:
            raise InvalidModelSpecError(f"jacobian must be one of {JACOBIAN_MODES}, got {mode!r}")
        self.nuisances, self.acts, self.transform, self.network = list(nuisances), acts, transform, network
        self.mode, self.owner, self.used, self.note = mode, owner, mode, ""
        self._checked_transform = self._checked_tangents = self._checked_input_tangents = False
        self._tangents: Optional[ForwardTangents] = None
        self._delta: Optional[Tensor] = None
        self._x_aff: Optional[Tensor] = None
        self._n_aff: Optional[int] = None
        self._aff_index: Optional[Tensor] = None
        self._masks: Dict[str, Tensor] = {}
        if mode in ("auto", "recorded"):
            try:
                self._tangents = ForwardTangents(network)
            except UnsupportedNetworkError as err:
                if mode == "recorded":
                    raise
                self._fall_back(f"no recorded tangents: {err}", warn=False)
            else:
                self._tangents.attach()
                self.used = "recorded"
        self.end_batch()

    def close(self) -> None:
        """Remove the recording hooks from the network."""
        if self._tangents is not None:
            self._tangents.detach()
            self._tangents = None

    def _fall_back(self, why: str, warn: bool) -> None:
        self.close()
        self.used, self.note = "forward", why
        if warn:
            warnings.warn(f"{self.owner}: using jacobian='forward': {why}", RuntimeWarning, stacklevel=3)

    # -------------------------------------------------------------------------------------------------- batches
    def begin_batch(self, x: Tensor, masks: Dict[str, Tensor]) -> Tuple[Tensor, Optional[Tensor], Dict[str, Tensor]]:
        """Before the forward pass: returns (the inputs to pass, the row order applied to them or None, the process
        masks in that order). Recorded tangents put the events of affected processes first (then they are a view
        of every activation); reverse mode applies the transform at α = 0 with the nuisances as leaves."""
        affected = self._affected(masks)
        if not self._checked_transform:
            self._check_transform(x, affected)
        order = None
        if self._tangents is not None:
            n_aff = int(affected.sum())
            order = torch.cat((affected.nonzero().squeeze(1), (~affected).nonzero().squeeze(1)))
            x, masks = x[order], {k: m[order] for k, m in masks.items()}
            self._n_aff, self._x_aff = n_aff, x[:n_aff]
            self._tangents.arm()
        elif self.mode == "reverse":
            delta = torch.zeros(len(self.nuisances), dtype=x.dtype, device=x.device, requires_grad=True)
            self._delta, x = delta, self._apply(x, delta, masks)
        else:
            self._x_aff, self._aff_index = x[affected], affected
        self._masks = masks
        return x, order, masks

    def end_batch(self) -> None:
        self._delta = self._x_aff = self._n_aff = self._aff_index = None
        self._masks = {}

    def jacobian(self, probs: Tensor, w: Tensor, users: List[str], totals: Dict[str, Tensor]) -> Tensor:
        """∂(template of each process in ``users``)/∂α, ``[len(users), n_bins, K]`` float64, differentiable w.r.t.
        the network; ``probs`` is the output of the forward pass on :meth:`begin_batch`'s inputs, ``w`` the events'
        weights and ``totals`` each process's batch weight W_p."""
        if self.mode == "reverse":
            assert self._delta is not None  # set by begin_batch
            templates = weight_matrix(w, self._masks, totals, users) @ probs.double()  # a function of δ through x
            flat = templates.reshape(-1)
            eye = torch.eye(len(flat), dtype=flat.dtype, device=flat.device)
            (jac,) = torch.autograd.grad(flat, self._delta, grad_outputs=eye, is_grads_batched=True,
                                         create_graph=True)
            return jac.reshape(len(users), -1, len(self.nuisances))
        if self._n_aff is not None:
            recorded = self._recorded_jacobian(probs, w, users, totals)
            if recorded is not None:
                return recorded
        return self._forward_jacobian(w, users, totals)

    def output_tangents(self) -> Tensor:
        """Recorded mode: ∂f(x_i)/∂α_k of the affected events, ``[K, n_aff, n_bins]``, from the forward pass."""
        assert self._tangents is not None and self._x_aff is not None, "recorded mode, inside a batch"
        return self._tangents.jvp(self._input_tangents(self._x_aff, self._aff_masks()))

    # --------------------------------------------------------------------------------------------- the transform
    def _affected(self, masks: Dict[str, Tensor]) -> Tensor:
        """Events of any process a nuisance acts on."""
        names = {p for acts in self.acts.values() for p in acts if p in masks}
        return torch.stack([masks[p] for p in names]).any(0)

    def _row_masks(self, masks: Dict[str, Tensor]) -> Tensor:
        """``[K, n]``: True where nuisance k acts on the row's process."""
        rows = []
        for name in self.nuisances:
            m = torch.zeros_like(next(iter(masks.values())))
            for p in self.acts[name]:
                if p in masks:
                    m = m | masks[p]
            rows.append(m)
        return torch.stack(rows)

    def _check_shape(self, out, x: Tensor) -> Tensor:
        """``out`` if it is a tensor of the inputs' shape (what a transform must return), else a named error."""
        if not isinstance(out, Tensor) or out.shape != x.shape:
            raise InputTransformError(
                f"the input transform must return a tensor of the input shape {tuple(x.shape)}, got "
                f"{tuple(out.shape) if isinstance(out, Tensor) else type(out).__name__}"
            )
        return out

    def _apply(self, x: Tensor, delta: Tensor, masks: Dict[str, Tensor]) -> Tensor:
        """The transform with nuisance k at δ_k on the rows it acts on (per-row values, mask all True)."""
        rm = self._row_masks(masks).to(x.dtype)
        values = {name: delta[k] * rm[k] for k, name in enumerate(self.nuisances)}
        return self._check_shape(self.transform(x, values, torch.ones(len(x), dtype=torch.bool, device=x.device)),
                                    x)

    def _check_transform(self, x: Tensor, affected: Tensor) -> None:
        """Once: the transform must be the identity at α = 0 and must not write in place."""
        with torch.no_grad():
            before, version = x.clone(), x._version  # the version counter moves on any in-place write
            zeros = {n: torch.zeros((), dtype=x.dtype, device=x.device) for n in self.nuisances}
            out = self.transform(x, zeros, affected)
            if x._version != version or not torch.equal(x, before):
                raise InputTransformError("the input transform modified its input in place; build a new tensor")
            out = self._check_shape(out, x)
            if not torch.allclose(out, x, rtol=1e-5, atol=1e-6):
                worst = (out - x).abs().max().item()
                raise InputTransformError(
                    f"the input transform does not return the inputs unchanged at the nominal nuisance values "
                    f"(max |Δx| = {worst:.3g}); check the nominal values of {self.nuisances}"
                )
        self._checked_transform = True

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
        own = getattr(self.transform, "tangents", None)
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
        tangents = tangents * self._row_masks(masks).to(x_aff.dtype)[:, :, None]
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

    def _jvp_by_double_vjp(self, out: Tensor, delta: Tensor, create_graph: bool) -> Tensor:
        """J e_k for every k, ``[K, *out.shape]``: g(u) = Jᵀu is linear in u, so ∂(g·e_k)/∂u = J e_k (two reverse
        passes; measured faster than ``torch.func.jacfwd`` on CPU and free of forward-AD gaps in LUMIN blocks)."""
        u = torch.zeros_like(out, requires_grad=True)
        (jt_u,) = torch.autograd.grad(out, delta, grad_outputs=u, create_graph=True, allow_unused=True)
        if jt_u is None:
            raise InputTransformError(f"the input transform does not depend on the nuisances {self.nuisances}")
        eye = torch.eye(len(delta), dtype=jt_u.dtype, device=jt_u.device)
        (jac,) = torch.autograd.grad(jt_u, u, grad_outputs=eye, is_grads_batched=True, create_graph=create_graph,
                                     allow_unused=True)
        if jac is None:
            raise InputTransformError(f"the input transform does not depend on the nuisances {self.nuisances}")
        return jac

    def _autograd_input_tangents(self, x_aff: Tensor, masks: Dict[str, Tensor]) -> Tensor:
        """Exact ∂x/∂α_k through the transform (cheap: inputs only, no network)."""
        delta = torch.zeros(len(self.nuisances), dtype=x_aff.dtype, device=x_aff.device, requires_grad=True)
        with torch.enable_grad():
            return self._jvp_by_double_vjp(self._apply(x_aff.detach(), delta, masks), delta, create_graph=False)

    # ------------------------------------------------------------------------------------------------ Jacobians
    def _recorded_jacobian(self, probs: Tensor, w: Tensor, users: List[str], totals) -> Optional[Tensor]:
        """From the activations of the forward pass (rows 0..n_aff-1); ``None`` when the recorded pass is not the
        one that produced ``probs`` (then the generic route is used)."""
        if self._tangents is None or self._tangents.output is not probs:
            self._fall_back("the recorded forward pass is not the one that produced y_pred", warn=True)
            return None
        wm = weight_matrix(self._aff_weights(w), self._aff_masks(), totals, users)  # [P, n_aff]
        try:
            t_out = self.output_tangents()  # [K, n_aff, bins]
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
        if self.mode == "recorded":
            raise UnsupportedNetworkError(f"{problem}; use jacobian='forward'")
        self._fall_back(problem, warn=True)
        return None

    def _forward_jacobian(self, w: Tensor, users: List[str], totals) -> Tensor:
        """JVPs on a second pass over the affected events (any network)."""
        masks, x_aff = self._aff_masks(), self._x_aff
        assert x_aff is not None  # set by begin_batch
        wm = weight_matrix(self._aff_weights(w), masks, totals, users)
        delta = torch.zeros(len(self.nuisances), dtype=x_aff.dtype, device=x_aff.device, requires_grad=True)
        templates = (wm @ self.network(self._apply(x_aff, delta, masks)).double()).reshape(-1)
        jac_t = self._jvp_by_double_vjp(templates, delta, create_graph=True)
        return jac_t.transpose(0, 1).reshape(len(users), -1, len(self.nuisances))
