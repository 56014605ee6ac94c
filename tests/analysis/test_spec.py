"""The Analysis description: validation with named errors, JSON round trip."""

import json
import math

import pytest

from lumin_inferno.analysis import (
    Analysis, FixedChannel, InputShift, NormFactor, Nuisance, Objective, Process, Systematic,
)
from lumin_inferno.exceptions import InvalidModelSpecError

from .conftest import make_analysis


def test_json_round_trip_is_identity(tmp_path):
    a = make_analysis()
    b = Analysis.from_json(a.to_json())
    assert b == a
    path = a.save(tmp_path / "analysis.json")
    assert Analysis.load(path) == a
    assert json.loads(path.read_text())["version"] == 1


def test_views(analysis):
    assert analysis.poi_names == ["mu_ggH", "mu_qqH"]
    assert analysis.nuisance_names() == ["jes", "tes", "pdf", "lumi_13TeV", "xs_tt"]
    assert analysis.labels() == {"ggH": (0,), "qqH": (1,), "ttbar": (2,), "ztt": (3,)}
    assert analysis.nuisance("jes").constraint == 1.0
    xs = [s for s in analysis.systematics if s.name == "lumi_13TeV"][0]
    assert math.isclose(xs.kappa_down, 1 / 1.025)


def _with(**changes):
    a = make_analysis()
    d = {f: getattr(a, f) for f in a.__dataclass_fields__}
    d.update(changes)
    return Analysis(**d)


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"factors": (NormFactor("mu", ("nope",)),)}, "factor 'mu' multiplies unknown process"),
        ({"factors": (NormFactor("k", ("ggH",), poi=False),)}, "no parameter of interest"),
        ({"factors": (NormFactor("mu", ("ggH",)), NormFactor("mu", ("qqH",)))}, "duplicate factor"),
        ({"systematics": (Systematic("jes", "inputs", ("higgs",)),)}, "systematic 'jes' acts on unknown process"),
        ({"systematics": (Systematic("a", "norm", ("ggH",), kappa_up=1.1), Systematic("a", "norm", ("ggH",),
                                                                                     kappa_up=1.2))},
         "declared twice on process 'ggH'"),
        ({"nuisances": (Nuisance("unused"),)}, "declared but no systematic uses them"),
        ({"objective": Objective("variance", pois=("k_tt",))}, "not a parameter of interest"),
        ({"systematics": (Systematic("qcd_shape", "inputs", ("qcd",)),)}, "no events in the fold file"),
        ({"n_bins": 1}, "n_bins >= 2"),
    ],
)
def test_bad_analysis_is_named(changes, message):
    with pytest.raises(InvalidModelSpecError, match=message):
        _with(**changes)


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda: Process("ggH", -3.0, labels=(0,)), "nominal_yield must be > 0"),
        (lambda: Process("ggH", 3.0), "no fold-file labels"),
        (lambda: Process("ggH", None, labels=(0,)), "no nominal_yield"),
        (lambda: Process("ggH", 3.0, labels=(0,), role="sgnl"), "role must be"),
        (lambda: Process("bad name", 3.0, labels=(0,)), "process name"),
        (lambda: Systematic("x", "norm", ("ggH",)), "needs kappa_up"),
        (lambda: Systematic("x", "norm", ("ggH",), kappa_up=-1.1), "must be > 0"),
        (lambda: Systematic("x", "inputs", ("ggH",), kappa_up=1.1), "takes no kappa"),
        (lambda: Systematic("x", "shape", ("ggH",)), "kind must be one of"),
        (lambda: Systematic("x", "inputs", ("ggH",), shifts=(InputShift("pt", scale=0.1),)), "takes no input shifts"),
        (lambda: InputShift("pt"), "changes nothing"),
        (lambda: FixedChannel("cr", {"ttbar": (1.0, -2.0)}), "channel 'cr', process 'ttbar': yields must be >= 0"),
        (lambda: FixedChannel("cr", {"ttbar": (1.0, float("nan"))}), "must be finite"),
        (lambda: FixedChannel("cr", {"ttbar": (1.0, 0.0)}), r"bin\(s\) \[1\] have no expected events"),
        (lambda: FixedChannel("cr", {"ttbar": (1.0, 2.0)}, mc_uncertainty={"ztt": (1.0, 1.0)}), "without yields"),
        (lambda: FixedChannel("cr", {"ttbar": (1.0, 2.0), "ztt": (1.0,)}), "must have 2 values"),
        (lambda: NormFactor("mu", ()), "multiplies no process"),
        (lambda: NormFactor("mu", ("ggH",), bounds=(2.0, 5.0)), "must contain nominal"),
        (lambda: Objective("variance", weights=(1.0,)), "takes no weights"),
        (lambda: Objective("logdet"), "objective must be one of"),
    ],
)
def test_bad_parts_are_named(make, message):
    with pytest.raises(InvalidModelSpecError, match=message):
        make()


def test_bad_json_is_named():
    with pytest.raises(InvalidModelSpecError, match="does not parse"):
        Analysis.from_json("{not json")
    d = make_analysis().to_dict()
    d["version"] = 99
    with pytest.raises(InvalidModelSpecError, match="version 99"):
        Analysis.from_dict(d)
    d = make_analysis().to_dict()
    d["colour"] = "red"
    with pytest.raises(InvalidModelSpecError, match="unknown analysis field"):
        Analysis.from_dict(d)


def test_label_owned_by_two_processes():
    with pytest.raises(InvalidModelSpecError, match="target label 0 belongs to both 'a' and 'b'"):
        Analysis(processes=(Process("a", 1.0, labels=(0,)), Process("b", 1.0, labels=(0, 1))),
                 factors=(NormFactor("mu", ("a",)),))


def test_stored_column_of_fold_file_systematics():
    assert Systematic("jes", "inputs", ("ztt",)).stored_column == "jes"  # default: the systematic's name
    assert Systematic("pu", "weights", ("ztt",), column="pileup").stored_column == "pileup"
    with pytest.raises(InvalidModelSpecError, match="'lumi' of kind 'norm' reads no fold-file column"):
        Systematic("lumi", "norm", ("ztt",), kappa_up=1.02).stored_column
