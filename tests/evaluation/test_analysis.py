"""Hard-assigned templates of an Analysis from a fold file with shifted inputs and weights: closed-form
histograms, Σw² MC statistics, and the exported workspace giving the same σ as our fit."""

import numpy as np
import pandas as pd
import pytest

from lumin_inferno.analysis import Analysis, FixedChannel, NormFactor, Process, Systematic
from lumin_inferno.data.systematics import write_systematics_foldfile
from lumin_inferno.evaluation.analysis import foldfile_template_model, hard_summary_templates
from lumin_inferno.statistics import expected_poi_uncertainties
from lumin_inferno.exceptions import EmptyProcessError, FoldFileError, TargetShapeError
from lumin_inferno.export.pyhf import pyhf_modifier_settings, pyhf_workspace, pyhf_poi_uncertainty

FEATS = ["x0", "x1"]
N_BINS = 4
ANALYSIS = Analysis(
    processes=(Process("sig", 60.0, labels=(2,), role="signal"), Process("bkg_a", 500.0, labels=(0,)),
               Process("bkg_b", 300.0, labels=(1,))),
    factors=(NormFactor("mu", ("sig",)), NormFactor("k_b", ("bkg_b",), poi=False)),
    systematics=(Systematic("jes", "inputs", ("sig", "bkg_a", "bkg_b")), Systematic("pdf", "weights", ("bkg_a",)),
                 Systematic("xs_a", "norm", ("bkg_a",), kappa_up=1.1)),
    channels=(FixedChannel("cr", {"bkg_b": (150.0, 90.0), "bkg_a": (10.0, 5.0)},
                           mc_uncertainty={"bkg_b": (8.0, 6.0)}),),
    n_bins=N_BINS,
)


def bin_function(x: np.ndarray) -> np.ndarray:
    """A fixed 'summary': quartiles of x0 + 0.5 x1."""
    s = x[:, 0] + 0.5 * x[:, 1]
    return np.digitize(s, [-0.7, 0.0, 0.7]).astype(np.int64)


@pytest.fixture(scope="module")
def events():
    rng = np.random.default_rng(0)
    means = {0: (0.8, 0.0), 1: (-0.8, 0.5), 2: (0.0, -0.8)}
    df = pd.concat([pd.DataFrame(rng.normal(m, 1.0, (1500, 2)).astype(np.float32), columns=FEATS).assign(label=k)
                    for k, m in means.items()]).sample(frac=1.0, random_state=1).reset_index(drop=True)
    df["weight"] = rng.uniform(0.5, 1.5, len(df)).astype(np.float32)
    up, down = df.copy(), df.copy()
    up["x0"] *= 1.05
    down["x0"] *= 0.95
    pdf = (df["weight"] * (1 + 0.1 * df["x1"].clip(-2, 2)), df["weight"] * (1 - 0.1 * df["x1"].clip(-2, 2)))
    return df, up, down, pdf


@pytest.fixture(scope="module")
def foldfile(events, tmp_path_factory):
    df, up, down, pdf = events
    return write_systematics_foldfile(tmp_path_factory.mktemp("ev") / "test", df, 1, FEATS, "label",
                                      {"jes": (up, down)}, {"pdf": pdf}, wgt_feat="weight")


