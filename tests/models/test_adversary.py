"""The adversaries' likelihoods against closed forms (no LUMIN involved)."""

import math

import numpy as np
import pytest
import torch

from lumin_inferno.exceptions import ConfigurationError
from lumin_inferno.models.adversary import (
    MIN_SIGMA,
    ClassifierAdversary,
    MixtureDensityNetwork,
    classifier_nll,
    marginal_nll_discrete,
    marginal_nll_gaussian_mixture,
    mdn_nll,
)


def _gauss_nll(z, mu, sigma):
    return 0.5 * ((z - mu) / sigma) ** 2 + math.log(sigma) + 0.5 * math.log(2 * math.pi)


def test_one_component_is_the_gaussian_nll():
    z = torch.tensor([-1.3, 0.0, 0.4, 2.5], dtype=torch.float64)
    mu, sigma = 0.7, 1.9
    n = len(z)
    got = mdn_nll(torch.zeros(n, 1, dtype=torch.float64), torch.full((n, 1), mu, dtype=torch.float64),
                  torch.full((n, 1), sigma, dtype=torch.float64), z)
    want = torch.tensor([_gauss_nll(float(v), mu, sigma) for v in z], dtype=torch.float64)
    assert torch.allclose(got, want, rtol=1e-12)


def test_mixture_and_diagonal_dimensions():
    z = torch.tensor([[0.3, -0.2], [1.5, 2.0]], dtype=torch.float64)
    pi = torch.tensor([0.2, 0.8], dtype=torch.float64)
    mu = torch.tensor([[-1.0, 0.5], [1.0, 1.0]], dtype=torch.float64)  # [K, d]
    sig = torch.tensor([[0.5, 2.0], [1.2, 0.7]], dtype=torch.float64)
    got = mdn_nll(pi.log().expand(2, 2), mu.expand(2, 2, 2), sig.expand(2, 2, 2), z)
    for i in range(2):
        dens = sum(
            float(pi[k]) * math.prod(math.exp(-_gauss_nll(float(z[i, j]), float(mu[k, j]), float(sig[k, j])))
                                     for j in range(2))
            for k in range(2)
        )
        assert float(got[i]) == pytest.approx(-math.log(dens), rel=1e-12)


def test_module_matches_function_and_is_a_density():
    torch.manual_seed(0)
    mdn = MixtureDensityNetwork(n_in=1, n_targets=1, n_components=3, width=8).double()
    s = torch.full((2001, 1), 0.3, dtype=torch.float64)
    zs = torch.linspace(-30, 30, 2001, dtype=torch.float64)
    with torch.no_grad():
        log_pi, mu, sigma = mdn(s)
        nll = mdn.nll(s, zs)
    assert torch.allclose(log_pi.exp().sum(1), torch.ones(2001, dtype=torch.float64))
    assert (sigma >= MIN_SIGMA).all()
    assert torch.allclose(nll, mdn_nll(log_pi, mu, sigma, zs))
    area = torch.trapezoid(torch.exp(-nll), zs)  # p(z | s) integrates to 1
    assert float(area) == pytest.approx(1.0, abs=1e-3)


def test_classifier_adversary_nll_is_cross_entropy():
    logits = torch.tensor([[2.0, 0.0, -1.0], [0.1, 0.2, 0.3]])
    labels = torch.tensor([0.0, 2.0])
    p = torch.softmax(logits, 1)
    want = -torch.log(torch.stack([p[0, 0], p[1, 2]]))
    assert torch.allclose(classifier_nll(logits, labels), want)
    adv = ClassifierAdversary(n_in=1, n_classes=3)
    assert adv(torch.rand(5, 1)).shape == (5, 3)
    with pytest.raises(ConfigurationError, match=">= 2 classes"):
        ClassifierAdversary(n_in=1, n_classes=1)


def test_marginal_references():
    rng = np.random.default_rng(1)
    z = rng.normal(0.5, 2.0, 20000)
    gauss_entropy = 0.5 * math.log(2 * math.pi * math.e * 4.0)
    assert marginal_nll_gaussian_mixture(z, n_components=1) == pytest.approx(gauss_entropy, abs=0.02)
    assert marginal_nll_gaussian_mixture(z, n_components=5) == pytest.approx(gauss_entropy, abs=0.02)
    bimodal = np.concatenate([rng.normal(-5, 0.5, 5000), rng.normal(5, 0.5, 5000)])
    two = 0.5 * math.log(2 * math.pi * math.e * 0.25) + math.log(2)  # two far-apart equal components
    assert marginal_nll_gaussian_mixture(bimodal, n_components=2) == pytest.approx(two, abs=0.03)
    labels = np.array([0, 0, 1, 1, 1, 1, 2, 2])
    p = np.array([2, 4, 2]) / 8
    assert marginal_nll_discrete(labels) == pytest.approx(float(-(p * np.log(p)).sum()))
    w = np.where(labels == 1, 0.5, 1.0)  # weights make the three classes equally likely
    assert marginal_nll_discrete(labels, w) == pytest.approx(math.log(3))
