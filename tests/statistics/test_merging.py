"""Greedy merging of bins (statistics.merging): closed forms without nuisances, brute force over every partition of
a small model with nuisances, and the information of bins that are not to be merged kept."""

import itertools

import numpy as np
import pytest
import torch

from lumin_inferno.exceptions import SingularHessianError
from lumin_inferno.statistics.hessian import fisher_from_jacobian
from lumin_inferno.statistics.merging import merge_bins


def _variance(nu, jac, prec, labels, poi=0):
    """Var(POI) of the model whose bins are summed by ``labels`` (-1: kept as they are), from the project's Fisher
    information of the merged yields and derivatives."""
    groups = [np.nonzero(labels == g)[0] for g in range(labels.max() + 1)] + [[i] for i in np.nonzero(labels < 0)[0]]
    n = torch.tensor([nu[g].sum() for g in groups])
    j = torch.tensor(np.stack([jac[g].sum(0) for g in groups]))
    info = fisher_from_jacobian(n, j, torch.tensor(prec))
    return float(torch.linalg.inv(info)[poi, poi])


def _partitions(items, k):
    """Every partition of ``items`` into ``k`` non-empty groups, as label arrays."""
    n = len(items)
    for labels in itertools.product(range(k), repeat=n):
        if labels[0] == 0 and set(labels) == set(range(k)) and all(
                labels.index(g) < labels.index(g + 1) for g in range(k - 1)):
            yield np.array(labels)


def test_bins_of_equal_signal_to_background_merge_without_loss():
    """Without nuisances Var(μ) = 1/Σ s²/(s+b) (μ scales s): bins of equal s/b merge at no cost, so five bins of three
    ratios end in exactly those three groups, with the variance of all five bins."""
    s = np.array([2.0, 5.0, 1.0, 6.0, 10.0])
    b = np.array([20.0, 10.0, 100.0, 60.0, 20.0])  # s/b: 0.1, 0.5, 0.01, 0.1, 0.5
    nu, jac = s + b, s[:, None]
    labels = merge_bins(nu, jac, np.zeros(1), 3, {0: 1.0})
    assert sorted(map(sorted, ([i for i in range(5) if labels[i] == g] for g in range(3)))) == [[0, 3], [1, 4], [2]]
    assert _variance(nu, jac, np.zeros(1), labels) == pytest.approx(1.0 / np.sum(s**2 / (s + b)), rel=1e-12)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_greedy_merge_against_every_partition(seed):
    """Six bins, μ, a constrained shape nuisance and a free background factor, merged into three groups: the result
    is a valid partition, its variance is the one the project's Fisher information gives for it, it is no better
    than the best of all 90 partitions and no worse than merging by a random partition."""
    rng = np.random.default_rng(seed)
    s, b = rng.uniform(1, 10, 6), rng.uniform(10, 100, 6)
    shape = rng.normal(0, 0.1, 6) * b
    shape -= shape.mean()
    nu = s + b
    jac = np.stack([s, shape, b], axis=1)  # ∂ν/∂(μ, α, k_b)
    prec = np.array([0.0, 1.0, 0.0])
    labels = merge_bins(nu, jac, prec, 3, {0: 1.0})
    assert sorted(set(labels.tolist())) == [0, 1, 2]
    greedy = _variance(nu, jac, prec, labels)
    every = [_variance(nu, jac, prec, p) for p in _partitions(range(6), 3)]
    assert len(every) == 90
    assert min(every) <= greedy + 1e-12
    assert greedy <= np.median(every)
    assert greedy >= _variance(nu, jac, prec, np.arange(6)) - 1e-12  # merging never gains information


@pytest.mark.parametrize("seed", [3, 4])
def test_rank_one_update_picks_the_merges_a_direct_search_picks(seed):
    """Twelve bins, two POIs weighted 1 and 0.5, two constrained shape nuisances, a free factor, merged to four: each
    greedy step equals the one found by inverting the project's Fisher information of every candidate pair."""
    rng = np.random.default_rng(seed)
    nu = rng.uniform(20, 200, 12)
    jac = np.stack([rng.uniform(0, 10, 12), rng.uniform(0, 10, 12), rng.normal(0, 5, 12), rng.normal(0, 5, 12),
                    nu - 5], axis=1)
    prec = np.array([0.0, 0.0, 1.0, 1.0, 0.0])
    weights = {0: 1.0, 1: 0.5}
    got = merge_bins(nu, jac, prec, 4, weights)

    groups = [[i] for i in range(12)]
    while len(groups) > 4:
        best = None
        for a, b in itertools.combinations(range(len(groups)), 2):
            trial = [g for k, g in enumerate(groups) if k not in (a, b)] + [groups[a] + groups[b]]
            n = torch.tensor([nu[g].sum() for g in trial])
            j = torch.tensor(np.stack([jac[g].sum(0) for g in trial]))
            cov = torch.linalg.inv(fisher_from_jacobian(n, j, torch.tensor(prec)))
            value = float(sum(w * cov[i, i] for i, w in weights.items()))
            if best is None or value < best[0]:
                best = (value, a, b)
        _, a, b = best
        groups = [g for k, g in enumerate(groups) if k not in (a, b)] + [groups[a] + groups[b]]
    assert sorted(map(sorted, groups)) == sorted(map(sorted, ([i for i in range(12) if got[i] == g]
                                                             for g in range(4))))


def test_fixed_bins_are_kept_and_their_information_counts():
    """A control region that measures the background factor: its bins are never merged (label -1) and its
    information counts in the criterion: the merge of the signal region is the best of all seven partitions with it."""
    s = np.array([1.0, 4.0, 9.0, 2.0, 0.0, 0.0])
    b = np.array([50.0, 40.0, 30.0, 80.0, 400.0, 300.0])
    shape = np.array([5.0, -3.0, 1.0, -3.0, 0.0, 0.0])
    nu, jac, prec = s + b, np.stack([s, shape, b], axis=1), np.array([0.0, 1.0, 0.0])
    mergeable = np.array([True] * 4 + [False] * 2)
    labels = merge_bins(nu, jac, prec, 2, {0: 1.0}, mergeable)
    assert (labels[4:] == -1).all() and sorted(set(labels[:4].tolist())) == [0, 1]
    best = min(_variance(nu, jac, prec, np.concatenate([p, [-1, -1]])) for p in _partitions(range(4), 2))
    assert _variance(nu, jac, prec, labels) == pytest.approx(best, rel=1e-9)


def test_singular_information_is_named():
    nu = np.array([10.0, 10.0, 10.0])
    jac = np.stack([nu, nu], axis=1)  # μ and a free factor with the same effect everywhere: not separable
    with pytest.raises(SingularHessianError, match="unmerged bins is singular"):
        merge_bins(nu, jac, np.zeros(2), 2, {0: 1.0})
    # three free parameters need three bins: no merge to two keeps the information invertible
    nu = np.array([30.0, 40.0, 50.0, 60.0])
    jac = np.stack([[1.0, 9.0, 2.0, 7.0], [8.0, 1.0, 6.0, 2.0], nu], axis=1)
    with pytest.raises(SingularHessianError, match="every merge of the remaining 3 bins"):
        merge_bins(nu, jac, np.zeros(3), 2, {0: 1.0, 1: 1.0})
    with pytest.raises(ValueError, match="between 1 and the 4 mergeable bins"):
        merge_bins(nu, jac, np.zeros(3), 5, {0: 1.0})
    with pytest.raises(ValueError, match="> 0"):
        merge_bins(np.array([1.0, 0.0]), np.ones((2, 1)), np.zeros(1), 1, {0: 1.0})
