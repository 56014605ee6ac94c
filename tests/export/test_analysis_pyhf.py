"""The pyhf workspace of an Analysis is the same likelihood: pyhf's own Hessian (pytorch backend, autodiff), its
profile-likelihood σ of every POI and cabinetry's fit agree with ours."""

import numpy as np
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
