"""How much does a model's output depend on a nuisance? Metrics and a plot, numpy only (no LUMIN).

* :func:`distance_correlation`: Székely–Rizzo–Bakirov distance correlation dCor(f, z) ∈ [0, 1]; 0 iff f and z are
  independent (in the population), 1 for an exact linear relation. O(n²) memory, computed on a subsample.
* :func:`js_divergence`: binned Jensen–Shannon divergence between two output distributions, in bits (∈ [0, 1]).
* :func:`ks_statistic`: two-sample Kolmogorov–Smirnov statistic sup |F₁ − F₂| (∈ [0, 1]), optionally weighted.
* :func:`compare_at_nuisance`: both, for the outputs at several fixed nuisance values against a reference value.
* :func:`plot_output_vs_nuisance`: the output distributions at those values (e.g. z = −σ, 0, +σ), saved to a file.
"""

from __future__ import annotations

from pathlib import Path
from typing import Dict, Mapping, Optional, Sequence, Tuple, Union, cast

import numpy as np

from ..exceptions import ConfigurationError, EmptyProcessError, TargetShapeError

__all__ = [
    "distance_correlation",
    "js_divergence",
    "ks_statistic",
    "compare_at_nuisance",
    "plot_output_vs_nuisance",
]


def _centred_distances(a: np.ndarray) -> np.ndarray:
    d = np.sqrt(((a[:, None, :] - a[None, :, :]) ** 2).sum(-1))
    return d - d.mean(0, keepdims=True) - d.mean(1, keepdims=True) + d.mean()


def distance_correlation(
    x: np.ndarray, y: np.ndarray, max_n: int = 2000, seed: int = 0
) -> float:
    r"""Sample distance correlation dCor(x, y) = dCov(x, y) / √(dVar(x)·dVar(y)) (the biased V-statistic, in
    [0, 1]) between paired samples ``x`` [n] or [n, p] and ``y`` [n] or [n, q], on a random subsample of at most
    ``max_n`` pairs (the cost is O(max_n²)). Independent samples give ≈ 0 (a positive bias of order 1/√n), an exact
    linear relation gives 1."""
    x = np.asarray(x, dtype=np.float64).reshape(len(x), -1)
    y = np.asarray(y, dtype=np.float64).reshape(len(y), -1)
    if len(x) != len(y):
        raise TargetShapeError(f"distance_correlation needs paired samples, got {len(x)} and {len(y)}")
    if len(x) < 2:
        raise TargetShapeError("distance_correlation needs at least 2 pairs")
    if len(x) > max_n:
        idx = np.random.default_rng(seed).choice(len(x), size=max_n, replace=False)
        x, y = x[idx], y[idx]
    a, b = _centred_distances(x), _centred_distances(y)
    dcov2, dvar_x, dvar_y = (a * b).mean(), (a * a).mean(), (b * b).mean()
    if dvar_x <= 0 or dvar_y <= 0:
        return 0.0  # a constant sample is independent of anything
    return float(np.sqrt(max(dcov2, 0.0) / np.sqrt(dvar_x * dvar_y)))


def _histogram(a: np.ndarray, edges: np.ndarray, weights: Optional[np.ndarray]) -> np.ndarray:
    a = np.clip(np.asarray(a, dtype=np.float64).reshape(-1), edges[0], edges[-1])  # overflow into the edge bins
    h, _ = np.histogram(a, bins=edges, weights=None if weights is None else np.asarray(weights).reshape(-1))
    total = h.sum()
    if not total > 0:
        raise EmptyProcessError("empty distribution (no events or zero total weight)")
    return h / total


def _edges(a: np.ndarray, b: np.ndarray, bins: Union[int, Sequence[float]], value_range) -> np.ndarray:
    if not np.isscalar(bins):
        return np.asarray(bins, dtype=np.float64)
    if value_range is None:
        both = np.concatenate([np.ravel(a), np.ravel(b)])
        value_range = (float(both.min()), float(both.max()))
        if value_range[0] == value_range[1]:
            value_range = (value_range[0] - 0.5, value_range[1] + 0.5)
    return np.linspace(value_range[0], value_range[1], int(cast(int, bins)) + 1)  # a scalar here: the number of bins


