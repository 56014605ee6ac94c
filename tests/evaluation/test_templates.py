"""Hard-assigned templates and expected uncertainties against closed forms."""

import numpy as np
import pytest

from lumin_inferno import EmptyProcessError, TargetShapeError
from lumin_inferno.data import paper_benchmark
from lumin_inferno.data.paper import FEATURES, sample_paper, standardise
from lumin_inferno.evaluation import analysis_template_model, argmax_bins, hard_templates, uniform_bins
from lumin_inferno.statistics import expected_poi_uncertainty

S0 = 50.0  # the paper's signal yield: σ(s) = 50 σ(μ)


def _model(bins, x, y, w, n_bins, k, transform=True):
    bm = paper_benchmark(k)
    return analysis_template_model(bm.analysis(n_bins, kind="transform"), bins, x, y, w,
                                   bm.transform() if transform else None)


def test_binning_helpers():
    assert list(uniform_bins(np.array([0.0, 0.05, 0.1, 0.999, 1.0]), 10)) == [0, 0, 1, 9, 9]
    assert list(argmax_bins(np.array([[0.1, 0.9], [0.8, 0.2]]))) == [1, 0]
    sig, bkg = hard_templates(np.array([0, 1, 1, 2]), np.array([1, 1, 0, 0]), np.array([1.0, 3.0, 1.0, 1.0]), 3)
    assert np.allclose(sig, [0.25, 0.75, 0]) and np.allclose(bkg, [0, 0.5, 0.5])
    with pytest.raises(EmptyProcessError, match="no signal"):
        hard_templates(np.array([0, 1]), np.array([0, 0]), None, 2)


def _sample(n=4000):
    df = standardise(sample_paper(n, n, seed=4))
    return df[FEATURES].values.astype(np.float32), df.gen_target.values, df.gen_weight.values


def test_one_bin_gives_sqrt_s_plus_b():
    x, y, w = _sample()
    from lumin_inferno.analysis import Analysis, NormFactor, Process

    one_bin = Analysis(processes=(Process("signal", 50.0, labels=(1,)), Process("background", 1000.0, labels=(0,))),
                       factors=(NormFactor("mu", ("signal",)),), n_bins=2, mc_stat=False)
    tm = analysis_template_model(one_bin, lambda a: np.zeros(len(a), dtype=int), x, y, w)  # bin 1 stays empty
    assert S0 * expected_poi_uncertainty(tm, method="hessian") == pytest.approx(np.sqrt(1050), rel=1e-5)
    assert S0 * expected_poi_uncertainty(tm, method="profile") == pytest.approx(np.sqrt(1050), rel=3e-3)


def test_perfect_separation_gives_sqrt_s():
    x, y, w = _sample()
    truth = dict(zip(map(bytes, x), y))  # an oracle binning by label
    tm = _model(lambda a: np.array([truth[bytes(r)] for r in a]), x, y, w, 2, 0)
    assert S0 * expected_poi_uncertainty(tm, method="hessian") == pytest.approx(np.sqrt(50), rel=1e-4)


def test_shape_nuisance_inflates_uncertainty_and_needs_its_transform():
    x, y, w = _sample(20_000)
    bins = lambda a: uniform_bins(1 / (1 + np.exp(-(-a[:, 0] * 2.2 - 2.0 + 0.5 * a[:, 2]))), 10)  # noqa: E731
    s0 = expected_poi_uncertainty(_model(bins, x, y, w, 10, 0), method="hessian")
    s1 = expected_poi_uncertainty(_model(bins, x, y, w, 10, 1), method="hessian")
    assert s1 > s0 * 1.05
    from lumin_inferno import ConfigurationError

    with pytest.raises(ConfigurationError, match=r"exact systematic\(s\) \['r'\] need their input transform"):
        _model(bins, x, y, w, 10, 1, transform=False)


def test_align_bins_recovers_a_permutation_and_ensembles_average_aligned_bins():
    from lumin_inferno.evaluation import align_bins, aligned_mean_probs

    rng = np.random.default_rng(0)
    logits = rng.normal(size=(2000, 6))
    ref = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    perm = rng.permutation(6)
    other = ref[:, np.argsort(perm)]  # the same model with its bins relabelled
    found = align_bins(ref, other)
    assert np.array_equal(other[:, found], ref)
    # averaging aligned outputs keeps the bins; averaging unaligned ones would scramble them
    mean = aligned_mean_probs([ref, other])
    assert np.allclose(mean, ref)
    assert (np.mean([ref, other], axis=0).argmax(1) == ref.argmax(1)).mean() < 0.9
    with pytest.raises(TargetShapeError):
        align_bins(ref, ref[:, :5])
