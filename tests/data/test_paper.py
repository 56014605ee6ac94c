"""The paper's 3-D problem: densities, nuisance transform, benchmark configurations, fold files."""

import h5py
import numpy as np
import pytest
import torch
from lumin.nn.data.fold_yielder import FoldYielder

from lumin_inferno import InputTransformError, InvalidModelSpecError
from lumin_inferno.data import paper_benchmark, sample_paper
from lumin_inferno.data.paper import FEATURE_SCALE, FEATURE_SHIFT, FEATURES, PaperTransform, standardise


def test_densities_match_the_paper_code():
    df = sample_paper(200_000, 200_000, seed=1)
    sig, bkg = df[df.gen_target == 1], df[df.gen_target == 0]
    # signal mean (0, 0) (the paper text's (1, 1) is an erratum), unit covariance, x2 ~ Exp(rate 2)
    assert sig[["x0", "x1"]].mean().abs().max() < 0.01
    assert np.allclose(sig[["x0", "x1"]].var(), 1.0, atol=0.02)
    assert sig.x2.mean() == pytest.approx(0.5, rel=0.01)
    # background mean (2, 0), variances (5, 9), x2 ~ Exp(rate 3)
    assert bkg.x0.mean() == pytest.approx(2.0, abs=0.02) and abs(bkg.x1.mean()) < 0.03
    assert bkg.x0.var() == pytest.approx(5.0, rel=0.02) and bkg.x1.var() == pytest.approx(9.0, rel=0.02)
    assert bkg.x2.mean() == pytest.approx(1 / 3, rel=0.01)


def test_transform_reproduces_shifted_background():
    """Applying the transform at (r, λ) to nominal background gives the background generated at (r, λ)."""
    nominal = standardise(sample_paper(0, 300_000, seed=2))
    x = torch.tensor(nominal[FEATURES].values)
    mask = torch.ones(len(x), dtype=torch.bool)
    t = PaperTransform()
    shifted = t(x, {"r": torch.tensor(0.7), "lambda": torch.tensor(4.0)}, mask).numpy() * FEATURE_SCALE + FEATURE_SHIFT
    truth = sample_paper(0, 300_000, r=0.7, lam=4.0, seed=3)
    assert shifted[:, 0].mean() == pytest.approx(truth.x0.mean(), abs=0.02)
    assert shifted[:, 2].mean() == pytest.approx(1 / 4.0, rel=0.01)  # rate λ, not λ0²/λ
    assert shifted[:, 2].mean() == pytest.approx(truth.x2.mean(), rel=0.01)
    # only masked events move; the identity at nominal values
    half = torch.arange(len(x)) % 2 == 0
    moved = t(x, {"r": torch.tensor(0.7)}, half)
    assert torch.equal(moved[~half], x[~half]) and not torch.equal(moved[half], x[half])
    assert torch.allclose(t(x, {"r": torch.tensor(0.0), "lambda": torch.tensor(3.0)}, mask), x)


def test_transform_tangents_equal_autograd():
    """PaperTransform.tangents (the closed form the INFERNO callback uses) equals the derivative of the transform."""
    x = torch.tensor(standardise(sample_paper(0, 500, seed=4))[FEATURES].values)
    mask = torch.ones(len(x), dtype=torch.bool)
    t = PaperTransform()
    nominal = torch.tensor([0.0, 3.0], dtype=x.dtype)
    jac = torch.func.jacfwd(lambda a: t(x, {"r": a[0], "lambda": a[1]}, mask))(nominal)  # [n, 3, 2]
    assert torch.allclose(t.tangents(x, ["r", "lambda"]), jac.permute(2, 0, 1), rtol=1e-6, atol=1e-7)
    assert torch.allclose(t.tangents(x, ["lambda"])[0], jac[..., 1], rtol=1e-6, atol=1e-7)
    with pytest.raises(InputTransformError, match="no nuisance 'mu'"):
        t.tangents(x, ["mu"])


def test_benchmarks():
    assert [p.name for p in paper_benchmark(0).shape_nuisances] == []
    assert [p.name for p in paper_benchmark(1).shape_nuisances] == ["r"]
    b2 = paper_benchmark(2)
    assert [(p.name, p.constraint) for p in b2.shape_nuisances] == [("r", None), ("lambda", None)]
    b3 = paper_benchmark(3)
    assert [(p.name, p.nominal, p.constraint) for p in b3.shape_nuisances] == [("r", 0.0, 0.4), ("lambda", 3.0, 1.0)]
    assert b3.background == 1000.0
    b4 = paper_benchmark(4)
    assert (b4.background.name, b4.background.nominal, b4.background.constraint) == ("b", 1000.0, 100.0)
    assert (b4.poi.name, b4.poi.nominal) == ("s", 50.0)
    with pytest.raises(InvalidModelSpecError, match="benchmarks 0-4"):
        paper_benchmark(5)


def test_foldfiles_are_lumin_fold_files(paper_foldfiles):
    train, test = paper_foldfiles
    fy = FoldYielder(train)
    assert fy.n_folds == 3 and fy.cont_feats == FEATURES
    fold = fy.get_fold(1)
    assert fold["inputs"].shape == (2000, 3) and fold["targets"].shape == (2000, 1)
    assert fold["targets"].mean() == pytest.approx(0.5)  # stratified
    with h5py.File(test, "r") as f:
        assert list(f.keys()) == ["fold_0", "meta_data"]
        assert f["fold_0/inputs"].shape == (8000, 3)
    assert FoldYielder(test).get_fold(0)["targets"][:100].std() > 0  # shuffled, not sorted by class


@pytest.mark.parametrize("k", [0, 1, 2, 3, 4])
def test_analytic_limit_reproduces_paper_table(k):
    from lumin_inferno.data.paper import analytic_limit
    from lumin_inferno.studies.paper import PAPER_RESULTS

    # 300k events per class: MC precision ~0.2 %; the paper's row came from its 200k validation sample.
    assert analytic_limit(k, n_per_class=300_000, seed=3) == pytest.approx(PAPER_RESULTS[k]["analytic"], rel=0.005)


def _folds(path) -> list:
    with h5py.File(path, "r") as f:
        return [(k, f[k]["inputs"][()]) for k in sorted(f) if k.startswith("fold_")]


def test_same_seed_writes_the_same_folds_whatever_ran_before(tmp_path):
    # LUMIN's df2foldfile draws its stratified fold split from numpy's global generator
    from lumin_inferno.data import write_paper_foldfiles

    files = []
    for i in range(2):
        np.random.seed(100 + i)  # another state of the global generator before each call
        files.append(write_paper_foldfiles(tmp_path / str(i), 300, 200, n_folds=3, seed=4))
    for a, b in zip(*files):
        fa, fb = _folds(a), _folds(b)
        assert [k for k, _ in fa] == [k for k, _ in fb] and len(fa) == (3 if a.name == "train.hdf5" else 1)
        assert all(np.array_equal(x, y) for (_, x), (_, y) in zip(fa, fb))
