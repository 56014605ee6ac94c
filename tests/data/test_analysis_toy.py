"""The analysis-scale toy: its Analysis, its densities against its samples, its limit against an independent
computation, its fold files."""

import math

import numpy as np
import pytest
import torch
from lumin.nn.data.fold_yielder import FoldYielder
from scipy.stats import norm

from lumin_inferno.analysis import Analysis
from lumin_inferno.data.analysis_toy import FEATURES, analysis_toy
from lumin_inferno.data.systematics import systematics_info

D = torch.float64
TOY = analysis_toy()


def _theta(**values):
    names = [p.name for p in TOY.parameters()]
    theta = torch.tensor([p.nominal for p in TOY.parameters()], dtype=D)
    for k, v in values.items():
        theta[names.index(k)] = v
    return theta


@pytest.fixture(scope="module")
def nominal_sample():
    df, shifted, weights = TOY.sample(20_000, seed=3)
    return df, shifted, weights


def test_the_analysis_has_two_pois_a_control_region_and_every_kind_of_systematic():
    for kind in ("inputs", "transform"):
        a = TOY.analysis(kind=kind)
        assert a.poi_names == ["mu_ggH", "mu_qqH"] and [c.name for c in a.channels] == ["ttbar_cr"]
        kinds = [s.kind for s in a.systematics]
        assert len(kinds) >= 20 and {"weights", "norm", kind} == set(kinds)
        assert Analysis.from_json(a.to_json()) == a
    assert TOY.analysis(objective="variance").objective_pois == ["mu_ggH"]


def test_intensity_is_normalised_as_the_systematics_say(nominal_sample):
    """∫ν(x|θ)dx = Σ_i w_i ν(x_i|θ)/ν(x_i|θ⁰) by importance sampling on the nominal events (weights y_p/n): a
    scale shift keeps every yield, a weight shift changes it by δ α E[tanh], a normalisation by κ^α."""
    df, _, _ = nominal_sample
    x = torch.as_tensor(df[list(FEATURES)].to_numpy(), dtype=D)
    w = torch.as_tensor(df["weight"].to_numpy(), dtype=D)
    n0 = sum(p.nominal_yield for p in TOY.processes)
    nu0 = TOY.intensity(x, _theta())

    def integral(theta):
        return float((w * TOY.intensity(x, theta) / nu0).sum())

    assert integral(_theta()) == pytest.approx(n0, rel=1e-12)
    assert integral(_theta(jes=1.0, tes=-1.0)) == pytest.approx(n0, rel=5e-3)
    ws = TOY.weight_shifts[2]  # ps_isr: 60 + 25 signal events × (1 + 0.06 E[tanh((m_jj - 400)/200)])
    e_tanh = {lab: float(np.mean(norm.expect(lambda v: np.tanh((v - ws.centre) / ws.width), loc=p.mean[2],
                                             scale=p.width[2]))) for lab, p in ((0, TOY.processes[0]),
                                                                                 (1, TOY.processes[1]))}
    want = n0 + ws.size * (60.0 * e_tanh[0] + 25.0 * e_tanh[1])
    assert integral(_theta(**{ws.name: 1.0})) == pytest.approx(want, rel=2e-3)
    assert integral(_theta(lumi=1.0)) == pytest.approx(n0 + 0.025 * (60 + 25 + 1500 + 400), rel=2e-3)
    assert integral(_theta(mu_qqH=2.0)) == pytest.approx(n0 + 25.0, rel=2e-3)


def test_shifted_copies_follow_the_shifted_density(nominal_sample):
    """E[m_jj] of ttbar at α_jes = +1: importance-weighted from the nominal events with ν(α=1)/ν(0) equals the
    mean of the stored +1σ copies (m_jj × 1.04), and the weight columns equal w (1 ± δ tanh)."""
    df, shifted, weights = nominal_sample
    mask = df["target"].to_numpy() == 3
    x = torch.as_tensor(df.loc[mask, list(FEATURES)].to_numpy(), dtype=D)
    r = TOY.intensity(x, _theta(jes=1.0), only=["ttbar"]) / TOY.intensity(x, _theta(), only=["ttbar"])
    mjj = x[:, FEATURES.index("m_jj")]
    reweighted = float((r * mjj).sum() / r.sum())
    copies = float(shifted["jes"][0].loc[mask, "m_jj"].mean())
    assert copies == pytest.approx(1.04 * float(mjj.mean()), rel=1e-12)
    assert reweighted == pytest.approx(copies, rel=3e-3)
    # unaffected process and feature keep their nominal values
    qcd = df["target"].to_numpy() == 4
    assert np.array_equal(shifted["tes"][0].loc[qcd, "tau_pt"], df.loc[qcd, "tau_pt"])
    assert np.array_equal(shifted["jes"][1]["tau_pt"], df["tau_pt"])
    up, down = weights["top_pt"]
    g = np.tanh((df["tau_pt"].to_numpy() - 70.0) / 30.0)
    np.testing.assert_allclose(up[mask], df["weight"].to_numpy()[mask] * (1 + 0.1 * g[mask]))
    np.testing.assert_allclose(down[~mask], df["weight"].to_numpy()[~mask])


