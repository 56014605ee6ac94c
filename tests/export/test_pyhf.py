"""pyhf export: the workspace describes our likelihood, and pyhf's σ(POI) equals ours (paper benchmarks 2, 3, 4)."""

import json

import numpy as np
import pytest
import torch

from lumin_inferno import ConfigurationError, NormSystematic, Parameter, TemplateModel, paper_benchmark
from lumin_inferno.data.paper import TEMPLATE_SHIFTS, PaperTransform
from lumin_inferno.evaluation import asimov_template_model, expected_uncertainty, uniform_bins
from lumin_inferno.export.pyhf import (
    pyhf_parameter_map,
    pyhf_poi_scale,
    pyhf_poi_uncertainty,
    pyhf_workspace,
    write_pyhf_workspace,
)

pyhf = pytest.importorskip("pyhf")
pytestmark = pytest.mark.filterwarnings("ignore:.*RefResolver:DeprecationWarning")  # pyhf 0.7's use of jsonschema

#: Templates at ±1σ of the constraints of benchmarks 3 and 4: then the export is exact (c = σ/step = 1).
ONE_SIGMA_STEPS = {"r": 0.4, "lambda": 1.0}


@pytest.fixture(scope="module")
def test_sample(paper_foldfiles):
    from lumin.nn.data.fold_yielder import FoldYielder

    fold = FoldYielder(paper_foldfiles[1]).get_fold(0)
    return fold["inputs"], fold["targets"], fold["weights"]


def _bins(x: np.ndarray) -> np.ndarray:
    """A fixed summary statistic: 10 uniform bins of a hand-made signal-vs-background score of the inputs."""
    return uniform_bins(1 / (1 + np.exp(-(-2.2 * x[:, 0] - 2.0 + 0.5 * x[:, 2]))), 10)


def _paper_model(sample, benchmark: int, steps=TEMPLATE_SHIFTS) -> TemplateModel:
    bm = paper_benchmark(benchmark)
    return asimov_template_model(
        _bins, *sample, 10, bm.poi, bm.background, bm.shape_nuisances, PaperTransform(), steps
    )


def _pyhf_model(spec):
    ws = pyhf.Workspace(spec)
    return ws, ws.model(), np.asarray(ws.data(ws.model()))


@pytest.mark.parametrize("benchmark", [0, 1, 2, 3, 4])
def test_pyhf_sigma_equals_ours(test_sample, tmp_path, benchmark):
    model = _paper_model(test_sample, benchmark)
    path = write_pyhf_workspace(model, tmp_path / "workspace.json")
    spec = json.loads(path.read_text())  # what a downstream user loads
    ws, pdf, data = _pyhf_model(spec)
    # the observations are our Asimov data, and pyhf's expectation at its initial values (our nominal) equals them
    asimov = model.asimov().numpy()
    assert np.allclose(data[: pdf.config.nmaindata], asimov, rtol=1e-12)
    assert np.allclose(pdf.expected_actualdata(pdf.config.suggested_init()), asimov, rtol=1e-9)

    scale = pyhf_poi_scale(model)
    assert scale == 50.0
    ours_profile, ours_hessian = expected_uncertainty(model, "profile"), expected_uncertainty(model, "hessian")
    pyhf_profile = pyhf_poi_uncertainty(spec, "profile", scale)
    pyhf_hessian = pyhf_poi_uncertainty(spec, "hessian", scale)
    print(f"benchmark {benchmark}: σ(s) profile ours {ours_profile:.4f} pyhf {pyhf_profile:.4f}; "
          f"hessian ours {ours_hessian:.4f} pyhf {pyhf_hessian:.4f}")
    assert pyhf_profile == pytest.approx(ours_profile, rel=1e-2)
    assert pyhf_hessian == pytest.approx(ours_hessian, rel=1e-3)


def test_templates_at_one_sigma_export_exactly(test_sample):
    model = _paper_model(test_sample, 4, ONE_SIGMA_STEPS)
    spec = pyhf_workspace(model)
    _, pdf, data = _pyhf_model(spec)
    # -ln L differences between parameter points agree (both are Poisson + Gaussian constraints, up to constants)
    mapping = pyhf_parameter_map(model)
    order = pdf.config.par_order
    rng = np.random.default_rng(3)
    theta0 = model.nominal()

    def to_pyhf(theta):
        pars = np.zeros(len(order))
        for i, name in enumerate(model.parameter_names):
            pyhf_name, offset, scale = mapping[name]
            pars[order.index(pyhf_name)] = (float(theta[i]) - offset) / scale
        return pars

    observed = model.asimov()
    ref_ours = float(model.nll(theta0.double(), observed))
    ref_pyhf = -float(pdf.logpdf(to_pyhf(theta0), data)[0])
    for _ in range(5):
        theta = theta0 + torch.as_tensor(rng.normal(size=len(theta0)) * [10.0, 50.0, 0.2, 0.5], dtype=theta0.dtype)
        ours = float(model.nll(theta.double(), observed)) - ref_ours
        theirs = -float(pdf.logpdf(to_pyhf(theta), data)[0]) - ref_pyhf
        assert theirs == pytest.approx(ours, rel=1e-9, abs=1e-9)
    # (benchmark 4's lower profile edge lies below s = 0 with these templates; benchmark 3's does not)
    model = _paper_model(test_sample, 3, ONE_SIGMA_STEPS)
    sigma = pyhf_poi_uncertainty(pyhf_workspace(model), "profile", 50.0)
    assert sigma == pytest.approx(expected_uncertainty(model, "profile"), rel=1e-4)


