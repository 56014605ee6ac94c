"""Exact input shifts of ``"transform"`` systematics declared in physical units (:class:`~lumin_inferno.analysis.
InputShift`), applied in the network's input space through LUMIN's fitted input pipe.

For a feature x with the pipe's standardisation x_std = (x − m)/s, the systematics move the physical value
x → x + Σ_k α_k (scale_k x + shift_k), so in the network's inputs x_std → x_std + Σ_k α_k (scale_k x + shift_k)/s:
linear in the nuisances, with the exact tangent ∂x_std/∂α_k = (scale_k x + shift_k)/s (the ``tangents`` method
INFERNO uses instead of autograd).
"""

from __future__ import annotations

from typing import Dict, List, Sequence, Tuple

import numpy as np
import torch
from torch import Tensor

from ..exceptions import ConfigurationError

__all__ = ["InputShiftTransform", "standardisation_of"]


def standardisation_of(input_pipe, n_features: int) -> Tuple[np.ndarray, np.ndarray]:
    """(mean, scale) of each of the first ``n_features`` inputs from LUMIN's input pipe (an sklearn
    ``StandardScaler`` or a ``Pipeline`` whose only step is one); (0, 1) when ``input_pipe`` is None (inputs
    stored in physical units). Other pipes (PCA, ...) do not map a feature shift to one input: ConfigurationError."""
    if input_pipe is None:
        return np.zeros(n_features), np.ones(n_features)
    steps = getattr(input_pipe, "steps", None)
    scaler = input_pipe if steps is None else (steps[0][1] if len(steps) == 1 else None)
    mean, scale = getattr(scaler, "mean_", None), getattr(scaler, "scale_", None)
    if scaler is None or mean is None:
        raise ConfigurationError(
            f"input shifts need LUMIN's input pipe to be one StandardScaler; got {input_pipe!r}"
        )
    mean = np.asarray(mean, dtype=np.float64)
    scale = np.ones_like(mean) if scale is None else np.asarray(scale, dtype=np.float64)
    if len(mean) < n_features:
        mean = np.concatenate([mean, np.zeros(n_features - len(mean))])  # categorical features: not scaled
        scale = np.concatenate([scale, np.ones(n_features - len(scale))])
    return mean[:n_features], scale[:n_features]


class InputShiftTransform:
    """``transform(x, nuisances, mask)`` for the ``"transform"`` systematics of an analysis that declare input
    shifts (see :data:`~lumin_inferno.callbacks.inferno.InputTransform`), on inputs ordered as ``features``.

    Args:
        analysis: the :class:`~lumin_inferno.analysis.Analysis`.
        features: the network's input features, in order (LUMIN: ``cont_feats + cat_feats``).
        input_pipe: LUMIN's fitted input pipe (``FoldYielder.input_pipe``), or None for physical inputs.
    """

    def __init__(self, analysis, features: Sequence[str], input_pipe=None):
        features = list(features)
        self.names: List[str] = []
        self._terms: Dict[str, List[Tuple[int, float, float]]] = {}
        for s in analysis.systematics_of("transform"):
            if not s.shifts:
                raise ConfigurationError(
                    f"transform systematic {s.name!r} declares no input shifts; pass a transform that applies it"
                )
            for sh in s.shifts:
                if sh.feature not in features:
                    raise ConfigurationError(
                        f"transform systematic {s.name!r} shifts feature {sh.feature!r}, which is not a network "
                        f"input (inputs: {features})"
                    )
                self._terms.setdefault(s.name, []).append((features.index(sh.feature), sh.scale, sh.shift))
            if s.name not in self.names:
                self.names.append(s.name)
        mean, scale = standardisation_of(input_pipe, len(features))
        self.mean = torch.as_tensor(mean)
        self.scale = torch.as_tensor(scale)

    def _direction(self, x: Tensor, name: str) -> Tensor:
        """∂x_std/∂α of nuisance ``name`` for every row, ``[n, n_features]``."""
        mean, scale = self.mean.to(x), self.scale.to(x)
        out = torch.zeros_like(x)
        for f, s, d in self._terms[name]:
            physical = x[:, f] * scale[f] + mean[f]
            out[:, f] = out[:, f] + (s * physical + d) / scale[f]
        return out

    def __call__(self, x: Tensor, nuisances: Dict[str, Tensor], mask: Tensor) -> Tensor:
        m = mask.to(x.dtype)[:, None]
        out = x
        for name, alpha in nuisances.items():
            if name not in self._terms:
                raise ConfigurationError(f"InputShiftTransform has no nuisance {name!r} (it has {self.names})")
            a = torch.as_tensor(alpha, dtype=x.dtype, device=x.device)
            a = a[:, None] if a.dim() == 1 else a
            out = out + m * a * self._direction(x, name)
        return out

    def tangents(self, x: Tensor, names: Sequence[str]) -> Tensor:
        """Exact ∂x'/∂α_k at α = 0 for every row, ``[len(names), n, n_features]``."""
        return torch.stack([self._direction(x, n) for n in names])