def test_stat_only_fisher_block_against_an_independent_computation(nominal_sample):
    """The (μ_ggH, μ_qqH, k_ttbar) block: I_ab = ∫ ∂_a ν ∂_b ν / ν = Σ_p y_p E_p[(∂_a ν)(∂_b ν)/ν²] with scipy's
    Gaussian densities, plus the control region's Σ_bins ∂ν ∂ν / ν."""
    n = 20_000
    info = TOY.fisher_information(n, seed=5)[:3, :3]
    df, _, _ = TOY.sample(n, seed=5)
    x = df[list(FEATURES)].to_numpy()
    dens = {p.name: p.nominal_yield * norm.pdf(x, p.mean, p.width).prod(axis=1) for p in TOY.processes}
    nu = sum(dens.values())
    grads = np.stack([dens["ggH"], dens["qqH"], dens["ttbar"]], axis=1) / nu[:, None]  # ∂ log ν / ∂(μ, μ, k)
    want = np.zeros((3, 3))
    for p in TOY.processes:
        sel = df["target"].to_numpy() == p.label
        want += p.nominal_yield * grads[sel].T @ grads[sel] / sel.sum()
    cr = TOY.control_region["yields"]
    total = sum(np.asarray(v) for v in cr.values())
    want[2, 2] += float((np.asarray(cr["ttbar"]) ** 2 / total).sum())
    np.testing.assert_allclose(info.numpy(), want, rtol=1e-10)


def test_limit_with_systematics_is_above_stat_only_and_has_an_error():
    lim = TOY.limit(5_000, n_splits=2, seed=1)
    info = TOY.fisher_information(5_000, seed=1)
    stat = torch.linalg.inv(info[:3, :3]).diagonal().sqrt()
    assert lim.sigma["mu_ggH"] > 1.1 * float(stat[0]) and lim.sigma["mu_qqH"] > float(stat[1])
    assert all(0 < e < 0.05 * lim.sigma[k] for k, e in lim.sigma_error.items())
    assert lim == TOY.limit(5_000, n_splits=2, seed=1)  # same seed, same numbers
    assert -1 < lim.correlation < 1 and math.isfinite(lim.correlation_error)


def test_fold_files_carry_every_shifted_column_and_the_input_pipe(tmp_path):
    train, test, pipe = TOY.write_foldfiles(tmp_path, 300, 200, n_folds=3, seed=2)
    fy = FoldYielder(train, input_pipe=TOY.input_pipe(pipe))
    info = systematics_info(fy)
    assert sorted(info.input_systematics) == sorted(s.name for s in TOY.scale_shifts)
    assert sorted(info.weight_systematics) == sorted(s.name for s in TOY.weight_shifts)
    assert fy.n_folds == 3 and FoldYielder(test).n_folds == 1
    x = np.concatenate([fy.get_fold(i)["inputs"] for i in range(3)])
    np.testing.assert_allclose(x.mean(0), 0, atol=1e-5)  # standardised with the training sample
    raw = fy.input_pipe.inverse_transform(x)
    df, _, _ = TOY.sample(300, seed=2)
    np.testing.assert_allclose(np.sort(raw[:, 2]), np.sort(df["m_jj"].to_numpy()), rtol=1e-5, atol=1e-3)  # float32


def test_same_seed_writes_the_same_fold_files_whatever_ran_before(tmp_path):
    import h5py

    contents = []
    for i in range(2):
        np.random.seed(7 + i)  # df2foldfile's fold split draws from numpy's global generator
        train, _, _ = TOY.write_foldfiles(tmp_path / str(i), 150, 60, n_folds=3, seed=2)
        with h5py.File(train, "r") as f:
            contents.append({k: f[k]["inputs"][()] for k in f if k.startswith("fold_")})
    assert sorted(contents[0]) == sorted(contents[1]) == ["fold_0", "fold_1", "fold_2"]
    assert all(np.array_equal(contents[0][k], contents[1][k]) for k in contents[0])
