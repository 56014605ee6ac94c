"""Closed forms and independent finite differences for the likelihood's curvature."""

import numpy as np
import pytest
import torch

from lumin_inferno.exceptions import InvalidModelSpecError, SingularHessianError
from lumin_inferno.statistics import (
    NormSystematic,
    Parameter,
    ShapeSystematic,
    TemplateModel,
    covariance,
    expected_poi_uncertainty,
    fisher_information,
    nll_hessian,
    poi_variance,
)

D = torch.float64


def counting(s=50.0, b=1000.0, sigma_b=None):
    params = [Parameter("s", s)]
    yields = {"sig": "s", "bkg": b}
    if sigma_b is not None:
        params.append(Parameter("b", b, constraint=sigma_b))
        yields["bkg"] = "b"
    return TemplateModel(["sig", "bkg"], torch.ones(2, 1, dtype=D), yields, params, poi="s")


def test_one_bin_counting_sqrt_s_plus_b():
    assert expected_poi_uncertainty(counting(50, 1000), method="hessian") == pytest.approx(np.sqrt(1050), rel=1e-12)
    h = nll_hessian(counting(50, 1000))
    assert float(h[0, 0]) == pytest.approx(1 / 1050, rel=1e-12)


def test_one_bin_constrained_background():
    # sigma(s) = sqrt(s + b + sigma_b^2)
    for sb in (10.0, 100.0):
        sigma = expected_poi_uncertainty(counting(50, 1000, sb), method="hessian")
        assert sigma == pytest.approx(np.sqrt(1050 + sb**2), rel=1e-10)


def test_free_background_in_one_bin_is_singular():
    m = TemplateModel(
        ["sig", "bkg"], torch.ones(2, 1, dtype=D), {"sig": "s", "bkg": "b"}, [Parameter("s", 50.0), Parameter("b", 1e3)], "s"
    )
    with pytest.raises(SingularHessianError, match="singular or not positive definite"):
        poi_variance(fisher_information(m))


def test_non_finite_hessian_is_named_error():
    with pytest.raises(SingularHessianError, match="non-finite"):
        poi_variance(torch.tensor([[1.0, float("nan")], [float("nan"), 1.0]], dtype=D))


def two_bin_free_background():
    # signal only in bin 0, background 50/50: b is measured in bin 1, s = n0 - b/2 -> var = (s+b/2) + b/4 ... exact
    return TemplateModel(
        ["sig", "bkg"],
        torch.tensor([[1.0, 0.0], [0.5, 0.5]], dtype=D),
        {"sig": "s", "bkg": "b"},
        [Parameter("s", 50.0), Parameter("b", 1000.0)],
        "s",
    )


def test_two_bin_sideband_closed_form():
    # n0 ~ Pois(s + b/2), n1 ~ Pois(b/2): s_hat = n0 - n1, var = (s + b/2) + b/2 = s + b
    assert expected_poi_uncertainty(two_bin_free_background(), method="hessian") ** 2 == pytest.approx(50 + 1000, rel=1e-10)


def rich_model(dtype=D, signal=40.0, scale=1.0):
    g = torch.Generator().manual_seed(3)
    n_bins = 6
    t = torch.rand(3, n_bins, generator=g, dtype=dtype) + 0.2
    t = t / t.sum(1, keepdim=True)
    up = t[1] * (1 + 0.1 * torch.randn(n_bins, generator=g, dtype=dtype))
    down = t[1] * (1 - 0.07 * torch.randn(n_bins, generator=g, dtype=dtype))
    up2 = t[2] * (1 + 0.2 * torch.linspace(-1, 1, n_bins, dtype=dtype))
    down2 = t[2] * (1 - 0.15 * torch.linspace(-1, 1, n_bins, dtype=dtype))
    return TemplateModel(
        processes=["sig", "bkg1", "bkg2"],
        templates=t,
        yields={"sig": "mu_s", "bkg1": "b1", "bkg2": 300.0 * scale},
        parameters=[
            Parameter("mu_s", signal),
            Parameter("b1", 800.0 * scale, constraint=80.0 * scale),
            Parameter("alpha", 0.0, constraint=1.0),
            Parameter("r", 1.0),
            Parameter("lumi", 0.0, constraint=1.0),
        ],
        poi="mu_s",
        shape_systematics=[
            ShapeSystematic("alpha", "bkg1", up, down),
            ShapeSystematic("r", "bkg2", up2, down2, step=0.5),
            ShapeSystematic("alpha", "bkg2", up2 * 1.01, down2 * 0.98),
        ],
        norm_systematics=[NormSystematic("lumi", "sig", 1.05, 0.95), NormSystematic("lumi", "bkg2", 1.05, 0.95)],
    )