def test_templates_are_the_weighted_histograms(events, foldfile):
    df, up, down, pdf = events
    model = foldfile_template_model(ANALYSIS, bin_function, foldfile)
    x, y, w = df[FEATS].to_numpy(), df["label"].to_numpy(), df["weight"].to_numpy(np.float64)
    b = bin_function(x)
    t = hard_summary_templates(ANALYSIS, b, y, w, {"jes": (bin_function(up[FEATS].to_numpy()),
                                                            bin_function(down[FEATS].to_numpy()))},
                               {"pdf": (pdf[0].to_numpy(), pdf[1].to_numpy())})
    for label, name in ((2, "sig"), (0, "bkg_a"), (1, "bkg_b")):
        m = y == label
        want = np.bincount(b[m], weights=w[m], minlength=N_BINS) / w[m].sum()
        assert np.allclose(t.nominal[name].numpy(), want, rtol=1e-12)
        assert np.allclose(t.mc_variance[name].numpy(), np.bincount(b[m], weights=w[m] ** 2, minlength=N_BINS)
                           / w[m].sum() ** 2, rtol=1e-12)
        bu = bin_function(up[FEATS].to_numpy())
        assert np.allclose(t.shifted[(name, "jes")][0].numpy(),
                           np.bincount(bu[m], weights=w[m], minlength=N_BINS) / w[m].sum(), rtol=1e-12)
    m = y == 0
    want = np.bincount(b[m], weights=pdf[0].to_numpy()[m], minlength=N_BINS) / w[m].sum()
    assert np.allclose(t.shifted[("bkg_a", "pdf")][0].numpy(), want, rtol=1e-6)  # float32 weights on disk
    # the fold-file path gives the same likelihood as the arrays
    nu = model.expected(model.nominal()).detach().numpy()
    assert nu[:N_BINS].sum() == pytest.approx(60.0 + 500.0 + 300.0, rel=1e-5)
    assert np.allclose(nu[N_BINS:], [160.0, 95.0])


def test_sigma_agrees_with_pyhf_on_the_export(foldfile):
    model = foldfile_template_model(ANALYSIS, bin_function, foldfile)
    ours = expected_poi_uncertainties(model)
    theirs = pyhf_poi_uncertainty(pyhf_workspace(ANALYSIS, model),
                                  modifier_settings=pyhf_modifier_settings(ANALYSIS))
    assert set(ours) == {"mu"} and 0 < ours["mu"] < 1
    assert ours["mu"] == pytest.approx(theirs, rel=1e-3)


def test_bad_inputs_are_named(events):
    df = events[0]
    x, y, w = df[FEATS].to_numpy(), df["label"].to_numpy(), df["weight"].to_numpy()
    b = bin_function(x)
    with pytest.raises(TargetShapeError, match=r"nominal bins must be 4500 integers in \[0, 4\)"):
        hard_summary_templates(ANALYSIS, b + 1, y, w)
    with pytest.raises(EmptyProcessError, match="process 'sig'"):
        hard_summary_templates(ANALYSIS, b[y != 2], y[y != 2], w[y != 2])
    with pytest.raises(TargetShapeError, match=r"target value\(s\) \[7\] belong to no process"):
        hard_summary_templates(ANALYSIS, b, np.where(y == 2, 7, y), w)
    with pytest.raises(FoldFileError, match="no shifted-input bins for systematic 'jes'"):
        hard_summary_templates(ANALYSIS, b, y, w)
    neg = w.copy()
    neg[(y == 0) & (b == 0)] = -1.0
    with pytest.raises(EmptyProcessError, match=r"process 'bkg_a' has negative summed weight in bin\(s\) \[0\]"):
        hard_summary_templates(ANALYSIS, b, y, neg)


# ------------------------------------------------------------------------------------------------ merged summaries
def test_merged_summary_of_two_members_beats_both_and_is_one_bin_function(events, foldfile):
    """Two 'members' that each see one feature (quartiles of x0, of x1) combined by merge_summaries on the sample:
    four bins, every event in one of them under nominal and shifted inputs, a σ(μ) below both members' on the same
    likelihood (the control region, weight and norm systematics included), and the MergedSummary a bin function
    that reproduces the merge's table event by event."""
    from lumin_inferno.evaluation import MergedSummary, event_bins, merge_summaries

    df, up, down, pdf = events
    x, y, w = df[FEATS].to_numpy(), df["label"].to_numpy(), df["weight"].to_numpy(np.float64)
    members = [lambda v, c=c: np.digitize(v[:, c], np.quantile(x[:, c], [0.25, 0.5, 0.75])).astype(np.int64)
               for c in (0, 1)]
    shifted_inputs = {"jes": (up[FEATS].to_numpy(), down[FEATS].to_numpy())}
    shifted_weights = {"pdf": (pdf[0].to_numpy(), pdf[1].to_numpy())}
    sample = [event_bins(ANALYSIS, fn, x, y, w, shifted_inputs=shifted_inputs, shifted_weights=shifted_weights)
              for fn in members]
    merged = merge_summaries(ANALYSIS, members, [N_BINS, N_BINS], sample)
    assert isinstance(merged, MergedSummary) and merged.n_bins == N_BINS
    bins = merged(x)
    assert bins.min() >= 0 and bins.max() < N_BINS and len(set(bins.tolist())) == N_BINS
    assert np.array_equal(bins, merged.tables[0][members[0](x) * N_BINS + members[1](x)])

    def sigma(fn):
        tm = event_bins(ANALYSIS, fn, x, y, w, shifted_inputs=shifted_inputs,
                        shifted_weights=shifted_weights).template_model(ANALYSIS)
        return expected_poi_uncertainties(tm, method="hessian")["mu"]

    assert sigma(merged) < min(sigma(fn) for fn in members)


