"""Network output blocks for summary statistics, shaped to LUMIN's ``ModelBuilder`` (``tail=...``)."""

from __future__ import annotations

from typing import Callable, Optional, Sequence, Union

import numpy as np

import torch
import torch.nn as nn
from lumin.nn.models.blocks.tail import AbsTail
from lumin.nn.models.initialisations import lookup_normal_init
from torch import Tensor

from ..exceptions import ConfigurationError

__all__ = ["SoftmaxTemperatureTail", "ClassScoreTail", "soft_class_score_bins"]


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
            raise ConfigurationError(f"SoftmaxTemperatureTail: temperature must be > 0, got {temperature}")
        if n_out < 2:
            raise ConfigurationError(f"SoftmaxTemperatureTail: need at least 2 output bins, got n_out={n_out}")
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


def soft_class_score_bins(logits: Tensor, edges: Tensor, temperature: float, score_temperature: float) -> Tensor:
    r"""Differentiable multi-class summary: soft membership of each event in ``n_classes × n_score_bins`` bins.

    With class probabilities :math:`p = \mathrm{softmax}(z)`, the soft category is
    :math:`q_c = \mathrm{softmax}(z/\tau)_c` (the argmax class as τ → 0) and the soft score bin of class c is
    :math:`\sigma((p_c - e_{c,b})/\tau_s) - \sigma((p_c - e_{c,b+1})/\tau_s)` with the outer edges at ∓∞;
    output ``[..., c·n_score_bins + b]`` = q_c × that membership, rows summing to 1. As τ, τ_s → 0 it is the hard
    binning of :func:`lumin_inferno.evaluation.class_score_bins` (argmax class × score bin).

    Args:
        logits: [..., n_classes]; edges: [n_classes, n_score_bins + 1] (outer columns ignored).
    """
    p = torch.softmax(logits, dim=-1)
    q = torch.softmax(logits / temperature, dim=-1)
    inner = edges[:, 1:-1].to(p)  # [C, B-1]
    above = torch.sigmoid((p.unsqueeze(-1) - inner) / score_temperature)  # P(score above each inner edge)
    ones = torch.ones_like(above[..., :1])
    upper = torch.cat([ones, above], dim=-1)  # P(above the lower edge of bin b)
    lower = torch.cat([above, torch.zeros_like(ones)], dim=-1)  # P(above the upper edge of bin b)
    member = upper - lower  # [..., C, B]
    return (q.unsqueeze(-1) * member).flatten(-2)


class ClassScoreTail(AbsTail):
    r"""A multi-class summary for INFERNO: a linear layer to ``n_classes`` logits, binned as analysts bin a
    multi-class classifier (argmax class × score bins), relaxed so that INFERNO can train it
    (:func:`soft_class_score_bins`). ``n_out`` (the Analysis' ``n_bins``) must be ``n_classes × n_score_bins``.

    Args:
        n_classes: classes of the classifier; the score bins per class are ``n_out // n_classes``.
        temperature: τ of the soft argmax over classes; ``score_temperature``: τ_s of the soft score edges (in
            units of probability).
        edges: [n_classes, n_score_bins + 1] score edges (e.g. :func:`~lumin_inferno.evaluation.class_score_edges`
            of a cross-entropy classifier); default uniform on [1/n_classes, 1].

    Usage::

        ModelBuilder(objective="classification", n_out=4 * 3, cont_feats=feats, tail=ClassScoreTail,
                     model_args={"tail": {"n_classes": 4}}, ...)
    """

    def __init__(
        self,
        n_in: int,
        n_out: int,
        objective: str,
        bias_init: Optional[float] = None,
        lookup_init: Callable = lookup_normal_init,
        freeze: bool = False,
        n_classes: int = 2,
        temperature: float = 0.1,
        score_temperature: float = 0.02,
        edges: Optional[Union[np.ndarray, Sequence[Sequence[float]]]] = None,
    ):
        super().__init__(
            n_in=n_in, n_out=n_out, objective=objective, bias_init=bias_init, lookup_init=lookup_init, freeze=freeze
        )
        if n_classes < 2 or n_out % n_classes:
            raise ConfigurationError(f"ClassScoreTail: n_out={n_out} must be n_classes × score bins with n_classes ≥ 2, "
                             f"got n_classes={n_classes}")
        if not (temperature > 0 and score_temperature > 0):
            raise ConfigurationError(f"ClassScoreTail: temperatures must be > 0, got {temperature}, {score_temperature}")
        n_score = n_out // n_classes
        if edges is None:
            e = np.tile(np.linspace(1.0 / n_classes, 1.0, n_score + 1), (n_classes, 1))
        else:
            e = np.asarray(edges, dtype=np.float64)
            if e.shape != (n_classes, n_score + 1) or np.any(np.diff(e, axis=1) < 0) or not np.all(np.isfinite(e)):
                raise ConfigurationError(f"ClassScoreTail: edges must be finite, non-decreasing, of shape "
                                 f"({n_classes}, {n_score + 1}); got shape {e.shape}")
        self.n_classes, self.temperature, self.score_temperature = n_classes, float(temperature), float(score_temperature)
        self.register_buffer("edges", torch.as_tensor(e, dtype=torch.float32))
        self.dense = nn.Linear(n_in, n_classes)
        lookup_init("softmax", n_in, n_classes)(self.dense.weight)
        nn.init.constant_(self.dense.bias, 0.0 if bias_init is None else bias_init)
        if self.freeze:
            self.freeze_layers()

    def forward(self, x: Tensor) -> Tensor:
        return soft_class_score_bins(self.dense(x), self.edges, self.temperature, self.score_temperature)

    def get_out_size(self) -> int:
        return self.n_out