def test_workspace_structure_benchmark_4(test_sample):
    spec = pyhf_workspace(_paper_model(test_sample, 4))
    (channel,) = spec["channels"]
    signal, background = channel["samples"]
    assert [(m["name"], m["type"]) for m in signal["modifiers"]] == [("mu", "normfactor")]
    assert [(m["name"], m["type"]) for m in background["modifiers"]] == [
        ("lumi", "lumi"),
        ("r", "histosys"),
        ("lambda", "histosys"),
    ]
    assert sum(signal["data"]) == pytest.approx(50.0, rel=1e-5)
    assert sum(background["data"]) == pytest.approx(1000.0, rel=1e-5)
    config = {p["name"]: p for p in spec["measurements"][0]["config"]["parameters"]}
    assert spec["measurements"][0]["config"]["poi"] == "mu"
    assert config["lumi"]["auxdata"] == [1.0] and config["lumi"]["sigmas"] == [pytest.approx(0.1)]
    assert config["lambda"]["bounds"] == [[pytest.approx(-2.5), pytest.approx(5.0)]]  # λ ≥ 0.5, in units of σ_λ = 1


def test_templates_matching_exports_our_one_sigma_templates(test_sample):
    """``shape_matching="templates"``: hi/lo are our own templates at θ⁰ ± σ (here σ = 2 steps: linear extrapolation)."""
    model = _paper_model(test_sample, 3)
    spec = pyhf_workspace(model, shape_matching="templates")
    modifiers = {m["name"]: m["data"] for m in spec["channels"][0]["samples"][1]["modifiers"]}
    for name, sigma in (("r", 0.4), ("lambda", 1.0)):
        for sign, key in ((1.0, "hi_data"), (-1.0, "lo_data")):
            theta = model.nominal().double()
            theta[model.index(name)] += sign * sigma
            expected = 1000.0 * model.process_templates(theta)[1].detach().numpy()
            assert np.allclose(modifiers[name][key], expected, rtol=1e-10)


def test_norm_systematics_and_unconstrained_yields():
    """A toy with a normalisation systematic (exported as normsys, exact when step = σ) and a free background."""
    templates = torch.tensor([[0.7, 0.2, 0.1], [0.2, 0.3, 0.5]], dtype=torch.float64)
    model = TemplateModel(
        processes=["signal", "background"],
        templates=templates,
        yields={"signal": "s", "background": "b"},
        parameters=[
            Parameter("s", 20.0, bounds=(0.0, None)),
            Parameter("b", 200.0),
            Parameter("k", 0.0, constraint=1.0),
        ],
        poi="s",
        norm_systematics=[NormSystematic("k", "background", 1.15, 0.9)],
    )
    spec = pyhf_workspace(model, poi_name="mu_s")
    modifiers = {m["name"]: m for m in spec["channels"][0]["samples"][1]["modifiers"]}
    assert modifiers["b"]["type"] == "normfactor" and modifiers["k"]["type"] == "normsys"
    assert modifiers["k"]["data"] == {"hi": pytest.approx(1.15), "lo": pytest.approx(0.9)}
    for method, tolerance in (("hessian", 1e-4), ("profile", 1e-4)):  # measured 1e-6, 1e-7
        ours = expected_uncertainty(model, method)
        assert pyhf_poi_uncertainty(spec, method, 20.0) == pytest.approx(ours, rel=tolerance)


def test_bad_requests(test_sample, tmp_path):
    model = _paper_model(test_sample, 3)
    with pytest.raises(ConfigurationError, match="shape_matching"):
        pyhf_workspace(model, shape_matching="linear")
    with pytest.raises(ConfigurationError, match="does not exist"):
        write_pyhf_workspace(model, tmp_path / "missing" / "ws.json")
    with pytest.raises(ConfigurationError, match="clash"):
        pyhf_workspace(model, poi_name="r")
    with pytest.raises(ConfigurationError, match="observations"):
        pyhf_workspace(model, observations=np.ones(3))
    two_constrained = TemplateModel(
        processes=["signal", "a", "b"],
        templates=torch.full((3, 2), 0.5, dtype=torch.float64),
        yields={"signal": "s", "a": "ya", "b": "yb"},
        parameters=[Parameter("s", 5.0), Parameter("ya", 10.0, constraint=1.0), Parameter("yb", 10.0, constraint=2.0)],
        poi="s",
    )
    with pytest.raises(ConfigurationError, match="lumi"):
        pyhf_workspace(two_constrained)
    assert list(tmp_path.iterdir()) == []
