"""HistFactory XML (read back by pyhf.readxml) and the combine datacard + shapes file of an Analysis."""

import numpy as np
import pyhf
import pyhf.readxml
import pytest
import uproot

from lumin_inferno.analysis import template_model
from lumin_inferno.exceptions import ConfigurationError
from lumin_inferno.export.histfactory import parse_datacard, write_combine_datacard, write_histfactory_xml
from lumin_inferno.export.pyhf import pyhf_modifier_settings, pyhf_workspace, pyhf_poi_uncertainty
from lumin_inferno.statistics import profile_interval

from ..analysis.conftest import make_analysis, make_templates


@pytest.fixture(scope="module")
def analysis_and_model():
    a = make_analysis()
    return a, template_model(a, make_templates(a))


def test_xml_round_trip_gives_our_sigma_for_every_poi(analysis_and_model, tmp_path):
    a, m = analysis_and_model
    out = write_histfactory_xml(a, m, tmp_path / "xml")
    assert (out / "combination.xml").is_file() and (out / "data" / "data.root").is_file()
    assert str(tmp_path) not in (out / "combination.xml").read_text()  # relative paths: the folder can move
    moved = out.rename(tmp_path / "moved")
    spec = pyhf.readxml.parse(moved / "combination.xml", moved)
    for poi in a.poi_names:
        ours = profile_interval(m, poi=poi).sigma
        theirs = pyhf_poi_uncertainty(spec, modifier_settings=pyhf_modifier_settings(a), poi=poi)
        assert theirs == pytest.approx(ours, rel=1e-3), poi


def test_datacard_lines_and_shapes(analysis_and_model, tmp_path):
    a, m = analysis_and_model
    card = write_combine_datacard(a, m, tmp_path / "combine")
    parsed = parse_datacard(card)
    assert parsed["bins"] == ["summary", "ttbar_cr"]
    assert parsed["shapes"] == ["*", "*", "shapes.root", "$CHANNEL/$PROCESS", "$CHANNEL/$PROCESS_$SYSTEMATIC"]
    columns = parsed["columns"]
    assert [(b, p) for b, p, _ in columns] == [("summary", "ggH"), ("summary", "qqH"), ("summary", "ttbar"),
                                              ("summary", "ztt"), ("ttbar_cr", "ttbar"), ("ttbar_cr", "ztt"),
                                              ("ttbar_cr", "qcd")]
    assert {p: i for _, p, i in columns}["ggH"] <= 0 and {p: i for _, p, i in columns}["qqH"] <= 0
    assert all(i > 0 for _, p, i in columns if p in ("ttbar", "ztt", "qcd"))
    syst = parsed["systematics"]
    assert syst["lumi_13TeV"] == ("lnN", ["1.025", "1.025", "-", "1.025", "-", "1.025", "-"])
    assert syst["xs_tt"] == ("lnN", ["-", "-", "0.95/1.08", "-", "0.95/1.08", "-", "0.95/1.08"])
    assert syst["jes"] == ("shape", ["1", "1", "1", "1", "1", "-", "-"])  # in the CR only ttbar has variations
    assert syst["pdf"] == ("shape", ["1", "1", "-", "-", "-", "-", "-"])
    assert ("mu_ggH", "summary", "ggH", 1.0, "[0,10]") in parsed["rate_params"]
    assert ("k_tt", "ttbar_cr", "ttbar", 1.0, "[0,10]") in parsed["rate_params"]
    assert parsed["auto_mc_stats"]
    spec = pyhf_workspace(a, m)
    with uproot.open(tmp_path / "combine" / "shapes.root") as f:
        for ch in spec["channels"]:
            for sample in ch["samples"]:
                h = f[f"{ch['name']}/{sample['name']}"]
                assert np.allclose(h.values(), sample["data"], rtol=1e-12)
                stat = [mm for mm in sample["modifiers"] if mm["type"] == "staterror"]
                want = np.asarray(stat[0]["data"]) ** 2 if stat else np.zeros(len(sample["data"]))
                assert np.allclose(h.variances(), want, rtol=1e-12)
                for mm in sample["modifiers"]:
                    if mm["type"] == "histosys":
                        up = f[f"{ch['name']}/{sample['name']}_{mm['name']}Up"].values()
                        assert np.allclose(up, mm["data"]["hi_data"], rtol=1e-12)
        data = f["summary/data_obs"].values()
        assert np.allclose(data, m.asimov().detach().numpy()[: a.n_bins], rtol=1e-12)


def test_datacard_scales_nuisances_whose_templates_are_not_one_sigma(tmp_path):
    """A nuisance with constraint width 2 (templates at ±½σ): combine's column is 2 and its Up/Down histograms are
    our ±1 templates; lnN κ becomes κ² for it."""
    from lumin_inferno.analysis import Analysis, Nuisance

    a = make_analysis()
    d = {f: getattr(a, f) for f in a.__dataclass_fields__}
    wide = Analysis(**{**d, "nuisances": (Nuisance("jes", 2.0), Nuisance("lumi_13TeV", 2.0))})
    m = template_model(wide, make_templates(wide))
    parsed = parse_datacard(write_combine_datacard(wide, m, tmp_path / "combine"))
    assert parsed["systematics"]["jes"] == ("shape", ["2", "2", "2", "2", "2", "-", "-"])
    assert parsed["systematics"]["lumi_13TeV"][1][0] == f"{1.025 ** 2:.6g}"
    jes = [s for s in m.shape_systematics if s.parameter == "jes" and s.process == "ggH"][0]
    with uproot.open(tmp_path / "combine" / "shapes.root") as f:
        up = f["summary/ggH_jesUp"].values()
    assert np.allclose(up, float(m.yields["ggH"]) * jes.shift_up[: a.n_bins].numpy(), rtol=1e-12)


def test_exports_leave_nothing_behind_on_error(tmp_path):
    a = make_analysis()
    for write in (write_combine_datacard, write_histfactory_xml):
        with pytest.raises(ConfigurationError, match="observations"):
            write(a, template_model(a, make_templates(a)), tmp_path / "out", observations=np.ones(3))
        assert not (tmp_path / "out").exists()
    assert not list(tmp_path.iterdir())  # no temporary directory left behind


def test_xml_refuses_a_systematic_named_lumi(tmp_path):
    from lumin_inferno.analysis import Analysis, Systematic

    a = make_analysis()
    d = {f: getattr(a, f) for f in a.__dataclass_fields__}
    renamed = Analysis(**{**d, "systematics": tuple(
        Systematic("lumi", s.kind, s.processes, s.kappa_up, s.kappa_down, s.interpolation) if s.name == "lumi_13TeV"
        else s for s in a.systematics)})
    with pytest.raises(ConfigurationError, match="reserves the name 'lumi'"):
        write_histfactory_xml(renamed, template_model(renamed, make_templates(renamed)), tmp_path / "xml")
    assert not (tmp_path / "xml").exists()