def test_merge_summaries_bad_input_is_named(events):
    from lumin_inferno import ConfigurationError
    from lumin_inferno.evaluation import MergedSummary, event_bins, merge_summaries

    df = events[0]
    x, y = df[FEATS].to_numpy(), df["label"].to_numpy()
    with pytest.raises(ConfigurationError, match="one of each per member"):
        merge_summaries(ANALYSIS, [bin_function], [N_BINS, N_BINS], [])
    plain = Analysis(processes=ANALYSIS.processes, factors=ANALYSIS.factors, n_bins=N_BINS)
    a = event_bins(plain, bin_function, x, y)
    b = event_bins(plain, bin_function, x[:-1], y[:-1])
    with pytest.raises(ConfigurationError, match="member 1's EventBins must be of the same events"):
        merge_summaries(plain, [bin_function, bin_function], [N_BINS, N_BINS], [a, b])
    with pytest.raises(TargetShapeError, match=r"member 1's bins must be integers in \[0, 3\)"):
        merge_summaries(plain, [bin_function, bin_function], [N_BINS, 3], [a, a])
    def halves(v):
        return (bin_function(v) >= 2).astype(np.int64)

    two = event_bins(plain, halves, x, y)
    with pytest.raises(ConfigurationError, match="4 cells, fewer than n_bins = 5"):
        merge_summaries(plain, [halves, halves], [2, 2], [two, two], n_bins=5)
    merged = merge_summaries(plain, [bin_function, bin_function], [N_BINS, N_BINS], [a, a])
    wrong = MergedSummary([lambda v: np.full(len(v), N_BINS), bin_function], [N_BINS, N_BINS], merged.tables)
    with pytest.raises(TargetShapeError, match=r"member 0's bins must be integers in \[0, 4\)"):
        wrong(x)  # bin 4 of 4 would read the next row's cells


def test_merge_keeps_the_variance_of_the_objectives_poi(events):
    """Two POIs (μ on the signal, k_b on bkg_b): merged for Var(k_b) the summary has a smaller σ(k_b) than merged
    for Var(μ) (the default objective's first POI), and the other way round for σ(μ), on the sample of the merge."""
    from dataclasses import replace

    from lumin_inferno.analysis import Objective
    from lumin_inferno.evaluation import event_bins, merge_summaries

    df, up, down, pdf = events
    x, y, w = df[FEATS].to_numpy(), df["label"].to_numpy(), df["weight"].to_numpy(np.float64)
    base = Analysis(processes=ANALYSIS.processes,
                    factors=(NormFactor("mu", ("sig",)), NormFactor("k_b", ("bkg_b",), poi=True)),
                    systematics=(Systematic("xs_a", "norm", ("bkg_a",), kappa_up=1.1),), n_bins=N_BINS)
    members = [lambda v, c=c: np.digitize(v[:, c], np.quantile(x[:, c], [0.25, 0.5, 0.75])).astype(np.int64)
               for c in (0, 1)]
    sigmas = {}
    for poi in ("mu", "k_b"):
        a = replace(base, objective=Objective("variance", pois=(poi,)))
        merged = merge_summaries(a, members, [N_BINS, N_BINS], [event_bins(a, fn, x, y, w) for fn in members])
        sigmas[poi] = expected_poi_uncertainties(event_bins(a, merged, x, y, w).template_model(a), method="hessian")
    assert sigmas["k_b"]["k_b"] < sigmas["mu"]["k_b"] and sigmas["mu"]["mu"] < sigmas["k_b"]["mu"]
