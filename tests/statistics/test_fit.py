"""Profile likelihood (MIGRAD + MINOS) against closed forms and the Hessian width."""

import numpy as np
import pytest
import torch

from lumin_inferno.exceptions import InvalidModelSpecError
from lumin_inferno.statistics import (Parameter, ShapeSystematic, TemplateModel, expected_poi_uncertainties,
                                      expected_poi_uncertainty, fit, profile_interval, profile_scan)
from tests.statistics.test_hessian import counting, rich_model, two_bin_free_background


def test_counting_profile_width_near_sqrt_s_plus_b():
    # large counts: the Poisson likelihood is near-Gaussian, MINOS half-width ~ sqrt(s+b)
    iv = profile_interval(counting(50, 1000))
    assert iv.best_fit == pytest.approx(50, abs=1e-3)
    assert iv.sigma == pytest.approx(np.sqrt(1050), rel=2e-3)
    assert iv.sigma_hesse == pytest.approx(np.sqrt(1050), rel=2e-3)


def test_counting_profile_exact_poisson_crossings():
    # one bin, n = s + b observed: the exact crossings solve  nu - n - n log(nu/n) = 1/2 with nu = s' + b
    s, b = 5.0, 10.0
    iv = profile_interval(counting(s, b))
    n = s + b
    for nu in (iv.lower + b, iv.upper + b):
        assert nu - n - n * np.log(nu / n) == pytest.approx(0.5, abs=1e-3)
    assert iv.upper - s > s - iv.lower  # Poisson intervals are asymmetric


def test_constrained_background_profile():
    iv = profile_interval(counting(50, 1000, 100.0))
    assert iv.sigma == pytest.approx(np.sqrt(1050 + 100**2), rel=1e-2)


def test_two_bin_sideband_profile():
    iv = profile_interval(two_bin_free_background())
    assert iv.sigma == pytest.approx(np.sqrt(1050), rel=5e-3)


def near_gaussian_model():
    """Large yields, small linear shape effect: the likelihood is close to Gaussian in every parameter."""
    sig = torch.tensor([0.05, 0.1, 0.2, 0.3, 0.35], dtype=torch.float64)
    bkg = torch.tensor([0.35, 0.3, 0.2, 0.1, 0.05], dtype=torch.float64)
    tilt = 0.02 * torch.tensor([-1.0, -0.5, 0.0, 0.5, 1.0], dtype=torch.float64)
    return TemplateModel(
        ["sig", "bkg"], torch.stack([sig, bkg]), {"sig": "s", "bkg": "b"},
        [Parameter("s", 5000.0), Parameter("b", 50000.0, constraint=2000.0), Parameter("r", 0.0, constraint=1.0)],
        poi="s", shape_systematics=[ShapeSystematic("r", "bkg", bkg + tilt, bkg - tilt)],
    )


def test_profile_width_matches_hessian_where_gaussian():
    m = near_gaussian_model()
    iv = profile_interval(m)
    sigma_fisher = expected_poi_uncertainty(m, method="hessian")
    assert iv.sigma == pytest.approx(sigma_fisher, rel=0.01)
    assert iv.sigma_hesse == pytest.approx(sigma_fisher, rel=0.01)


def test_expected_poi_uncertainty_methods_and_pois():
    # one name for σ(POI): "profile" is MINOS's half-width, "hessian" the Fisher width; per POI by name
    m = near_gaussian_model()
    assert expected_poi_uncertainty(m) == pytest.approx(profile_interval(m).sigma, rel=1e-12)
    assert expected_poi_uncertainty(m, method="hessian") == pytest.approx(expected_poi_uncertainty(m), rel=0.01)
    two = TemplateModel(
        ["a", "b"], torch.tensor([[0.8, 0.2], [0.1, 0.9]], dtype=torch.float64), {"a": "mu_a", "b": "mu_b"},
        [Parameter("mu_a", 100.0), Parameter("mu_b", 400.0)], poi=["mu_a", "mu_b"],
    )
    both = expected_poi_uncertainties(two, method="hessian")
    # closed form: ν_i = a_i μ_a + b_i μ_b, I = Σ_i (∂ν_i)(∂ν_i)ᵀ / ν_i at the nominal point
    a, b = np.array([0.8, 0.2]), np.array([0.1, 0.9])
    nu = 100 * a + 400 * b
    info = np.array([[np.sum(a * a / nu), np.sum(a * b / nu)], [np.sum(a * b / nu), np.sum(b * b / nu)]])
    cov = np.linalg.inv(info)
    assert both == pytest.approx({"mu_a": np.sqrt(cov[0, 0]), "mu_b": np.sqrt(cov[1, 1])}, rel=1e-10)
    assert expected_poi_uncertainty(two, poi="mu_b", method="hessian") == pytest.approx(np.sqrt(cov[1, 1]), rel=1e-10)
    with pytest.raises(InvalidModelSpecError, match="method"):
        expected_poi_uncertainty(m, method="minos")
    with pytest.raises(TypeError):  # poi and method are keyword-only: no positional mix-up of the two
        expected_poi_uncertainty(m, "hessian")


def test_scan_crosses_half_at_minos_points():
    m = rich_model()
    iv = profile_interval(m)
    dnll = profile_scan(m, [iv.lower, iv.best_fit, iv.upper])
    assert dnll == pytest.approx([0.5, 0.0, 0.5], abs=2e-3)
    grid = np.linspace(iv.lower, iv.upper, 9)
    curve = profile_scan(m, grid)
    assert np.all(np.diff(curve[:4]) < 0) and np.all(np.diff(curve[5:]) > 0)


def test_fit_recovers_injected_signal():
    m = rich_model()
    theta = m.nominal()
    theta[0] = 70.0
    data = m.expected(theta).detach()
    res = fit(m, data)
    assert res.valid
    assert res.values["mu_s"] == pytest.approx(70.0, rel=1e-3)


def test_scan_fallback_finds_the_minos_crossings():
    """The root-finding fallback used when MINOS reports an invalid edge gives MINOS's answer."""
    from lumin_inferno.statistics.fit import _crossing, _minuit, _profiled_dnll

    m = rich_model()
    iv = profile_interval(m)
    observed = m.asimov()
    best = _minuit(m, observed)
    best.migrad()
    dnll = _profiled_dnll(m, observed, best)
    assert _crossing(dnll, iv.best_fit, -iv.sigma_hesse) == pytest.approx(iv.lower, rel=1e-3)
    assert _crossing(dnll, iv.best_fit, iv.sigma_hesse) == pytest.approx(iv.upper, rel=1e-3)