def finite_difference_hessian(f, x, eps=1e-4):
    x = np.asarray(x, dtype=float)
    n = len(x)
    h = np.zeros((n, n))
    for i in range(n):
        for j in range(n):
            def at(di, dj):
                y = x.copy()
                y[i] += di * eps
                y[j] += dj * eps
                return f(y)
            h[i, j] = (at(1, 1) - at(1, -1) - at(-1, 1) + at(-1, -1)) / (4 * eps * eps)
    return h


def test_hessian_matches_independent_finite_differences_off_asimov():
    m = rich_model()
    theta = m.nominal() + torch.tensor([3.0, -20.0, 0.3, 0.2, -0.4], dtype=D)
    observed = m.asimov() * torch.tensor([1.1, 0.9, 1.05, 1.0, 0.8, 1.2], dtype=D)
    f = lambda th: float(m.nll(torch.as_tensor(th, dtype=D), observed))  # noqa: E731
    # the finite difference needs curvature-scaled steps: use parameter-wise scaling
    scale = np.array([10.0, 100.0, 0.1, 0.1, 0.1])  # steps of eps * scale, matched to each parameter's curvature
    g = lambda u: f(theta.numpy() + u * scale)  # noqa: E731
    fd = finite_difference_hessian(g, np.zeros(5), eps=1e-2) / np.outer(scale, scale)
    h = nll_hessian(m, observed, theta).numpy()
    assert np.allclose(h, fd, rtol=1e-4, atol=1e-8)


def test_hessian_equals_fisher_at_asimov():
    m = rich_model()
    h = nll_hessian(m)
    i = fisher_information(m)
    assert torch.allclose(h, i, rtol=1e-10, atol=1e-12)
    # ...but not away from the Asimov point, where the second-derivative terms survive
    observed = m.asimov() * 1.2
    assert not torch.allclose(nll_hessian(m, observed), i, rtol=1e-3)


def test_constraint_terms_enter_diagonal():
    m = rich_model()
    unconstrained = TemplateModel(
        m.processes, m.templates, m.yields,
        [Parameter(p.name, p.nominal) for p in m.parameters], m.poi, m.shape_systematics, m.norm_systematics,
    )
    diff = fisher_information(m) - fisher_information(unconstrained)
    assert torch.allclose(diff, torch.diag(torch.tensor([0.0, 1 / 80.0**2, 1.0, 0.0, 1.0], dtype=D)))


def test_poi_variance_matches_full_inverse_and_is_differentiable():
    m = rich_model()
    h = fisher_information(m)
    assert torch.allclose(poi_variance(h, 0), torch.linalg.inv(h)[0, 0])
    assert torch.allclose(covariance(h), torch.linalg.inv(h))
    templates = m.templates.clone().requires_grad_(True)
    m2 = TemplateModel(m.processes, templates, m.yields, m.parameters, m.poi, m.shape_systematics, m.norm_systematics)
    var = poi_variance(fisher_information(m2))
    (g,) = torch.autograd.grad(var, templates)
    # directional finite difference of the variance w.r.t. the templates
    direction = torch.randn_like(templates)
    eps = 1e-6

    def var_at(t):
        mm = TemplateModel(m.processes, t, m.yields, m.parameters, m.poi, m.shape_systematics, m.norm_systematics)
        return float(poi_variance(fisher_information(mm)))

    fd = (var_at(m.templates + eps * direction) - var_at(m.templates - eps * direction)) / (2 * eps)
    assert float((g * direction).sum()) == pytest.approx(fd, rel=1e-5)


