"""Every differentiable function of the statistics core against finite differences (torch.autograd.gradcheck), and
second derivatives where training needs them (gradgradcheck): the templates (a network's soft histograms in
training) are the inputs, float64."""

import pytest
import torch

from lumin_inferno.statistics import (NormSystematic, Parameter, ShapeSystematic, StatError, TemplateModel,
                                      discovery_significance, expected_cls_upper_limit, fisher_information,
                                      model_objective, nll_hessian, objective_value, poi_variance)

D = torch.float64


def _model(logits: torch.Tensor, staterror: bool = False) -> TemplateModel:
    """Signal × μ and a background with a shape and a normalisation systematic; templates = softmax(logits) rows,
    the shape shifts a tilt of the background template; optional MC statistics (σ ∝ √template; a realistic 1/δ² ~ 4ν keeps the
    Hessian's entries small enough
    for float64 finite differences)."""
    t = torch.softmax(logits, dim=1)
    tilt = torch.linspace(-1, 1, t.shape[1], dtype=D)
    up = t[1] * (1 + 0.1 * tilt)
    down = t[1] * (1 - 0.08 * tilt)
    se = StatError(["bkg"], (0.5 * torch.sqrt(t[1] * 800.0))[None]) if staterror else None  # MC weight 0.25
    return TemplateModel(["sig", "bkg"], t, {"sig": 60.0, "bkg": 800.0},
                         [Parameter("mu", 1.0, bounds=(-5.0, 20.0)), Parameter("r", 0.0, constraint=1.0),
                          Parameter("k", 0.0, constraint=1.0)], poi="mu", factors={"sig": ["mu"]},
                         shape_systematics=[ShapeSystematic("r", "bkg", up, down)],
                         norm_systematics=[NormSystematic("k", "bkg", 1.1, 0.9)], staterror=se)


def _logits() -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    return torch.randn(2, 5, generator=g, dtype=D).requires_grad_(True)


@pytest.mark.parametrize("staterror", [False, True])
def test_nll_hessian_on_its_default_asimov_data(staterror):
    # the Asimov data are a function of the templates too: dropping that dependence was 22 % off (issue 18)
    f = lambda z: nll_hessian(_model(z, staterror))  # noqa: E731
    assert torch.autograd.gradcheck(f, (_logits(),))
    assert torch.autograd.gradgradcheck(f, (_logits(),), fast_mode=True)  # random projections: the full check is 60 s


@pytest.mark.parametrize("staterror", [False, True])
def test_fisher_information_and_variances(staterror):
    assert torch.autograd.gradcheck(lambda z: fisher_information(_model(z, staterror)), (_logits(),))
    assert torch.autograd.gradgradcheck(lambda z: fisher_information(_model(z, staterror)), (_logits(),), fast_mode=True)
    assert torch.autograd.gradcheck(lambda z: poi_variance(nll_hessian(_model(z, staterror)), 0), (_logits(),))
    for kind in ("variance", "generalised_variance", "weighted_variance"):
        assert torch.autograd.gradcheck(
            lambda z: objective_value(fisher_information(_model(z, staterror)), [0, 1], kind), (_logits(),)), kind


def test_nll_hessian_with_observed_data_and_theta():
    obs = torch.tensor([20.0, 150.0, 200.0, 260.0, 230.0], dtype=D)
    theta = torch.tensor([1.3, 0.2, -0.4], dtype=D)
    assert torch.autograd.gradcheck(lambda z: nll_hessian(_model(z), obs, theta), (_logits(),))


def test_search_objectives_implicit_gradients():
    # the envelope theorem (Z0) and implicit differentiation of the root (CLs limit) against finite differences of
    # refitted values, along two random directions of the logits (each point costs fits; a direction still catches a
    # wrong gradient): the fits converge to EDM < 1e-12, so eps = 1e-5 differences are good to ~1e-5
    z0 = _logits().detach()
    g = torch.Generator().manual_seed(1)
    for v in torch.randn(2, *z0.shape, generator=g, dtype=D):
        along = lambda t, f: f(_model(z0 + t * v))  # noqa: E731
        t = torch.zeros(1, dtype=D, requires_grad=True)
        for f in (discovery_significance, lambda m: expected_cls_upper_limit(m, xtol=1e-12),
                  lambda m: model_objective(m, fisher_information(m), [0], "discovery")):
            assert torch.autograd.gradcheck(lambda t: along(t[0], f), (t,), eps=1e-5, atol=1e-5, rtol=1e-3)
