"""Fisher information of an extended *unbinned* likelihood: the physical limit no summary statistic can beat.

For an extended likelihood with intensity (expected event density) ν(x|θ) = Σ_p y_p(θ) f_p(x|θ), the expected
Fisher information is

.. math:: I_{ab} = \\int \\frac{\\partial_a \\nu\\, \\partial_b \\nu}{\\nu}\\, dx
               = \\sum_p y_p\\, \\mathbb{E}_{x \\sim f_p}\\big[\\partial_a \\log\\nu(x)\\; \\partial_b \\log\\nu(x)\\big],

(plus 1/σ² for Gaussian constraints), estimated here by Monte Carlo on samples of each process at the nominal
point. Any binning of any summary statistic loses information, so √(I⁻¹)_poi,poi bounds every binned analysis
from below (the "analytical likelihood" row of the INFERNO paper's Table 2).
"""

from __future__ import annotations

from typing import Callable, Mapping, Sequence

import torch
from torch import Tensor

from ..exceptions import InvalidModelSpecError
from .hessian import poi_variance
from .likelihood import Parameter

__all__ = ["extended_fisher_information", "unbinned_poi_uncertainty"]

#: ν(x | θ): events [n, d] and a parameter vector [n_par] → expected density of events at each x, [n] (> 0).
Intensity = Callable[[Tensor, Tensor], Tensor]


def extended_fisher_information(
    intensity: Intensity,
    parameters: Sequence[Parameter],
    samples: Mapping[str, Tensor],
    yields: Mapping[str, float],
    chunk_size: int = 200_000,
) -> Tensor:
    """Expected Fisher information ``[n_par, n_par]`` of the extended unbinned likelihood at the nominal point.

    Args:
        intensity: ν(x|θ) in events per unit volume of x, differentiable in θ (torch).
        parameters: θ, in the order ``intensity`` expects; their ``nominal`` values are the expansion point and
            their ``constraint`` widths add 1/σ² to the diagonal.
        samples: per process, events drawn from that process's density at the nominal point.
        yields: per process, its expected number of events y_p at the nominal point (weights the expectations).
        chunk_size: events per vectorised score evaluation (bounds memory).
    """
    if set(samples) != set(yields):
        raise InvalidModelSpecError(f"samples ({sorted(samples)}) and yields ({sorted(yields)}) name different processes")
    theta = torch.tensor([p.nominal for p in parameters], dtype=torch.float64)

    def log_nu(x: Tensor, th: Tensor) -> Tensor:
        return torch.log(intensity(x[None], th)[0])

    score = torch.func.vmap(torch.func.grad(log_nu, argnums=1), in_dims=(0, None))  # ∂θ log ν per event
    info = torch.zeros(len(parameters), len(parameters), dtype=torch.float64)
    for name, x in samples.items():
        x = torch.as_tensor(x, dtype=torch.float64)
        if x.shape[0] == 0:
            raise InvalidModelSpecError(f"no events in the sample of process {name!r}")
        acc = torch.zeros_like(info)
        for start in range(0, x.shape[0], chunk_size):
            g = score(x[start : start + chunk_size], theta)
            if not torch.isfinite(g).all():
                raise InvalidModelSpecError(f"non-finite score ∂θ log ν for process {name!r}: ν must be > 0 on its sample")
            acc += g.T @ g
        info += float(yields[name]) * acc / x.shape[0]
    precision = [0.0 if p.constraint is None else 1.0 / p.constraint**2 for p in parameters]
    return info + torch.diag(torch.tensor(precision, dtype=torch.float64))


def unbinned_poi_uncertainty(
    intensity: Intensity,
    parameters: Sequence[Parameter],
    samples: Mapping[str, Tensor],
    yields: Mapping[str, float],
    poi_index: int = 0,
) -> float:
    """√(I⁻¹)_poi,poi of :func:`extended_fisher_information`: the expected POI uncertainty of the unbinned fit,
    every other parameter profiled (in the POI's units). Raises :class:`SingularHessianError` if I is singular."""
    info = extended_fisher_information(intensity, parameters, samples, yields)
    return float(poi_variance(info, poi_index).sqrt())
