"""The binned likelihood of an Analysis: closed-form Jacobian, Fisher = Hessian at Asimov, MC-statistics widths,
differentiable objectives, named errors."""

import pytest
import torch

from lumin_inferno.analysis import SummaryTemplates, template_model
from lumin_inferno.exceptions import InvalidModelSpecError
from lumin_inferno.statistics import fisher_information, nll_hessian
from lumin_inferno.statistics.objectives import objective_value, poi_covariance

from .conftest import N_BINS, make_analysis, make_templates

D = torch.float64


def test_layout(analysis):
    m = template_model(analysis, make_templates(analysis))
    assert m.channels == [("summary", N_BINS), ("ttbar_cr", 3)]
    assert m.pois == ["mu_ggH", "mu_qqH"]
    assert m.parameter_names[:8] == ["mu_ggH", "mu_qqH", "k_tt", "jes", "tes", "pdf", "lumi_13TeV", "xs_tt"]
    assert m.parameter_names[8:] == [f"staterror_summary[{i}]" for i in range(N_BINS)] + [
        f"staterror_ttbar_cr[{i}]" for i in range(3)
    ]
    nu = m.process_expected(m.nominal()).detach()
    # the control region holds exactly the declared yields; the summary the yield times the template (+ floor)
    cr = m.channel_slices()["ttbar_cr"]
    assert torch.allclose(nu[m.processes.index("ttbar"), cr], torch.tensor([400.0, 250.0, 120.0], dtype=D))
    assert torch.allclose(nu[m.processes.index("qcd"), :N_BINS], torch.zeros(N_BINS, dtype=D))
    t = make_templates(analysis)
    assert torch.allclose(nu[0, :N_BINS], 200.0 * t.nominal["ggH"], atol=1e-5)


@pytest.mark.parametrize("code", ["code4", "code1"])
def test_jacobian_and_fisher_against_autograd(code):
    a = make_analysis(code)
    m = template_model(a, make_templates(a))
    g = torch.Generator().manual_seed(3)
    theta = m.nominal() + 0.2 * torch.randn(len(m.parameters), generator=g, dtype=D)
    assert torch.allclose(m.jacobian(theta), torch.func.jacfwd(m.expected)(theta), rtol=1e-10, atol=1e-10)
    h, f = nll_hessian(m), fisher_information(m)
    assert torch.allclose(h, f, rtol=1e-9, atol=1e-9 * float(f.abs().max()))


def test_staterror_width_is_relative_mc_uncertainty(analysis):
    t = make_templates(analysis)
    m = template_model(analysis, t)
    mc = ["ggH", "qqH", "ttbar", "ztt"]
    sigma2 = sum((analysis.process(p).nominal_yield ** 2) * t.mc_variance[p] for p in mc)
    nu = sum(analysis.process(p).nominal_yield * t.nominal[p] for p in mc)
    want = torch.sqrt(sigma2) / nu
    i = m.index("staterror_summary[2]")
    assert float(m.constraint_precision()[i]) == pytest.approx(1.0 / float(want[2]) ** 2, rel=1e-5)
    cr_sigma = (12.0**2 + 3.0**2) ** 0.5 / (400.0 + 20.0)  # qcd has no MC statistics
    assert float(m.gamma_widths[N_BINS]) == pytest.approx(cr_sigma, rel=1e-12)


def test_mc_stat_switch_removes_gammas():
    a = make_analysis(mc_stat=False)
    m = template_model(a, make_templates(a))
    assert not [n for n in m.parameter_names if n.startswith("staterror")]


def test_mc_stat_makes_pois_less_precise(analysis):
    t = make_templates(analysis)
    with_mc = poi_covariance(fisher_information(template_model(analysis, t)), [0, 1]).diagonal()
    without = poi_covariance(fisher_information(template_model(make_analysis(mc_stat=False), t)), [0, 1]).diagonal()
    assert (with_mc > without).all()


@pytest.mark.parametrize("kind", ["variance", "weighted_variance", "generalised_variance"])
def test_objectives_are_differentiable_wrt_templates(analysis, kind):
    base = make_templates(analysis)
    names = [p.name for p in analysis.summary_processes]

    def objective(*nominal):
        t = SummaryTemplates(dict(zip(names, nominal)), base.shifted, base.mc_variance)
        m = template_model(analysis, t)
        return objective_value(fisher_information(m), m.poi_indices, kind)

    inputs = tuple(base.nominal[n].clone().requires_grad_(True) for n in names)
    assert torch.autograd.gradcheck(objective, inputs, eps=1e-7, atol=1e-6, rtol=1e-4)


def test_objective_values_against_closed_form(analysis):
    m = template_model(analysis, make_templates(analysis))
    info = fisher_information(m)
    cov = torch.linalg.inv(info)[:2, :2]
    assert float(objective_value(info, m.poi_indices, "variance")) == pytest.approx(float(cov[0, 0]), rel=1e-10)
    assert float(objective_value(info, m.poi_indices, "weighted_variance", [2.0, 0.5])) == pytest.approx(
        float(2 * cov[0, 0] + 0.5 * cov[1, 1]), rel=1e-10)
    assert float(objective_value(info, m.poi_indices, "generalised_variance")) == pytest.approx(
        float(torch.logdet(cov)), rel=1e-10)


def test_missing_and_bad_templates_are_named(analysis):
    t = make_templates(analysis)
    with pytest.raises(InvalidModelSpecError, match="shift_up summary template for systematic 'jes' .* process 'ztt'"):
        template_model(analysis, SummaryTemplates(t.nominal, {k: v for k, v in t.shifted.items()
                                                              if k != ("ztt", "jes")}, t.mc_variance))
    bad = dict(t.nominal, ttbar=t.nominal["ttbar"] - 0.5)
    with pytest.raises(InvalidModelSpecError, match="summary template of process 'ttbar' has negative bins"):
        template_model(analysis, SummaryTemplates(bad, t.shifted, t.mc_variance))
    nan = dict(t.nominal, ggH=torch.full((N_BINS,), float("nan"), dtype=D))
    with pytest.raises(InvalidModelSpecError, match="process 'ggH' has non-finite bins"):
        template_model(analysis, SummaryTemplates(nan, t.shifted, t.mc_variance))
    with pytest.raises(InvalidModelSpecError, match="no MC variance of process 'ggH'"):
        template_model(analysis, SummaryTemplates(t.nominal, t.shifted, None))
    # values are tested once, by the TemplateModel; its failure is then explained in the analysis's names
    nan_shift = dict(t.shifted)
    nan_shift[("ztt", "jes")] = (torch.full((N_BINS,), float("nan"), dtype=D), t.shifted[("ztt", "jes")][1])
    with pytest.raises(InvalidModelSpecError, match="shift_up template of systematic 'jes', process 'ztt' has non-finite"):
        template_model(analysis, SummaryTemplates(t.nominal, nan_shift, t.mc_variance))
    nan_var = dict(t.mc_variance, ggH=torch.full((N_BINS,), float("nan"), dtype=D))
    with pytest.raises(InvalidModelSpecError, match="MC variance of process 'ggH' has non-finite bins"):
        template_model(analysis, SummaryTemplates(t.nominal, t.shifted, nan_var))
    short = dict(t.nominal, qqH=t.nominal["qqH"][:3])
    with pytest.raises(InvalidModelSpecError, match=r"process 'qqH' must have shape \(5,\)"):
        template_model(analysis, SummaryTemplates(short, t.shifted, t.mc_variance))
