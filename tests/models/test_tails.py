"""Summary tails: the multi-class (argmax class × score bins) relaxation against its hard binning."""

import numpy as np
import pytest
import torch

from lumin_inferno.evaluation import class_score_bins, class_score_edges
from lumin_inferno.models import ClassScoreTail, soft_class_score_bins
from lumin_inferno.exceptions import ConfigurationError, TargetShapeError


def _logits(n=4000, c=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    return 2.0 * torch.randn(n, c, generator=g, dtype=torch.float64)


def test_edges_split_each_class_into_equal_yields():
    p = torch.softmax(_logits(), -1).numpy()
    w = np.random.default_rng(1).uniform(0.5, 1.5, len(p))
    edges = class_score_edges(p, 4, weights=w)
    assert edges.shape == (3, 5) and np.all(edges[:, 0] == 0) and np.all(edges[:, -1] == 1)
    assert np.all(np.diff(edges, axis=1) >= 0)
    bins = class_score_bins(p, edges)
    yields = np.bincount(bins, weights=w, minlength=12).reshape(3, 4)
    per_class = np.array([w[p.argmax(1) == c].sum() for c in range(3)])
    np.testing.assert_allclose(yields, np.repeat(per_class[:, None] / 4, 4, axis=1), rtol=0.02)
    # the index is class * n_score_bins + score bin
    assert np.all(bins // 4 == p.argmax(1))


def test_soft_bins_sum_to_one_and_tend_to_the_hard_binning():
    z = _logits()
    p = torch.softmax(z, -1).numpy()
    edges = torch.as_tensor(class_score_edges(p, 3))
    soft = soft_class_score_bins(z, edges, temperature=1e-3, score_temperature=1e-6)
    assert soft.shape == (len(z), 9)
    torch.testing.assert_close(soft.sum(-1), torch.ones(len(z), dtype=torch.float64))
    hard = class_score_bins(p, edges.numpy())
    # away from the edges (a few events sit exactly on a quantile edge) the soft bin is the hard bin
    score = p.max(1)
    top2 = np.sort(z.numpy(), axis=1)[:, -2:]
    far = (np.min(np.abs(score[:, None] - edges.numpy()[p.argmax(1)]), axis=1) > 1e-4) & (
        top2[:, 1] - top2[:, 0] > 0.02)  # and not a near tie between two classes
    assert far.mean() > 0.99
    np.testing.assert_array_equal(soft.argmax(-1).numpy()[far], hard[far])
    assert soft.max(-1).values.numpy()[far].min() > 0.99


def test_soft_bins_are_differentiable():
    z = _logits(n=6).requires_grad_(True)
    edges = torch.tensor([[0.0, 0.5, 0.7, 1.0]] * 3, dtype=torch.float64)
    assert torch.autograd.gradcheck(lambda t: soft_class_score_bins(t, edges, 0.3, 0.05), (z,))


def test_tail_checks_its_shape():
    with pytest.raises(ConfigurationError, match="n_classes × score bins"):
        ClassScoreTail(8, 10, "classification", n_classes=3)
    with pytest.raises(ConfigurationError, match="edges must be finite, non-decreasing"):
        ClassScoreTail(8, 6, "classification", n_classes=3, edges=[[0, 0.5, 1.0]] * 2)
    tail = ClassScoreTail(8, 6, "classification", n_classes=3)
    out = tail(torch.randn(5, 8))
    assert out.shape == (5, 6) and torch.allclose(out.sum(-1), torch.ones(5))
    with pytest.raises(TargetShapeError):
        class_score_bins(np.ones((4, 3)) / 3, np.zeros((2, 4)))
