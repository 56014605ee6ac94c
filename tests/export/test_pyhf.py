"""pyhf export of the paper's benchmarks as Analyses: the workspace describes our likelihood, and pyhf's σ(POI)
equals ours within per-benchmark tolerances (exact where the nuisances' templates are at ±1σ)."""

import json

import numpy as np
import pytest
import torch

from lumin_inferno import ConfigurationError
from lumin_inferno.data import paper_benchmark
from lumin_inferno.evaluation import analysis_template_model, uniform_bins
from lumin_inferno.statistics import expected_poi_uncertainty
from lumin_inferno.export.pyhf import (
    pyhf_modifier_settings,
    pyhf_nuisance_scales,
    pyhf_poi_uncertainty,
    pyhf_workspace,
    write_pyhf_workspace,
)

pyhf = pytest.importorskip("pyhf")

#: Templates at ±1σ of the constraints of benchmarks 3 and 4: then the export is exact (c = 1).
ONE_SIGMA_STEPS = {"r": 0.4, "lambda": 1.0}
#: Relative tolerances of pyhf's σ against ours, per benchmark, about 2× the differences measured on this sample
#: (profile: 8e-7, 1.0e-3, 1.1e-3, 5.1e-4, 8.4e-3; Hessian: 7e-8, 3.4e-5, 3.6e-5, 1.6e-6, 5.2e-6). The Hessian (the
#: Fisher information at nominal) is matched exactly up to the free nuisances' wide constraint (benchmarks 1, 2:
#: 100× their expected uncertainty); the profile differs because the paper's templates are at ±0.5σ (c = 2),
#: matched to second order at nominal, while the profile moves the nuisances beyond ±1 template step, where our
#: code4p extrapolates linearly and pyhf's is still polynomial in α' = α/c (benchmark 4 the most, its interval is
#: the widest). With templates at ±1σ the export is exact (test below).
PROFILE_TOLERANCE = {0: 1e-5, 1: 2e-3, 2: 2.5e-3, 3: 1e-3, 4: 1.7e-2}
HESSIAN_TOLERANCE = {0: 1e-6, 1: 7e-5, 2: 7e-5, 3: 4e-6, 4: 1.2e-5}


@pytest.fixture(scope="module")
def test_sample(paper_foldfiles):
    from lumin.nn.data.fold_yielder import FoldYielder

    fold = FoldYielder(paper_foldfiles[1]).get_fold(0)
    return fold["inputs"], fold["targets"], fold["weights"]


def _bins(x: np.ndarray) -> np.ndarray:
    """A fixed summary statistic: 10 uniform bins of a hand-made signal-vs-background score of the inputs."""
    return uniform_bins(1 / (1 + np.exp(-(-2.2 * x[:, 0] - 2.0 + 0.5 * x[:, 2]))), 10)


def _paper(sample, benchmark: int, steps=None):
    bm = paper_benchmark(benchmark)
    analysis = bm.analysis(10, steps=steps, kind="transform")
    return analysis, analysis_template_model(analysis, _bins, *sample, transform=bm.transform(steps))


@pytest.mark.parametrize("benchmark", [0, 1, 2, 3, 4])
def test_pyhf_sigma_equals_ours(test_sample, tmp_path, benchmark):
    analysis, model = _paper(test_sample, benchmark)
    path = write_pyhf_workspace(analysis, model, tmp_path / "workspace.json")
    spec = json.loads(path.read_text())  # what a downstream user loads
    settings = pyhf_modifier_settings(analysis)
    ws = pyhf.Workspace(spec)
    pdf = ws.model(modifier_settings=settings)
    data = np.asarray(ws.data(pdf))
    # the observations are our Asimov data, and pyhf's expectation at its initial values (our nominal) equals them
    asimov = model.asimov().detach().numpy()
    assert np.allclose(data[: pdf.config.nmaindata], asimov, rtol=1e-12)
    assert np.allclose(pdf.expected_actualdata(pdf.config.suggested_init()), asimov, rtol=1e-9)
    for method, tolerance in (("profile", PROFILE_TOLERANCE), ("hessian", HESSIAN_TOLERANCE)):
        ours = expected_poi_uncertainty(model, method=method)
        theirs = pyhf_poi_uncertainty(spec, method, modifier_settings=settings)
        print(f"benchmark {benchmark} {method}: σ(s) ours {50 * ours:.4f} pyhf {50 * theirs:.4f} "
              f"({theirs / ours - 1:+.2e})")
        assert theirs == pytest.approx(ours, rel=tolerance[benchmark])


