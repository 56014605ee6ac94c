"""The pyhf workspace of an Analysis is the same likelihood: pyhf's own Hessian (pytorch backend, autodiff), its
profile-likelihood σ of every POI and cabinetry's fit agree with ours."""

import pyhf
import pytest
import torch

from lumin_inferno.analysis import template_model
from lumin_inferno.export.pyhf import pyhf_modifier_settings, pyhf_workspace, pyhf_poi_uncertainty
from lumin_inferno.statistics import fit, nll_hessian, profile_interval

from ..analysis.conftest import make_analysis, make_templates

D = torch.float64


@pytest.fixture
def pytorch_backend():
    old, dtype = pyhf.get_backend(), torch.get_default_dtype()
    pyhf.set_backend("pytorch", precision="64b")  # sets torch's default dtype to float64
    yield
    pyhf.set_backend(*old)
    torch.set_default_dtype(dtype)


@pytest.mark.parametrize("code", ["code4", "code1"])
def test_hessian_equals_pyhf_autodiff(code, pytorch_backend):
    a = make_analysis(code)
    m = template_model(a, make_templates(a))
    ws = pyhf.Workspace(pyhf_workspace(a, m))
    pdf = ws.model(modifier_settings=pyhf_modifier_settings(a))
    names = pdf.config.par_names
    assert sorted(names) == sorted(m.parameter_names)
    data = torch.as_tensor(ws.data(pdf), dtype=D)
    counts = torch.as_tensor(ws.data(pdf, include_auxdata=False), dtype=D)
    g = torch.Generator().manual_seed(7)
    theta = m.nominal() + 0.1 * torch.randn(len(m.parameters), generator=g, dtype=D)  # any point, not only nominal
    perm = [m.index(n) for n in names]
    pars = theta[perm]
    theirs = torch.autograd.functional.hessian(lambda p: -pdf.logpdf(p, data)[0], pars)
    ours = nll_hessian(m, counts, theta)[perm][:, perm]
    assert torch.allclose(ours, theirs, rtol=1e-10, atol=1e-10 * float(theirs.abs().max()))
    assert float(-pdf.logpdf(pars, data)[0]) - float(m.nll(theta, counts)) == pytest.approx(
        float(-pdf.logpdf(m.nominal()[perm], data)[0]) - float(m.nll(m.nominal(), counts)), abs=1e-8
    )  # same NLL up to a constant


def test_profile_sigma_of_every_poi_equals_pyhf():
    a = make_analysis()
    m = template_model(a, make_templates(a))
    spec = pyhf_workspace(a, m)
    for poi in a.poi_names:
        ours = profile_interval(m, poi=poi).sigma
        theirs = pyhf_poi_uncertainty(spec, modifier_settings=pyhf_modifier_settings(a), poi=poi)
        assert ours == pytest.approx(theirs, rel=1e-3), poi


def test_cabinetry_fits_the_workspace_to_our_values():
    cabinetry = pytest.importorskip("cabinetry")
    a = make_analysis()
    m = template_model(a, make_templates(a))
    spec = pyhf_workspace(a, m)
    shifted = m.expected(m.nominal() + torch.tensor([0.3, -0.2] + [0.0] * (len(m.parameters) - 2), dtype=D))
    spec_obs = pyhf_workspace(a, m, observations=shifted.detach())
    pdf, data = cabinetry.model_utils.model_and_data(spec_obs)
    result = cabinetry.fit.fit(pdf, data)
    ours = fit(m, shifted.detach())
    for name in ("mu_ggH", "mu_qqH", "k_tt", "jes"):
        i = result.labels.index(name)
        assert result.bestfit[i] == pytest.approx(ours.values[name], abs=2e-3), name
    assert spec["measurements"][0]["config"]["poi"] == "mu_ggH"


def test_barlow_beeston_lite_closed_form_and_pyhf_staterror():
    """MC statistics alone: per bin, γ scales every sample with constraint width δ = σ_MC/ν, and profiling it adds
    the MC variance to the Poisson one, σ(μ)⁻² = Σ_b s_b² / (ν_b + σ²_MC,b) (Fisher of (μ, γ) at Asimov). Ours and
    pyhf's ``staterror`` on the exported workspace give that number."""
    from lumin_inferno.analysis import Analysis, NormFactor, Process, SummaryTemplates

    a = Analysis(processes=(Process("sig", 40.0, labels=(1,), role="signal"), Process("bkg", 500.0, labels=(0,))),
                 factors=(NormFactor("mu", ("sig",)),), n_bins=3)
    ts = torch.tensor([0.1, 0.3, 0.6], dtype=D)
    tb = torch.tensor([0.6, 0.3, 0.1], dtype=D)
    var = {"sig": torch.tensor([2e-4, 4e-4, 1e-3], dtype=D), "bkg": torch.tensor([4e-4, 2e-4, 5e-4], dtype=D)}
    m = template_model(a, SummaryTemplates({"sig": ts, "bkg": tb}, {}, var), floor=0.0)
    s, nu = 40.0 * ts, 40.0 * ts + 500.0 * tb
    mc = 40.0**2 * var["sig"] + 500.0**2 * var["bkg"]
    want = float((s**2 / (nu + mc)).sum() ** -0.5)
    no_mc = float((s**2 / nu).sum() ** -0.5)
    assert want > 1.02 * no_mc  # the term matters at this size
    from lumin_inferno.statistics import expected_poi_uncertainty

    assert expected_poi_uncertainty(m, method="hessian") == pytest.approx(want, rel=1e-10)
    # the profile scan of the same likelihood is not exactly quadratic at σ(μ) ≈ 0.5 (here +0.8 %)
    assert profile_interval(m).sigma == pytest.approx(want, rel=0.02)
    spec = pyhf_workspace(a, m)
    assert [mod["type"] for mod in spec["channels"][0]["samples"][0]["modifiers"]].count("staterror") == 1
    assert pyhf_poi_uncertainty(spec, modifier_settings=pyhf_modifier_settings(a)) == pytest.approx(
        profile_interval(m).sigma, rel=1e-3)
