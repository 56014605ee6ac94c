"""Independence metrics against known cases (no LUMIN involved)."""

import numpy as np
import pytest
from scipy.stats import ks_2samp

from lumin_inferno.exceptions import ConfigurationError, TargetShapeError
from lumin_inferno.evaluation.independence import (
    compare_at_nuisance,
    distance_correlation,
    js_divergence,
    ks_statistic,
    plot_output_vs_nuisance,
)


def test_distance_correlation_limits():
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=3000), rng.normal(size=3000)
    assert distance_correlation(x, y) < 0.06  # independent: ~0 up to the V-statistic's O(1/sqrt(n)) bias
    assert distance_correlation(x, -3.0 * x + 2.0) == pytest.approx(1.0, abs=1e-9)  # linear
    assert 0.3 < distance_correlation(x, x**2) < 0.8  # dependent although uncorrelated
    assert abs(np.corrcoef(x, x**2)[0, 1]) < 0.1
    xy = np.column_stack([x, y])  # multivariate, and the subsample path (max_n)
    assert distance_correlation(xy, 2.0 * xy, max_n=500) == pytest.approx(1.0, abs=1e-9)
    assert distance_correlation(x, np.ones_like(x)) == 0.0
    with pytest.raises(TargetShapeError, match="paired samples"):
        distance_correlation(x, y[:10])


def test_js_divergence():
    rng = np.random.default_rng(1)
    a, b = rng.uniform(size=20000), rng.uniform(size=20000)
    assert js_divergence(a, b) < 2e-3
    assert js_divergence(a, a) == 0.0
    assert js_divergence(a * 0.5, 0.5 + a * 0.5) == pytest.approx(1.0)  # disjoint supports: 1 bit
    # closed form on two bins: P = (1, 0), Q = (1/2, 1/2), M = (3/4, 1/4); JS = ½ KL(P‖M) + ½ KL(Q‖M)
    p_events, q_events = np.full(100, 0.25), np.concatenate([np.full(50, 0.25), np.full(50, 0.75)])
    m = np.array([0.75, 0.25])
    want = 0.5 * np.log2(1 / m[0]) + 0.5 * (0.5 * np.log2(0.5 / m[0]) + 0.5 * np.log2(0.5 / m[1]))
    assert js_divergence(p_events, q_events, bins=2) == pytest.approx(want)
    assert js_divergence(a, b, weights_a=np.ones_like(a) * 3) == pytest.approx(js_divergence(a, b))


def test_ks_statistic():
    rng = np.random.default_rng(2)
    a, b = rng.normal(size=1000), rng.normal(0.3, 1.0, size=700)
    assert ks_statistic(a, b) == pytest.approx(ks_2samp(a, b).statistic)
    assert ks_statistic(a, a) == 0.0
    assert ks_statistic(a, a + 100) == 1.0
    # integer weights are repetitions
    w = rng.integers(1, 4, size=len(a))
    assert ks_statistic(a, b, weights_a=w) == pytest.approx(ks_2samp(np.repeat(a, w), b).statistic)


def test_compare_and_plot(tmp_path):
    rng = np.random.default_rng(3)
    moving = {z: 1 / (1 + np.exp(-(rng.normal(size=5000) + z))) for z in (-1.0, 0.0, 1.0)}
    still = {z: 1 / (1 + np.exp(-rng.normal(size=5000))) for z in (-1.0, 0.0, 1.0)}
    cm, cs = compare_at_nuisance(moving), compare_at_nuisance(still)
    assert set(cm) == {-1.0, 1.0}
    for z in (-1.0, 1.0):
        assert cm[z]["js"] > 10 * cs[z]["js"] and cm[z]["ks"] > 5 * cs[z]["ks"]
    with pytest.raises(ConfigurationError, match="reference"):
        compare_at_nuisance({1.0: moving[1.0]})
    out = plot_output_vs_nuisance({"moving": moving, "still": still}, tmp_path / "plots" / "f.png")
    assert out.exists() and out.stat().st_size > 1000