def js_divergence(
    a: np.ndarray,
    b: np.ndarray,
    bins: Union[int, Sequence[float]] = 20,
    value_range: Optional[Tuple[float, float]] = (0.0, 1.0),
    weights_a: Optional[np.ndarray] = None,
    weights_b: Optional[np.ndarray] = None,
) -> float:
    r"""Jensen–Shannon divergence JS(P‖Q) = ½ KL(P‖M) + ½ KL(Q‖M), M = ½(P + Q), in bits (0 for identical
    histograms, 1 for disjoint ones), between the normalised histograms of samples ``a`` and ``b``. ``bins``: a number
    of equal bins over ``value_range`` (default (0, 1), for a sigmoid output; ``None``: the samples' range) or the
    edges; values outside go to the edge bins."""
    edges = _edges(a, b, bins, value_range)
    p, q = _histogram(a, edges, weights_a), _histogram(b, edges, weights_b)
    m = 0.5 * (p + q)

    def kl(u: np.ndarray) -> float:
        nz = u > 0
        return float((u[nz] * np.log2(u[nz] / m[nz])).sum())

    return max(0.0, 0.5 * kl(p) + 0.5 * kl(q))


def ks_statistic(
    a: np.ndarray,
    b: np.ndarray,
    weights_a: Optional[np.ndarray] = None,
    weights_b: Optional[np.ndarray] = None,
) -> float:
    """Two-sample Kolmogorov–Smirnov statistic D = sup_t |F_a(t) − F_b(t)| of the (weighted) empirical CDFs."""
    a, b = np.asarray(a, dtype=np.float64).reshape(-1), np.asarray(b, dtype=np.float64).reshape(-1)
    if len(a) == 0 or len(b) == 0:
        raise EmptyProcessError("ks_statistic needs two non-empty samples")
    wa = np.ones(len(a)) if weights_a is None else np.asarray(weights_a, dtype=np.float64).reshape(-1)
    wb = np.ones(len(b)) if weights_b is None else np.asarray(weights_b, dtype=np.float64).reshape(-1)
    points = np.union1d(a, b)

    def cdf(x: np.ndarray, w: np.ndarray) -> np.ndarray:
        order = np.argsort(x)
        cum = np.concatenate([[0.0], np.cumsum(w[order])]) / w.sum()
        return cum[np.searchsorted(x[order], points, side="right")]

    return float(np.abs(cdf(a, wa) - cdf(b, wb)).max())


def compare_at_nuisance(
    outputs: Mapping[float, np.ndarray],
    reference: float = 0.0,
    bins: Union[int, Sequence[float]] = 20,
    value_range: Optional[Tuple[float, float]] = (0.0, 1.0),
) -> Dict[float, Dict[str, float]]:
    """For model outputs at fixed nuisance values (``{z: outputs}``), the JS divergence (bits) and KS statistic of
    each distribution against the one at ``reference``: ``{z: {"js": ..., "ks": ...}}`` (z ≠ reference)."""
    if reference not in outputs:
        raise ConfigurationError(f"no outputs at the reference nuisance value {reference}; have {sorted(outputs)}")
    ref = outputs[reference]
    return {
        z: {"js": js_divergence(out, ref, bins, value_range), "ks": ks_statistic(out, ref)}
        for z, out in sorted(outputs.items())
        if z != reference
    }


def plot_output_vs_nuisance(
    outputs: Mapping[str, Mapping[float, np.ndarray]],
    path: Union[str, Path],
    bins: int = 30,
    value_range: Tuple[float, float] = (0.0, 1.0),
    xlabel: str = "model output f(x)",
    nuisance_label: str = "z",
) -> Path:
    """Histograms (unit area) of the model output at each fixed nuisance value, one panel per model:
    ``outputs = {"λ = 0": {-1.0: f_minus, 0.0: f_nom, 1.0: f_plus}, ...}``. Saved to ``path`` (png/pdf); returns it.
    Drawn with ``mplhep.histplot`` in the package's one plot style (:func:`~lumin_inferno.evaluation.plots.
    hep_figure`), saved atomically."""
    import mplhep

    from .plots import hep_figure

    edges = np.linspace(value_range[0], value_range[1], bins + 1)
    with hep_figure(path, figsize=(8 * len(outputs), 7), ncols=len(outputs)) as (fig, axes):
        for ax, (title, by_z) in zip(axes, outputs.items()):
            for z, out in sorted(by_z.items()):
                counts, _ = np.histogram(np.clip(np.ravel(out), *value_range), bins=edges, density=True)
                mplhep.histplot(counts, edges, ax=ax, lw=2, label=f"{nuisance_label} = {z:g}")
            ax.set_xlabel(xlabel)
            ax.set_ylabel("density")
            ax.set_title(title)
            ax.legend()
    return Path(path)
