"""objective_scale: each objective as one number in POI units, against closed forms."""

import math

import numpy as np
import pytest
import torch

from lumin_inferno.statistics import Parameter, TemplateModel, objective_scale
from lumin_inferno.statistics.search import discovery_significance

D = torch.float64


def one_bin(s: float, b: float) -> TemplateModel:
    return TemplateModel(["sig", "bkg"], torch.ones(2, 1, dtype=D), {"sig": s, "bkg": b},
                         [Parameter("mu", 1.0, bounds=(-5.0, 50.0))], poi="mu", factors={"sig": ["mu"]})


def two_bins_two_pois() -> TemplateModel:
    """Two signals in two bins over a background: Fisher information in closed form, I_jk = Σ_b s_j,b s_k,b / ν_b."""
    t = torch.tensor([[0.8, 0.2], [0.3, 0.7], [0.5, 0.5]], dtype=D)
    return TemplateModel(["a", "b", "bkg"], t, {"a": 20.0, "b": 30.0, "bkg": 100.0},
                         [Parameter("mu_a", 1.0), Parameter("mu_b", 1.0)], poi=["mu_a", "mu_b"],
                         factors={"a": ["mu_a"], "b": ["mu_b"]})


def test_variance_is_sigma_of_a_counting_experiment():
    # one bin: σ(μ) = √(s + b) / s
    assert objective_scale(one_bin(50.0, 1000.0), [0], "variance") == pytest.approx(math.sqrt(1050.0) / 50.0)


def test_generalised_variance_is_the_geometric_mean_sigma():
    m = two_bins_two_pois()
    s = np.array([[16.0, 4.0], [9.0, 21.0]])  # expected signal events per bin (rows: POIs)
    nu = np.array([20 * 0.8 + 30 * 0.3 + 50, 20 * 0.2 + 30 * 0.7 + 50])
    cov = np.linalg.inv((s / nu) @ s.T)
    assert objective_scale(m, [0, 1], "generalised_variance") == pytest.approx(np.linalg.det(cov) ** 0.25, rel=1e-10)
    assert objective_scale(m, [0, 1], "weighted_variance") == pytest.approx(math.sqrt(np.trace(cov)), rel=1e-10)
    assert objective_scale(m, [1], "variance") == pytest.approx(math.sqrt(cov[1, 1]), rel=1e-10)


def test_discovery_is_one_over_z0():
    m = one_bin(10.0, 100.0)
    assert objective_scale(m, [0], "discovery") == pytest.approx(1.0 / float(discovery_significance(m)), rel=1e-10)
