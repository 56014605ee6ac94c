"""Forward-mode tangents of a LUMIN feed-forward network that reuse the activations of its own forward pass.

INFERNO needs, per training step, the derivative of the network output with respect to the shape nuisances: a
Jacobian-vector product J·d of the network with the input tangent d = ∂x/∂θ of each nuisance. For a chain of
layers this is the chain rule applied to d, layer by layer:

    Linear:                 t ← t Wᵀ                        (the bias has no tangent)
    elementwise σ:          t ← σ'(z) ⊙ t                   (z: the layer's input in the forward pass)
    softmax(z/τ) tail:      t ← p ⊙ (t_z − Σ_j p_j t_z,j),  t_z = t Wᵀ/τ    (p: the tail's output)

so the only per-event quantities needed are the pre-activations z and the output p, which LUMIN's own forward
pass has just computed. :class:`ForwardTangents` records them with forward hooks and propagates the K tangents
of the first ``n`` rows (the background events) as one ``[K·n, width]`` matrix per layer: one matrix product per
layer for all nuisances, no second forward pass and no reverse-over-reverse products. Everything stays in the
autograd graph, so the gradient of the loss through the tangents (the second-order term INFERNO trains on) comes
from ordinary backpropagation.

Only chains of known layers are accepted (LUMIN's ``CatEmbHead`` without categorical features, the plain
``FullyConnected`` body, :class:`~lumin_inferno.models.SoftmaxTemperatureTail`, linear layers, elementwise
activations, inactive dropout); :class:`UnsupportedNetworkError` names the first layer that is not, and the
INFERNO callback then falls back to its generic Jacobian. The chain rule above assumes the modules are applied in
the order they are listed, which is what those blocks do; the callback also checks the result against the generic
Jacobian on its first batch.
"""

from __future__ import annotations

from typing import List, Optional, Tuple

import torch
import torch.nn as nn
from lumin.nn.models.blocks.body import FullyConnected
from lumin.nn.models.blocks.head import CatEmbHead
from lumin.nn.models.layers.activations import Mish as LuminMish
from lumin.nn.models.layers.activations import Swish as LuminSwish
from torch import Tensor

from ..exceptions import UnsupportedNetworkError
from .tails import SoftmaxTemperatureTail

__all__ = ["ForwardTangents"]

#: Activations whose Jacobian is diagonal (σ acts on each unit alone); their σ'(z) comes from autograd.
_ELEMENTWISE = (
    nn.PReLU,
    nn.SELU,
    nn.ELU,
    nn.CELU,
    nn.LeakyReLU,
    nn.Sigmoid,
    nn.Tanh,
    nn.SiLU,
    nn.GELU,
    nn.Softplus,
    nn.Mish,
    nn.Hardtanh,
    LuminSwish,
    LuminMish,
)


# A step: (kind, module); ForwardTangents._STEP[kind] maps the tangent [K·n, width_in] to [K·n, width_out].
_Step = Tuple[str, nn.Module]


def _plan(module: nn.Module, steps: List[_Step], where: str) -> None:
    """Append the tangent steps of ``module`` to ``steps``; raise UnsupportedNetworkError otherwise."""
    if isinstance(module, nn.Sequential):
        for i, child in enumerate(module):
            _plan(child, steps, f"{where}[{i}]")
    elif isinstance(module, CatEmbHead):
        if module.cat_embedder.n_cat_in > 0:
            raise UnsupportedNetworkError(f"{where}: categorical embeddings (tangents need continuous inputs)")
        if module.do_cont > 0:
            raise UnsupportedNetworkError(f"{where}: dropout on the continuous inputs (do_cont={module.do_cont})")
        steps.append(("columns", module))
    elif isinstance(module, FullyConnected):
        if module.dense or module.res:
            raise UnsupportedNetworkError(f"{where}: FullyConnected with dense/res connections")
        _plan(module.layers, steps, f"{where}.layers")
    elif isinstance(module, SoftmaxTemperatureTail):
        steps.append(("softmax_tail", module))
    elif isinstance(module, nn.Linear):
        steps.append(("linear", module))
    elif isinstance(module, nn.ReLU):
        if module.inplace:
            raise UnsupportedNetworkError(f"{where}: in-place ReLU overwrites the activations the tangents need")
        steps.append(("relu", module))
    elif isinstance(module, _ELEMENTWISE):
        if getattr(module, "inplace", False):
            raise UnsupportedNetworkError(f"{where}: in-place {type(module).__name__}")
        steps.append(("elementwise", module))
    elif isinstance(module, (nn.Dropout, nn.AlphaDropout)):
        if module.p > 0:
            raise UnsupportedNetworkError(f"{where}: dropout with p={module.p} (its random mask is not recorded)")
    elif isinstance(module, nn.Identity):
        pass
    else:
        raise UnsupportedNetworkError(f"{where}: {type(module).__name__} has no forward-tangent rule")