def test_spec_errors():
    t = torch.ones(2, 3, dtype=D) / 3
    with pytest.raises(InvalidModelSpecError, match="poi"):
        TemplateModel(["a", "b"], t, {"a": "s", "b": 1.0}, [Parameter("s", 1.0)], poi="mu")
    with pytest.raises(InvalidModelSpecError, match="unknown parameter 'x'"):
        TemplateModel(["a", "b"], t, {"a": "x", "b": 1.0}, [Parameter("s", 1.0)], poi="s")
    with pytest.raises(InvalidModelSpecError, match="yields must name exactly"):
        TemplateModel(["a", "b"], t, {"a": "s"}, [Parameter("s", 1.0)], poi="s")
    with pytest.raises(InvalidModelSpecError, match="shape"):
        TemplateModel(["a", "b"], t, {"a": "s", "b": 1.0}, [Parameter("s", 1.0), Parameter("k", 0.0)], poi="s",
                      shape_systematics=[ShapeSystematic("k", "b", torch.ones(2), torch.ones(2))])
    with pytest.raises(InvalidModelSpecError, match="unknown process"):
        TemplateModel(["a", "b"], t, {"a": "s", "b": 1.0}, [Parameter("s", 1.0), Parameter("k", 0.0)], poi="s",
                      shape_systematics=[ShapeSystematic("k", "c", t[0], t[0])])
    with pytest.raises(InvalidModelSpecError, match="constraint width"):
        Parameter("k", 0.0, constraint=0.0)
    with pytest.raises(InvalidModelSpecError, match="duplicate parameter"):
        TemplateModel(["a", "b"], t, {"a": "s", "b": 1.0}, [Parameter("s", 1.0), Parameter("s", 2.0)], poi="s")


def test_closed_form_jacobian_equals_autodiff():
    m = rich_model()
    for shift in (torch.zeros(5, dtype=D), torch.tensor([3.0, -20.0, 0.4, 0.3, -0.6], dtype=D),
                  torch.tensor([0.0, 0.0, 1.7, -0.9, 2.5], dtype=D)):  # inside and outside |z| <= 1
        theta = m.nominal() + shift
        assert torch.allclose(m.jacobian(theta), torch.func.jacfwd(m.expected)(theta), rtol=1e-10, atol=1e-12)


def test_nll_hessian_default_asimov_gradient_matches_finite_differences():
    """poi_variance(nll_hessian(model)) with its default Asimov data is a function of the templates through the
    data too (they are not detached): its gradient equals central finite differences."""
    m = rich_model()

    def sigma2(t):
        mt = TemplateModel(m.processes, t, m.yields, m.parameters, m.poi, m.shape_systematics, m.norm_systematics)
        return poi_variance(nll_hessian(mt))

    t0 = m.templates.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(sigma2(t0), t0)
    eps = 1e-6
    fd = torch.zeros_like(grad)
    for idx in np.ndindex(*t0.shape):
        up, down = m.templates.clone(), m.templates.clone()
        up[idx] += eps
        down[idx] -= eps
        fd[idx] = (sigma2(up) - sigma2(down)) / (2 * eps)
    assert torch.allclose(grad, fd, rtol=1e-5, atol=1e-8 * float(fd.abs().max()))


def test_nll_hessian_is_differentiable_wrt_templates_like_the_fisher_information():
    """At the Asimov point H(templates) = I(templates) identically, so their gradients w.r.t. the templates agree;
    and nll_hessian keeps no graph under no_grad."""
    m = rich_model()
    templates = m.templates.clone().requires_grad_(True)
    mt = TemplateModel(m.processes, templates, m.yields, m.parameters, m.poi, m.shape_systematics, m.norm_systematics)
    asimov = mt.expected(mt.nominal())  # with its graph: H(templates) at its own Asimov point
    (g_h,) = torch.autograd.grad(poi_variance(nll_hessian(mt, asimov)), templates)
    (g_i,) = torch.autograd.grad(poi_variance(fisher_information(mt)), templates)
    assert g_h.abs().max() > 0
    assert torch.allclose(g_h, g_i, rtol=1e-7, atol=1e-12)
    with torch.no_grad():
        assert not nll_hessian(mt).requires_grad
    assert not nll_hessian(m).requires_grad  # nothing upstream needs a graph


def test_stack_rows_reuses_a_block_and_keeps_gradients():
    import torch

    from lumin_inferno.statistics.likelihood import stack_rows

    base = torch.rand(4, 3, dtype=torch.float64, requires_grad=True)
    block = base * 2.0
    assert stack_rows(list(block)) is block  # the rows of one tensor, in order: the tensor itself
    reordered = [block[1], block[0], block[2], block[3]]
    assert torch.equal(stack_rows(reordered), torch.stack(reordered))  # anything else: a real stack
    assert torch.equal(stack_rows(list(block[:3])), block[:3])
    (stack_rows(list(block)) * torch.arange(3.0, dtype=torch.float64)).sum().backward()
    assert torch.equal(base.grad, 2.0 * torch.arange(3.0, dtype=torch.float64).expand(4, 3))
