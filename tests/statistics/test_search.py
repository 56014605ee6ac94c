"""Discovery significance and expected CLs limits: closed forms, finite differences of their gradients, and pyhf's
asymptotic calculator on exported workspaces (tests/export/test_search_pyhf.py)."""

import numpy as np
import pytest
import torch
from scipy.optimize import brentq
from scipy.stats import norm

from lumin_inferno.exceptions import InvalidModelSpecError
from lumin_inferno.statistics import NormSystematic, Parameter, ShapeSystematic, TemplateModel
from lumin_inferno.statistics.search import discovery_significance, expected_cls_upper_limit

D = torch.float64


def one_bin(s: float, b: float) -> TemplateModel:
    return TemplateModel(["sig", "bkg"], torch.ones(2, 1, dtype=D), {"sig": s, "bkg": b},
                         [Parameter("mu", 1.0, bounds=(-5.0, 50.0))], poi="mu", factors={"sig": ["mu"]})


@pytest.mark.parametrize("s, b", [(10.0, 100.0), (50.0, 1000.0), (5.0, 2.0)])
def test_counting_discovery_closed_form(s, b):
    z = float(discovery_significance(one_bin(s, b)))
    assert z == pytest.approx(np.sqrt(2 * ((s + b) * np.log1p(s / b) - s)), rel=1e-7)


@pytest.mark.parametrize("s, b", [(10.0, 100.0), (50.0, 1000.0), (5.0, 2.0)])
def test_counting_cls_limit_closed_form(s, b):
    # background-only Asimov n = b: q̃(μ) = 2[μs − b ln(1 + μs/b)] = Φ⁻¹(0.975)²
    target = norm.ppf(0.975) ** 2
    mu = brentq(lambda m: 2 * (m * s - b * np.log1p(m * s / b)) - target, 1e-9, 1e3, xtol=1e-12)
    assert float(expected_cls_upper_limit(one_bin(s, b))) == pytest.approx(mu, rel=1e-5)
    target90 = norm.ppf(0.95) ** 2
    mu90 = brentq(lambda m: 2 * (m * s - b * np.log1p(m * s / b)) - target90, 1e-9, 1e3, xtol=1e-12)
    assert float(expected_cls_upper_limit(one_bin(s, b), cl=0.90)) == pytest.approx(mu90, rel=1e-5)


def _model(t: torch.Tensor) -> TemplateModel:
    """3 bins, signal μ × 30 events, two backgrounds, a shape systematic and a normalisation: ``t`` is the signal
    template's logits (the thing a network would produce)."""
    sig = torch.softmax(t, 0)
    bkg = torch.tensor([0.2, 0.3, 0.5], dtype=D)
    other = torch.tensor([0.5, 0.4, 0.1], dtype=D)
    return TemplateModel(
        ["sig", "bkg", "other"], torch.stack([sig, bkg, other]), {"sig": 30.0, "bkg": 400.0, "other": 200.0},
        [Parameter("mu", 1.0, bounds=(-5.0, 20.0)), Parameter("k", 1.0, bounds=(0.1, 5.0)),
         Parameter("alpha", 0.0, constraint=1.0, bounds=(-5.0, 5.0)), Parameter("lumi", 0.0, constraint=1.0)],
        poi=["mu"], factors={"sig": ["mu"], "other": ["k"]},
        shape_systematics=[ShapeSystematic("alpha", "bkg", torch.tensor([0.25, 0.3, 0.45], dtype=D),
                                           torch.tensor([0.15, 0.3, 0.55], dtype=D))],
        norm_systematics=[NormSystematic("lumi", "sig", 1.05, 1 / 1.05), NormSystematic("lumi", "bkg", 1.05, 1 / 1.05)],
    )


@pytest.mark.parametrize("figure", [discovery_significance, expected_cls_upper_limit])
def test_gradient_equals_finite_differences(figure):
    t = torch.tensor([1.0, -0.5, 0.3], dtype=D, requires_grad=True)
    (grad,) = torch.autograd.grad(figure(_model(t)), t)
    h = 1e-4
    fd = []
    for i in range(3):
        e = torch.zeros(3, dtype=D)
        e[i] = h
        with torch.no_grad():
            fd.append((float(figure(_model(t.detach() + e))) - float(figure(_model(t.detach() - e)))) / (2 * h))
    assert grad.numpy() == pytest.approx(np.asarray(fd), rel=2e-3, abs=1e-6)
    assert float(grad.abs().max()) > 1e-3  # the test would notice a zero or detached gradient


def test_nuisances_lower_z0_and_raise_the_limit():
    t = torch.tensor([1.0, -0.5, 0.3], dtype=D)
    m = _model(t)
    stat = TemplateModel(m.processes, m.templates, m.yields, [m.parameters[0], m.parameters[1]], poi="mu",
                         factors=m.factors)
    assert float(discovery_significance(m)) < float(discovery_significance(stat))
    assert float(expected_cls_upper_limit(m)) > float(expected_cls_upper_limit(stat))


def test_no_signal_sensitive_bin_is_named():
    m = TemplateModel(["sig", "bkg"], torch.tensor([[0.0], [1.0]], dtype=D), {"sig": 10.0, "bkg": 100.0},
                      [Parameter("mu", 1.0, bounds=(-5.0, 10.0))], poi="mu", factors={"sig": ["mu"]})
    with pytest.raises(InvalidModelSpecError, match="no bin sensitive"):
        discovery_significance(m)
    with pytest.raises(InvalidModelSpecError, match="no bin sensitive"):
        expected_cls_upper_limit(m)
    with pytest.raises(InvalidModelSpecError, match="must be among"):
        discovery_significance(one_bin(5.0, 10.0), pois=["nope"])
    with pytest.raises(InvalidModelSpecError, match="cl must be"):
        expected_cls_upper_limit(one_bin(5.0, 10.0), cl=1.5)
