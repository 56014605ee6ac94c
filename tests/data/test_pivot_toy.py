"""The pivot toy: distributions as in the paper, fold files carrying the nuisance column."""

import numpy as np
import pytest
from lumin.nn.data.fold_yielder import FoldYielder

from lumin_inferno.data.pivot_toy import NUISANCE, SIGNAL_COV, TOY_FEATURES, sample_pivot_toy, write_pivot_toy_foldfile


def test_sample_distributions():
    df = sample_pivot_toy(20000, 20000, seed=0)
    sig, bkg = df[df.gen_target == 1], df[df.gen_target == 0]
    assert len(sig) == len(bkg) == 20000 and df.gen_weight.eq(1).all()
    assert np.allclose(sig[TOY_FEATURES].mean(), [0, 0], atol=0.03)
    assert np.allclose(np.cov(sig[TOY_FEATURES].values.T), SIGNAL_COV, atol=0.04)
    assert np.allclose(df[NUISANCE].agg(["mean", "std"]), [0, 1], atol=0.03)
    # background: x0 ~ N(1, 1) independent of z; x1 - z ~ N(1, 1); so x1 has variance 2 and cov(x1, z) = 1
    assert np.allclose(bkg[TOY_FEATURES].mean(), [1, 1], atol=0.03)
    assert np.cov(bkg.x1, bkg.z)[0, 1] == pytest.approx(1.0, abs=0.04)
    assert abs(np.cov(bkg.x0, bkg.z)[0, 1]) < 0.03 and abs(np.cov(sig.x1, sig.z)[0, 1]) < 0.03
    fixed = sample_pivot_toy(5000, 5000, z=1.0, seed=1)
    assert fixed[NUISANCE].eq(1.0).all()
    assert fixed[fixed.gen_target == 0].x1.mean() == pytest.approx(2.0, abs=0.05)
    assert sample_pivot_toy(10, 10, seed=3).equals(sample_pivot_toy(10, 10, seed=3))


def test_foldfile(tmp_path):
    path = write_pivot_toy_foldfile(tmp_path / "toy" / "train", n_per_class=600, n_folds=3, seed=2)
    assert path == (tmp_path / "toy" / "train.hdf5").resolve() and path.exists()
    fy = FoldYielder(path)
    assert fy.n_folds == 3 and fy.cont_feats == TOY_FEATURES and NUISANCE in fy.columns()
    for i in range(3):
        fold = fy.get_fold(i)
        z = fy.get_column(NUISANCE, fold_idx=i)
        assert len(z) == len(fold["inputs"]) == 400
        assert fold["targets"].mean() == pytest.approx(0.5, abs=0.01)  # stratified
    # the z column is row-aligned with the inputs: background x1 - z ~ N(1, 1), signal x1 unrelated to z
    df = fy.get_df(inc_inputs=True, verbose=False, suppress_warn=True)
    z = np.concatenate([fy.get_column(NUISANCE, fold_idx=i) for i in range(3)])
    bkg = df.gen_target.values == 0
    assert np.corrcoef(df.x1.values[bkg], z[bkg])[0, 1] > 0.6
