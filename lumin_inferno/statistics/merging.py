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


def merge_bins(
    expected: np.ndarray,
    jacobian: np.ndarray,
    constraint_precision: np.ndarray,
    n_groups: int,
    poi_weights: Mapping[int, float],
    mergeable: Optional[np.ndarray] = None,
) -> np.ndarray:
    """Greedy merge of the ``mergeable`` bins into ``n_groups`` groups that keeps Σᵢ wᵢ Var(θᵢ) smallest.

    Merging bins a and b lowers the information by a rank-one term, I' = I − c d dᵀ with c = νₐν_b/(νₐ + ν_b) and
    d = gₐ/νₐ − g_b/ν_b, so every candidate's variances follow from the current covariance C = I⁻¹ by
    Sherman–Morrison, Var'ᵢ = Cᵢᵢ + c (Cd)ᵢ² / (1 − c dᵀCd) (I' stays positive definite iff 1 − c dᵀCd > 0):
    O(n_par²) per candidate pair.

    Args:
        expected: ν ``[n_bins]`` expected events per bin at the Asimov point (> 0).
        jacobian: ∂ν/∂θ ``[n_bins, n_par]`` there.
        constraint_precision: 1/σ² of each parameter's constraint ``[n_par]`` (0: unconstrained).
        n_groups: how many groups the mergeable bins end in (at most their number).
        poi_weights: parameter index → weight wᵢ of its variance in the objective (e.g. ``{poi_index: 1.0}``).
        mergeable: ``[n_bins]`` bool, the bins that may be merged (default all); the others (e.g. control regions)
            keep their information and stay as they are.

    Returns:
        ``[n_bins]`` int: the group in [0, n_groups) of each mergeable bin (groups numbered by their first bin),
        -1 for the others.

    Raises :class:`~lumin_inferno.exceptions.SingularHessianError` when the information of all bins is singular
    (nothing to keep), or when every remaining merge would make it singular before ``n_groups`` is reached.
    """
    nu = np.asarray(expected, dtype=np.float64)
    jac = np.asarray(jacobian, dtype=np.float64)
    prec = np.asarray(constraint_precision, dtype=np.float64)
    mask = np.ones(len(nu), dtype=bool) if mergeable is None else np.asarray(mergeable, dtype=bool)
    if jac.shape != (len(nu), len(prec)) or mask.shape != nu.shape:
        raise ValueError(f"shapes: expected {nu.shape}, jacobian {jac.shape}, precision {prec.shape}, "
                         f"mergeable {mask.shape}")
    if not (nu > 0).all() or not np.isfinite(jac).all():
        raise ValueError("expected yields must be > 0 and derivatives finite in every bin")
    cells = np.nonzero(mask)[0]
    if not 1 <= n_groups <= len(cells):
        raise ValueError(f"n_groups must be between 1 and the {len(cells)} mergeable bins, got {n_groups}")
    pois = np.array(list(poi_weights), dtype=np.int64)
    weights = np.array([float(poi_weights[i]) for i in pois])
    info = jac.T @ (jac / nu[:, None]) + np.diag(prec)
    g, n = jac[cells].copy(), nu[cells].copy()
    members = [[int(c)] for c in cells]
    if not np.all(np.linalg.eigvalsh(info) > 0):
        raise SingularHessianError("the information of the unmerged bins is singular: nothing to keep by merging")
    while len(members) > n_groups:
        cov = np.linalg.inv(info)
        a, b = np.triu_indices(len(members), 1)
        c = n[a] * n[b] / (n[a] + n[b])
        d = g[a] / n[a, None] - g[b] / n[b, None]
        cd = d @ cov
        denominator = 1.0 - c * np.einsum("ij,ij->i", d, cd)
        with np.errstate(divide="ignore", invalid="ignore"):
            increase = c * (cd[:, pois] ** 2 @ weights) / denominator
        increase = np.where((denominator > 1e-10) & np.isfinite(increase), increase, np.inf)
        k = int(np.argmin(increase))
        if not np.isfinite(increase[k]):
            raise SingularHessianError(f"every merge of the remaining {len(members)} bins makes the information "
                                       f"singular; ask for more than {n_groups} groups")
        i, j = int(a[k]), int(b[k])
        info = info - c[k] * np.outer(d[k], d[k])
        g[i], n[i] = g[i] + g[j], n[i] + n[j]
        members[i] += members[j]
        keep = np.arange(len(members)) != j
        g, n = g[keep], n[keep]
        del members[j]
    labels = np.full(len(nu), -1, dtype=np.int64)
    for group, bins in enumerate(sorted(members, key=min)):
        labels[bins] = group
    return labels