def test_templates_at_one_sigma_export_exactly(test_sample):
    analysis, model = _paper(test_sample, 3, ONE_SIGMA_STEPS)
    assert pyhf_nuisance_scales(analysis, model) == {"r": 1.0, "lambda": 1.0}
    spec = pyhf_workspace(analysis, model)
    pdf = pyhf.Workspace(spec).model(modifier_settings=pyhf_modifier_settings(analysis))
    data = np.asarray(pyhf.Workspace(spec).data(pdf))
    order = pdf.config.par_order
    perm = [model.index(n) for n in order]
    rng = np.random.default_rng(3)
    theta0 = model.nominal()
    observed = model.asimov().detach()
    ref = float(model.nll(theta0, observed)), -float(pdf.logpdf(theta0[perm].numpy(), data)[0])
    for _ in range(5):  # −ln L differences between parameter points agree: the same function of the same parameters
        theta = theta0 + torch.as_tensor(rng.normal(size=len(theta0)) * [0.2, 0.5, 0.5], dtype=theta0.dtype)
        ours = float(model.nll(theta, observed)) - ref[0]
        theirs = -float(pdf.logpdf(theta[perm].numpy(), data)[0]) - ref[1]
        assert theirs == pytest.approx(ours, rel=1e-9, abs=1e-9)
    sigma = pyhf_poi_uncertainty(spec, "profile", modifier_settings=pyhf_modifier_settings(analysis))
    assert sigma == pytest.approx(expected_poi_uncertainty(model, method="profile"), rel=1e-4)


def test_workspace_structure_benchmark_4(test_sample):
    analysis, model = _paper(test_sample, 4)
    spec = pyhf_workspace(analysis, model)
    (channel,) = spec["channels"]
    signal, background = channel["samples"]
    assert [(m["name"], m["type"]) for m in signal["modifiers"]] == [("mu", "normfactor")]
    assert [(m["name"], m["type"]) for m in background["modifiers"]] == [
        ("k_b", "histosys"), ("r", "histosys"), ("lambda", "histosys")]
    k_b = background["modifiers"][0]["data"]
    assert np.allclose(k_b["hi_data"], 1.1 * np.asarray(background["data"]))  # k_b ~ N(1, 0.1): linear
    assert sum(signal["data"]) == pytest.approx(50.0, rel=1e-5)
    assert sum(background["data"]) == pytest.approx(1000.0, rel=1e-5)
    config = {p["name"]: p for p in spec["measurements"][0]["config"]["parameters"]}
    assert spec["measurements"][0]["config"]["poi"] == "mu"
    assert config["lambda"]["bounds"] == [[pytest.approx(-2.5), pytest.approx(2.5)]]  # ±5 steps of 0.5, σ_λ = 1
    assert config["k_b"]["bounds"] == [[pytest.approx(-10.0), pytest.approx(90.0)]]  # k_b in [0, 10]


def test_bad_requests(test_sample, tmp_path):
    from lumin_inferno.analysis import Analysis, NormFactor, Nuisance, Process, Systematic

    analysis, model = _paper(test_sample, 3)
    with pytest.raises(ConfigurationError, match="does not exist"):
        write_pyhf_workspace(analysis, model, tmp_path / "missing" / "ws.json")
    with pytest.raises(ConfigurationError, match="observations"):
        pyhf_workspace(analysis, model, observations=np.ones(3))
    mixed = Analysis(processes=(Process("s", 5.0, labels=(1,)), Process("b", 50.0, labels=(0,))),
                     factors=(NormFactor("mu", ("s",)),), n_bins=2, mc_stat=False,
                     systematics=(Systematic("a", "norm", ("b",), kappa_up=1.1),
                                  Systematic("c", "norm", ("s",), kappa_up=1.1, interpolation="code1")))
    with pytest.raises(ConfigurationError, match="mixes"):
        pyhf_modifier_settings(mixed)
    free_norm = Analysis(processes=mixed.processes, factors=mixed.factors, n_bins=2, mc_stat=False,
                         systematics=(Systematic("a", "norm", ("b",), kappa_up=1.1),), nuisances=(Nuisance("a", None),))
    t = {"s": torch.tensor([0.7, 0.3], dtype=torch.float64), "b": torch.tensor([0.2, 0.8], dtype=torch.float64)}
    from lumin_inferno.analysis import SummaryTemplates, template_model

    with pytest.raises(ConfigurationError, match="on free nuisances"):
        pyhf_workspace(free_norm, template_model(free_norm, SummaryTemplates(t, {})))
    assert list(tmp_path.iterdir()) == []
