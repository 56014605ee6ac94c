"""multi_process_model: several processes, shifted templates in physical units, correlated nuisances, code4/code4p.

The interpolation codes themselves are tested in test_interpolation.py; here: the built likelihood reproduces the
nominal / shifted templates at θ⁰ and θ⁰ ± step, is C¹ at 0 and ±1σ in every nuisance, and applies symmetric and
asymmetric normalisation factors."""

import pytest
import torch

from lumin_inferno import InvalidModelSpec, Parameter
from lumin_inferno.statistics import fisher_information, nll_hessian
from lumin_inferno.statistics.builders import ProcessSpec, multi_process_model, norm_factors

D = torch.float64
T = lambda *v: torch.tensor(v, dtype=D)  # noqa: E731

PROCESSES = [
    ProcessSpec("signal", "s"),
    ProcessSpec("bkg_a", 800.0, shape_systematics=["jes"], norm_systematics={"lumi": 1.05, "xs_a": 1.1}),
    ProcessSpec("bkg_b", "b2", shape_systematics=["jes", "pdf"], norm_systematics={"lumi": 1.05, "xs_b": (1.2, 0.9)}),
]
TEMPLATES = {"signal": T(0.6, 0.3, 0.1), "bkg_a": T(0.2, 0.3, 0.5), "bkg_b": T(0.1, 0.5, 0.4)}
SHIFTED = {
    ("bkg_a", "jes"): (T(0.25, 0.3, 0.45), T(0.17, 0.31, 0.52)),
    ("bkg_b", "jes"): (T(0.12, 0.49, 0.39), T(0.09, 0.5, 0.41)),
    ("bkg_b", "pdf"): (T(0.11, 0.52, 0.42), T(0.1, 0.48, 0.4)),  # a weight systematic: rate changes too
}
PARAMS = [Parameter("b2", 300.0, constraint=30.0), Parameter("jes", 1.0, constraint=0.5)]
STEPS = {"jes": 0.25}


def _model():
    return multi_process_model(PROCESSES, TEMPLATES, SHIFTED, Parameter("s", 50.0), PARAMS, STEPS, floor=0.0)


def _theta(model, **values):
    th = model.nominal()
    for k, v in values.items():
        th[model.index(k)] = v
    return th


def test_parameters_and_correlation_by_name():
    m = _model()
    # POI, yield parameters, then each nuisance once (jes and lumi shared by two processes)
    assert m.parameter_names == ["s", "b2", "jes", "pdf", "lumi", "xs_a", "xs_b"]
    assert [p.constraint for p in m.parameters[3:]] == [1.0, 1.0, 1.0, 1.0]  # default unit Gaussian
    jac = m.jacobian(m.nominal())
    # jes moves both backgrounds: its column is the sum of both processes' central differences
    expect = 800 * 0.5 * (SHIFTED[("bkg_a", "jes")][0] - SHIFTED[("bkg_a", "jes")][1]) / 0.25
    expect = expect + 300 * 0.5 * (SHIFTED[("bkg_b", "jes")][0] - SHIFTED[("bkg_b", "jes")][1]) / 0.25
    assert torch.allclose(jac[:, m.index("jes")], expect)


def test_templates_reproduced_at_nominal_and_pm_one_step():
    m = _model()
    s, a, b = 50 * TEMPLATES["signal"], 800 * TEMPLATES["bkg_a"], 300 * TEMPLATES["bkg_b"]
    assert torch.allclose(m.expected(m.nominal()), s + a + b)
    for sign, i in ((+1, 0), (-1, 1)):
        nu = m.expected(_theta(m, jes=1.0 + sign * 0.25))  # physical units: nominal 1.0, step 0.25
        assert torch.allclose(nu, s + 800 * SHIFTED[("bkg_a", "jes")][i] + 300 * SHIFTED[("bkg_b", "jes")][i])
        nu = m.expected(_theta(m, pdf=float(sign)))
        assert torch.allclose(nu, s + a + 300 * SHIFTED[("bkg_b", "pdf")][i])


def test_symmetric_and_asymmetric_normalisations():
    assert norm_factors(1.1) == pytest.approx((1.1, 1 / 1.1))  # log-normal: x1/kappa at -1 sigma
    assert norm_factors((1.2, 0.9)) == (1.2, 0.9)
    m = _model()
    y0 = m.process_yields(m.nominal())
    for name, proc, up, down in (("xs_a", 1, 1.1, 1 / 1.1), ("xs_b", 2, 1.2, 0.9)):
        assert float(m.process_yields(_theta(m, **{name: 1.0}))[proc] / y0[proc]) == pytest.approx(up)
        assert float(m.process_yields(_theta(m, **{name: -1.0}))[proc] / y0[proc]) == pytest.approx(down)
    # a shared normalisation scales both processes, never goes negative far out
    y = m.process_yields(_theta(m, lumi=-8.0))
    assert float(y[1] / y0[1]) == pytest.approx(float(y[2] / y0[2])) and (y > 0).all()
    with pytest.raises(InvalidModelSpec, match="> 0"):
        norm_factors((1.1, -0.9))


@pytest.mark.parametrize("name,nominal,step", [("jes", 1.0, 0.25), ("pdf", 0.0, 1.0), ("xs_b", 0.0, 1.0)])
def test_c1_at_zero_and_pm_one_sigma(name, nominal, step):
    """ν(θ) is continuous with continuous first derivative at the nominal point and at ±1σ (the knots of the
    piecewise codes): left and right derivatives agree."""
    m = _model()
    i = m.index(name)
    eps = 1e-6 * step
    for z in (-1.0, 0.0, 1.0):
        at = nominal + z * step
        lo, hi = m.jacobian(_theta(m, **{name: at - eps}))[:, i], m.jacobian(_theta(m, **{name: at + eps}))[:, i]
        assert torch.allclose(lo, hi, rtol=1e-4, atol=1e-6)
        v_lo, v_hi = m.expected(_theta(m, **{name: at - eps})), m.expected(_theta(m, **{name: at + eps}))
        assert torch.allclose(v_lo, v_hi, atol=1e-4)


def test_fisher_equals_hessian_and_spec_errors():
    m = _model()
    assert torch.allclose(fisher_information(m), nll_hessian(m), rtol=1e-8, atol=1e-8)
    poi = Parameter("s", 50.0)
    with pytest.raises(InvalidModelSpec, match="unknown parameter 'b2'"):
        multi_process_model(PROCESSES, TEMPLATES, SHIFTED, poi, PARAMS[1:])
    with pytest.raises(InvalidModelSpec, match="no shift_up/shift_down"):
        multi_process_model(PROCESSES, TEMPLATES, {}, poi, PARAMS)
    with pytest.raises(InvalidModelSpec, match="not used"):
        multi_process_model(PROCESSES, TEMPLATES, SHIFTED, poi, PARAMS + [Parameter("zzz", 0.0)])
    with pytest.raises(InvalidModelSpec, match="no process has the poi"):
        multi_process_model(PROCESSES[1:], TEMPLATES, SHIFTED, poi, PARAMS)
    with pytest.raises(InvalidModelSpec, match="names must match"):
        ProcessSpec("bkg/a", 10.0)
