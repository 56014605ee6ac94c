"""Merge the bins of a binned likelihood into fewer, losing as little of the POI's expected precision as possible.

The expected Fisher information of Poisson counts is I = Σₖ gₖ gₖᵀ / νₖ + C (gₖ = ∂νₖ/∂θ at the Asimov point, C the
constraints' precision). Merging bins a and b adds their yields and their derivatives, so it replaces
gₐgₐᵀ/νₐ + g_b g_bᵀ/ν_b by (gₐ + g_b)(gₐ + g_b)ᵀ/(νₐ + ν_b): information can only be lost (Cauchy–Schwarz), and
nothing is lost when gₐ/νₐ = g_b/ν_b (bins with the same relative response to every parameter). :func:`merge_bins`
merges greedily, each time the pair whose merge raises the objective Σᵢ wᵢ Var(POIᵢ) = Σᵢ wᵢ (I⁻¹)ᵢᵢ least,
until ``n_groups`` bins are left. Without nuisances and with one POI this is the classic agglomeration of bins of
similar signal-to-background ratio.
"""

from __future__ import annotations

from typing import Mapping, Optional

import numpy as np

from ..exceptions import SingularHessianError

__all__ = ["merge_bins"]


def _objective(info: np.ndarray, poi_weights: Mapping[int, float]) -> np.ndarray:
    """Σᵢ wᵢ (I⁻¹)ᵢᵢ for a stack of information matrices ``[..., P, P]``; +inf where I is not positive definite."""
    with np.errstate(all="ignore"):
        chol_ok = np.all(np.linalg.eigvalsh(info) > 0, axis=-1)
        safe = np.where(chol_ok[..., None, None], info, np.eye(info.shape[-1]))
        cov = np.linalg.inv(safe)
    value = sum(w * cov[..., i, i] for i, w in poi_weights.items())
    return np.where(chol_ok & np.isfinite(value), value, np.inf)


def merge_bins(
    expected: np.ndarray,
    jacobian: np.ndarray,
    constraint_precision: np.ndarray,
    n_groups: int,
    poi_weights: Mapping[int, float],
    mergeable: Optional[np.ndarray] = None,
) -> np.ndarray:
    """Greedy merge of the ``mergeable`` bins into ``n_groups`` groups that keeps Σᵢ wᵢ Var(θᵢ) smallest.

    Args:
        expected: ν ``[n_bins]`` expected events per bin at the Asimov point (> 0).
        jacobian: ∂ν/∂θ ``[n_bins, n_par]`` there.
        constraint_precision: 1/σ² of each parameter's constraint ``[n_par]`` (0: unconstrained).
        n_groups: how many groups the mergeable bins end in.
        poi_weights: parameter index → weight wᵢ of its variance in the objective (e.g. ``{poi_index: 1.0}``).
        mergeable: ``[n_bins]`` bool, the bins that may be merged (default all); the others (e.g. control regions)
            keep their information and stay as they are.

    Returns:
        ``[n_bins]`` int: the group in [0, n_groups) of each mergeable bin (groups numbered by their first bin),
        -1 for the others.

    Raises :class:`~lumin_inferno.exceptions.SingularHessianError` when the information of all bins is singular
    (nothing to keep).
    """
    nu = np.asarray(expected, dtype=np.float64)
    jac = np.asarray(jacobian, dtype=np.float64)
    prec = np.asarray(constraint_precision, dtype=np.float64)
    mask = np.ones(len(nu), dtype=bool) if mergeable is None else np.asarray(mergeable, dtype=bool)
    if jac.shape != (len(nu), len(prec)) or mask.shape != nu.shape:
        raise ValueError(f"shapes: expected {nu.shape}, jacobian {jac.shape}, precision {prec.shape}, "
                         f"mergeable {mask.shape}")
    if not (nu > 0).all():
        raise ValueError("expected yields must be > 0 in every bin")
    cells = np.nonzero(mask)[0]
    if not 1 <= n_groups:
        raise ValueError(f"n_groups must be >= 1, got {n_groups}")
    fixed = ~mask
    base = jac[fixed].T @ (jac[fixed] / nu[fixed, None]) + np.diag(prec)
    g, n = jac[cells].copy(), nu[cells].copy()
    terms = g[:, :, None] * g[:, None, :] / n[:, None, None]
    info = base + terms.sum(0)
    if not np.isfinite(_objective(info, poi_weights)):
        raise SingularHessianError("the information of the unmerged bins is singular: nothing to keep by merging")
    members = [[int(c)] for c in cells]
    while len(members) > n_groups:
        a, b = np.triu_indices(len(members), 1)
        gab, nab = g[a] + g[b], n[a] + n[b]
        merged = info - terms[a] - terms[b] + gab[:, :, None] * gab[:, None, :] / nab[:, None, None]
        k = int(np.argmin(_objective(merged, poi_weights)))
        i, j = int(a[k]), int(b[k])
        info = merged[k]
        g[i], n[i] = gab[k], nab[k]
        terms[i] = g[i][:, None] * g[i][None, :] / n[i]
        members[i] += members[j]
        keep = np.arange(len(members)) != j
        g, n, terms = g[keep], n[keep], terms[keep]
        del members[j]
    labels = np.full(len(nu), -1, dtype=np.int64)
    for group, bins in enumerate(sorted(members, key=min)):
        labels[bins] = group
    return labels
