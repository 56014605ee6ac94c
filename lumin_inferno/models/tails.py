"""Network output blocks for summary statistics, shaped to LUMIN's ``ModelBuilder`` (``tail=...``)."""

from __future__ import annotations

from typing import Callable, Optional

import torch
import torch.nn as nn
from lumin.nn.models.blocks.tail import AbsTail
from lumin.nn.models.initialisations import lookup_normal_init
from torch import Tensor

__all__ = ["SoftmaxTemperatureTail"]


class SoftmaxTemperatureTail(AbsTail):
    r"""Linear layer to ``n_out`` bins followed by :math:`\mathrm{softmax}(z/\tau)`: soft bin-assignment
    probabilities, the differentiable histogram of INFERNO.

    A small temperature τ (the paper uses 0.1) makes the soft assignment close to the hard argmax used at
    evaluation. The output is a probability per bin (rows sum to 1), not a log-probability, so use it with a
    non-``multiclass`` objective (e.g. ``objective="classification"``), otherwise LUMIN's ``predict`` would
    exponentiate it.

    Usage::

        ModelBuilder(objective="classification", n_out=10, cont_feats=feats, tail=SoftmaxTemperatureTail,
                     tail_kargs={"temperature": 0.1}, ...)
    """

    def __init__(
        self,
        n_in: int,
        n_out: int,
        objective: str,
        bias_init: Optional[float] = None,
        lookup_init: Callable = lookup_normal_init,
        freeze: bool = False,
        temperature: float = 0.1,
    ):
        super().__init__(
            n_in=n_in, n_out=n_out, objective=objective, bias_init=bias_init, lookup_init=lookup_init, freeze=freeze
        )
        if not temperature > 0:
            raise ValueError(f"SoftmaxTemperatureTail: temperature must be > 0, got {temperature}")
        if n_out < 2:
            raise ValueError(f"SoftmaxTemperatureTail: need at least 2 output bins, got n_out={n_out}")
        self.temperature = float(temperature)
        self.dense = nn.Linear(n_in, n_out)
        lookup_init("softmax", n_in, n_out)(self.dense.weight)
        nn.init.constant_(self.dense.bias, 0.0 if bias_init is None else bias_init)
        if self.freeze:
            self.freeze_layers()

    def forward(self, x: Tensor) -> Tensor:
        z = self.dense(x)
        # softmax(z/τ) written out (max-subtracted, so it cannot overflow; the shift is a constant of the softmax, so
        # detaching it leaves the gradient exact): for the ~10 bins of INFERNO, torch.softmax over the last dimension
        # is about 5x slower on CPU than these four element-wise kernels (measured; benchmarks/README.md).
        e = torch.exp((z - z.detach().amax(dim=-1, keepdim=True)) / self.temperature)
        return e / e.sum(dim=-1, keepdim=True)

    def get_out_size(self) -> int:
        return self.n_out
