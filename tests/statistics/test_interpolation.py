import numpy as np
import pytest
import torch

from lumin_inferno.statistics import code1, code4, code4p

D = torch.float64


def _templates():
    nom = torch.tensor([10.0, 20.0, 30.0], dtype=D)
    up = torch.tensor([12.0, 19.0, 33.0], dtype=D)
    down = torch.tensor([9.0, 22.0, 26.0], dtype=D)
    return nom, up, down


def test_code4p_hits_templates_at_0_and_pm1():
    nom, up, down = _templates()
    for a, target in ((0.0, nom), (1.0, up), (-1.0, down)):
        assert torch.allclose(nom + code4p(torch.tensor(a, dtype=D), nom, up, down), target)


def test_code4p_slope_at_zero_is_central_difference():
    nom, up, down = _templates()
    slope = torch.func.jacfwd(lambda a: code4p(a, nom, up, down))(torch.tensor(0.0, dtype=D))
    assert torch.allclose(slope, 0.5 * (up - down))


def test_code4p_c1_at_pm1():
    nom, up, down = _templates()
    d = torch.func.jacfwd(lambda a: code4p(a, nom, up, down))
    eps = 1e-7
    for edge in (1.0, -1.0):
        inside = d(torch.tensor(edge - eps * (1 if edge > 0 else -1), dtype=D))
        outside = d(torch.tensor(edge + eps * (1 if edge > 0 else -1), dtype=D))
        assert torch.allclose(inside, outside, atol=1e-5)
        # and continuous in value
        vi = code4p(torch.tensor(edge - 1e-9 * edge, dtype=D), nom, up, down)
        vo = code4p(torch.tensor(edge + 1e-9 * edge, dtype=D), nom, up, down)
        assert torch.allclose(vi, vo, atol=1e-6)


def test_code4p_linear_for_symmetric_shifts():
    nom = torch.tensor([5.0, 5.0], dtype=D)
    delta = torch.tensor([1.0, -0.5], dtype=D)
    for a in (-2.5, -0.3, 0.7, 3.0):
        assert torch.allclose(code4p(torch.tensor(a, dtype=D), nom, nom + delta, nom - delta), a * delta)


def test_code4_values_and_smoothness():
    up, down = torch.tensor(1.2, dtype=D), torch.tensor(0.85, dtype=D)
    assert torch.allclose(code4(torch.tensor(0.0, dtype=D), up, down), torch.tensor(1.0, dtype=D))
    assert torch.allclose(code4(torch.tensor(1.0, dtype=D), up, down), up)
    assert torch.allclose(code4(torch.tensor(-1.0, dtype=D), up, down), down)
    assert torch.allclose(code4(torch.tensor(2.0, dtype=D), up, down), up**2)
    assert torch.allclose(code4(torch.tensor(-2.0, dtype=D), up, down), down**2)
    d = torch.func.grad(lambda a: code4(a, up, down))
    for edge in (1.0, -1.0):
        s = 1 if edge > 0 else -1
        assert abs(float(d(torch.tensor(edge - s * 1e-7, dtype=D))) - float(d(torch.tensor(edge + s * 1e-7, dtype=D)))) < 1e-5
    # always positive, even far out
    assert (code4(torch.linspace(-6, 6, 121, dtype=D), up, down) > 0).all()


def test_analytic_slopes_equal_autodiff():
    from lumin_inferno.statistics.interpolation import code4_slope, code4p_slope

    nom, up, down = _templates()
    for a in (-2.0, -1.0, -0.4, 0.0, 0.3, 1.0, 1.5):
        alpha = torch.tensor(a, dtype=D)
        auto = torch.func.jacfwd(lambda x: code4p(x, nom, up, down))(alpha)
        assert torch.allclose(code4p_slope(alpha, nom, up, down), auto)
        ku, kd = torch.tensor(1.2, dtype=D), torch.tensor(0.85, dtype=D)
        assert torch.allclose(code4_slope(alpha, ku, kd), torch.func.grad(lambda x: code4(x, ku, kd))(alpha))


@pytest.mark.parametrize("up, down", [([12.0, 19.0, 36.0], [9.0, 22.0, 25.0]), ([11.0, 21.0, 31.0], [9.0, 19.0, 29.0]),
                                      ([10.5, 20.0, 60.0], [2.0, 20.0, 29.0])])
def test_code4p_equals_pyhf(up, down):
    pyhf = pytest.importorskip("pyhf")
    pyhf.set_backend("numpy")
    nominal = [10.0, 20.0, 30.0]
    alphas = np.array([-3.0, -1.5, -1.0, -0.4, 0.0, 0.3, 1.0, 1.7, 4.0])
    theirs = np.asarray(pyhf.interpolators.code4p([[[down, nominal, up]]])(np.array([alphas])))[0, 0]
    t = lambda v: torch.tensor(v, dtype=torch.float64)  # noqa: E731
    ours = torch.stack([code4p(t(a), t(nominal), t(up), t(down)) for a in alphas]).numpy()
    np.testing.assert_allclose(ours, theirs, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("kappa_up, kappa_down", [(1.1, 0.9), (1.3, 0.95), (0.9, 1.2)])
def test_code4_and_code1_equal_pyhf(kappa_up, kappa_down):
    pyhf = pytest.importorskip("pyhf")
    pyhf.set_backend("numpy")
    alphas = np.array([-3.0, -1.5, -1.0, -0.4, 0.0, 0.3, 1.0, 1.7, 4.0])
    factors = [[[[kappa_down], [1.0], [kappa_up]]]]
    a = torch.tensor(alphas, dtype=torch.float64)
    for ours, interpolator in ((code4, pyhf.interpolators.code4), (code1, pyhf.interpolators.code1)):
        theirs = np.asarray(interpolator(factors)(np.array([alphas])))[0, 0, :, 0]
        np.testing.assert_allclose(ours(a, kappa_up, kappa_down).numpy(), theirs, rtol=1e-12)