class ForwardTangents:
    r"""Jacobian-vector products of ``net`` at the inputs of its latest forward pass, from recorded activations.

    Usage (what :class:`~lumin_inferno.callbacks.InfernoCallback` does each batch)::

        tangents = ForwardTangents(net)   # raises UnsupportedNetworkError for unknown layers
        tangents.attach()                 # forward hooks
        tangents.arm(); y = net(x)        # records z per activation and the output
        t_out = tangents.jvp(t_in)        # t_in [K, n, n_inputs] → [K, n, n_outputs], rows 0..n-1 of x
        tangents.detach()

    Args:
        net: the network, e.g. LUMIN's ``Model.model`` (``nn.Sequential(head, body, tail)``).
    """

    def __init__(self, net: nn.Module):
        self.net = net
        self.steps: List[_Step] = []
        _plan(net, self.steps, type(net).__name__)
        self._records: dict = {}
        self._handles: list = []
        self._armed = False
        self.output: Optional[Tensor] = None

    # ------------------------------------------------------------------------------------------------- recording
    def attach(self) -> None:
        """Register the forward hooks (idempotent)."""
        if self._handles:
            return
        for kind, m in self.steps:
            if kind in ("relu", "elementwise"):
                self._handles.append(m.register_forward_hook(self._record_input))
            elif kind == "softmax_tail":
                self._handles.append(m.register_forward_hook(self._record_output))
        self._handles.append(self.net.register_forward_hook(self._record_net_output))

    def detach(self) -> None:
        """Remove the hooks and drop the recorded tensors."""
        for h in self._handles:
            h.remove()
        self._handles, self._records, self.output, self._armed = [], {}, None, False

    def arm(self) -> None:
        """Record the next forward pass of the network (and only that one)."""
        self._records, self.output, self._armed = {}, None, True

    def _record_input(self, module: nn.Module, inputs: tuple, output: Tensor) -> None:
        if self._armed:
            self._records[id(module)] = inputs[0]

    def _record_output(self, module: nn.Module, inputs: tuple, output: Tensor) -> None:
        if self._armed:
            self._records[id(module)] = output

    def _record_net_output(self, module: nn.Module, inputs: tuple, output: Tensor) -> None:
        if self._armed:
            self.output, self._armed = output, False

    # ----------------------------------------------------------------------------------------------- propagation
    def jvp(self, tangents: Tensor) -> Tensor:
        """Output tangents ``[K, n, n_out]`` for input tangents ``[K, n, n_in]`` of the first ``n`` rows of the
        recorded batch (∂output/∂θ_k for each of the K directions), differentiable w.r.t. the network's weights."""
        if self.output is None:
            raise RuntimeError("ForwardTangents.jvp needs a recorded forward pass: call arm() before the forward")
        k, n = tangents.shape[:2]
        t = tangents.reshape(k * n, -1)
        for kind, m in self.steps:
            if kind in ("relu", "elementwise", "softmax_tail") and id(m) not in self._records:
                raise UnsupportedNetworkError(
                    f"{type(m).__name__} did not run in the recorded forward pass: the network does not apply its "
                    "layers as the plain chain they are listed in"
                )
            t = self._STEP[kind](self, m, t, k, n)
        return t.reshape(k, n, -1)

    def _columns(self, m: CatEmbHead, t: Tensor, k: int, n: int) -> Tensor:
        return t[:, : m.n_cont_in]

    def _linear(self, m: nn.Linear, t: Tensor, k: int, n: int) -> Tensor:
        return t @ m.weight.transpose(0, 1)

    def _relu(self, m: nn.Module, t: Tensor, k: int, n: int) -> Tensor:
        z = self._records[id(m)][:n].detach()  # ReLU'' = 0: no gradient flows through the mask
        # t ⊙ 1[z > 0] as one kernel: ReLU's own backward op (broadcast over the K directions; differentiable in t)
        return torch.ops.aten.threshold_backward(t.view(k, n, -1), z.expand(k, *z.shape), 0.0).view(k * n, -1)

    def _elementwise(self, m: nn.Module, t: Tensor, k: int, n: int) -> Tensor:
        z = self._records[id(m)][:n]
        if not z.requires_grad:  # frozen layers below: σ'(z) still needs a graph to z (and to σ's own weights)
            z = z.detach().requires_grad_(True)
        with torch.enable_grad():
            (slope,) = torch.autograd.grad(m(z), z, torch.ones_like(z), create_graph=True)
        return (t.view(k, n, -1) * slope).view(k * n, -1)

    def _softmax_tail(self, m: SoftmaxTemperatureTail, t: Tensor, k: int, n: int) -> Tensor:
        p = self._records[id(m)][:n]
        t_z = (t @ m.dense.weight.transpose(0, 1)).view(k, n, -1) / m.temperature
        return (p * (t_z - (p * t_z).sum(-1, keepdim=True))).view(k * n, -1)

    _STEP: dict = {
        "columns": _columns,
        "linear": _linear,
        "relu": _relu,
        "elementwise": _elementwise,
        "softmax_tail": _softmax_tail,
    }
