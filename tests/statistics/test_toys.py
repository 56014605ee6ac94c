"""Pseudo-experiments: randomised auxiliary measurements, toy fits against closed forms and pyhf, coverage."""

import numpy as np
import pytest
import torch
from scipy.optimize import minimize_scalar

from lumin_inferno.exceptions import InvalidModelSpecError
from lumin_inferno.statistics import (COVERAGE_LEVELS, NormSystematic, Parameter, ShapeSystematic, StatError,
                                      TemplateModel, coverage_fraction, fit_toy, fit_toys, nll_hessian, sample_toys)
from tests.statistics.test_hessian import counting

D = torch.float64


def test_with_auxdata_moves_only_the_constraint_centres():
    m = counting(50.0, 1000.0, sigma_b=40.0)
    theta = torch.tensor([60.0, 990.0], dtype=D)
    moved = m.with_auxdata(torch.tensor([0.0, 1030.0], dtype=D))
    assert float(moved.constraint_nll(theta)) == pytest.approx(0.5 * ((990.0 - 1030.0) / 40.0) ** 2)
    assert torch.equal(moved.expected(theta), m.expected(theta))  # the main measurement is unchanged
    assert float(m.constraint_nll(theta)) == pytest.approx(0.5 * (10.0 / 40.0) ** 2)  # the original is untouched
    assert float(moved.detached().constraint_nll(theta)) == pytest.approx(0.5)  # fits detach the model first
    with pytest.raises(InvalidModelSpecError, match="one value per parameter"):
        m.with_auxdata(torch.tensor([1.0], dtype=D))


def test_sample_toys_poisson_and_gaussian_moments():
    m = counting(50.0, 1000.0, sigma_b=40.0)
    obs, aux = sample_toys(m, 20000, generator=torch.Generator().manual_seed(1))
    assert obs.shape == (20000, 1) and aux.shape == (20000, 2)
    assert float(obs.mean()) == pytest.approx(1050.0, abs=4 * np.sqrt(1050 / 20000))
    assert float(obs.var()) == pytest.approx(1050.0, rel=0.05)
    assert torch.all(aux[:, 0] == 50.0)  # the unconstrained POI has no auxiliary measurement
    assert float(aux[:, 1].std()) == pytest.approx(40.0, rel=0.03)
    _, fixed = sample_toys(m, 10, randomise=[])
    assert torch.all(fixed[:, 1] == 1000.0)
    with pytest.raises(InvalidModelSpecError, match="unknown parameter"):
        sample_toys(m, 10, randomise=["nope"])


def test_counting_toy_fit_matches_closed_form():
    # one bin, s free, b constrained around its auxiliary measurement a: NLL(s, b) = Poisson(n | s + b) + ½((b-a)/σ)².
    # Unconditional: ŝ = n − a, b̂ = a. Conditional at s = s0: b̂̂ minimises a 1-D function.
    m = counting(50.0, 1000.0, sigma_b=40.0)
    n, a, s0 = 1113.0, 1021.0, 50.0
    r = fit_toy(m, torch.tensor([n], dtype=D), torch.tensor([50.0, a], dtype=D), {"s": s0})
    assert r.error is None
    assert r.best["s"] == pytest.approx(n - a, abs=1e-4)
    assert r.sigma["s"] == pytest.approx(np.sqrt(n + 40.0**2), rel=1e-6)  # Hessian at the minimum: ν = n

    def nll(b, s=s0):
        nu = s + b
        return nu - n * np.log(nu) + 0.5 * ((b - a) / 40.0) ** 2

    cond = minimize_scalar(nll, bounds=(800, 1300), method="bounded", options={"xatol": 1e-10}).fun
    q = 2 * (cond - nll(a, n - a))
    assert r.q["s"] == pytest.approx(q, rel=1e-6)
    assert r.pull("s", s0) == pytest.approx((n - a - s0) / np.sqrt(n + 1600.0), rel=1e-6)


def _pyhf_pair():
    """The same likelihood as a TemplateModel and a pyhf model: signal × μ, background with a histosys, a normsys
    and staterror (all of pyhf's conventions: unit-Gaussian α, γ around 1)."""
    sig = np.array([2.0, 8.0, 15.0])
    bkg = np.array([60.0, 40.0, 20.0])
    up, down = np.array([66.0, 41.0, 17.0]), np.array([55.0, 39.0, 22.0])
    mc = np.array([4.0, 3.5, 3.0])
    spec = {"channels": [{"name": "summary", "samples": [
        {"name": "sig", "data": sig.tolist(), "modifiers": [{"name": "mu", "type": "normfactor", "data": None}]},
        {"name": "bkg", "data": bkg.tolist(), "modifiers": [
            {"name": "shape", "type": "histosys", "data": {"hi_data": up.tolist(), "lo_data": down.tolist()}},
            {"name": "bnorm", "type": "normsys", "data": {"hi": 1.1, "lo": 0.92}},
            {"name": "staterror_summary", "type": "staterror", "data": mc.tolist()}]}]}]}
    t = lambda v, y: torch.tensor(v / y.sum(), dtype=D)  # noqa: E731 — fraction-of-yield templates
    ours = TemplateModel(
        ["sig", "bkg"], torch.stack([t(sig, sig), t(bkg, bkg)]), {"sig": float(sig.sum()), "bkg": float(bkg.sum())},
        [Parameter("mu", 1.0, bounds=(-5.0, 10.0)), Parameter("shape", 0.0, constraint=1.0),
         Parameter("bnorm", 0.0, constraint=1.0)],
        poi="mu", factors={"sig": ["mu"]},
        shape_systematics=[ShapeSystematic("shape", "bkg", t(up, bkg), t(down, bkg))],
        norm_systematics=[NormSystematic("bnorm", "bkg", 1.1, 0.92)],
        staterror=StatError(["bkg"], torch.tensor(mc[None], dtype=D)))
    return ours, spec


def test_toy_fit_equals_pyhf_on_the_same_toy():
    pyhf = pytest.importorskip("pyhf")
    pyhf.set_backend("numpy", pyhf.optimize.scipy_optimizer(tolerance=1e-10))
    ours, spec = _pyhf_pair()
    pdf = pyhf.Model(spec, poi_name="mu", modifier_settings={"normsys": {"interpcode": "code4"},
                                                            "histosys": {"interpcode": "code4p"}})
    obs, aux = sample_toys(ours, 3, generator=torch.Generator().manual_seed(7))
    names = ours.parameter_names
    for k in range(3):
        # pyhf's auxdata in its own order: α's around 0 in σ units (ours have θ⁰ = 0, σ = 1), γ's around 1
        pyhf_aux = []
        for par in pdf.config.auxdata_order:
            if par == "staterror_summary":
                pyhf_aux += [float(aux[k, names.index(f"staterror_summary[{i}]")]) for i in range(3)]
            else:
                pyhf_aux.append(float(aux[k, names.index(par)]))
        data = np.concatenate([obs[k].numpy(), pyhf_aux])
        free = pyhf.infer.mle.fit(data, pdf, return_fitted_val=True)
        cond = pyhf.infer.mle.fixed_poi_fit(1.0, data, pdf, return_fitted_val=True)
        q_pyhf = float(cond[1] - free[1])  # twice_nll difference
        mine = fit_toy(ours, obs[k], aux[k])
        assert mine.error is None
        assert mine.q["mu"] == pytest.approx(q_pyhf, rel=2e-3, abs=1e-4)
        assert mine.best["mu"] == pytest.approx(float(free[0][pdf.config.poi_index]), rel=1e-3, abs=1e-4)


def _norm_dominated():
    """σ(s) dominated by a 8 % background normalisation the data hardly constrain, plus a shape nuisance: toys whose
    auxiliary data are not randomised over-cover clearly."""
    sig = torch.tensor([0.1, 0.3, 0.6], dtype=D)
    bkg = torch.tensor([0.5, 0.3, 0.2], dtype=D)
    tilt = torch.tensor([-0.08, 0.0, 0.08], dtype=D)
    return TemplateModel(["sig", "bkg"], torch.stack([sig, bkg]), {"sig": "s", "bkg": 2000.0},
                         [Parameter("s", 200.0), Parameter("r", 0.0, constraint=1.0), Parameter("k", 0.0, constraint=1.0)],
                         poi="s", shape_systematics=[ShapeSystematic("r", "bkg", bkg + tilt, bkg - tilt)],
                         norm_systematics=[NormSystematic("k", "bkg", 1.08, 0.92)])


def test_batched_toy_fits_equal_one_at_a_time_fits():
    for model in (_norm_dominated(), _pyhf_pair()[0]):
        obs, aux = sample_toys(model, 30, generator=torch.Generator().manual_seed(11))
        batched = fit_toys(model, obs, aux)
        p = model.poi
        for k in range(0, 30, 3):
            single = fit_toy(model, obs[k], aux[k])
            assert batched[k].error is None and single.error is None
            assert batched[k].q[p] == pytest.approx(single.q[p], abs=1e-7)
            assert batched[k].best[p] == pytest.approx(single.best[p], abs=1e-4 * single.sigma[p])
            assert batched[k].sigma[p] == pytest.approx(single.sigma[p], rel=1e-5)
    with pytest.raises(InvalidModelSpecError, match="observed must be"):
        fit_toys(_norm_dominated(), torch.ones(4, 5, dtype=D))


def test_coverage_of_profile_intervals_is_nominal_and_fixed_auxdata_overcovers():
    m = _norm_dominated()
    n = 600
    results = {}
    for label, randomise in (("randomised", None), ("fixed", [])):
        obs, aux = sample_toys(m, n, generator=torch.Generator().manual_seed(5), randomise=randomise)
        fits = fit_toys(m, obs, aux)
        assert not any(f.error for f in fits)
        results[label] = (np.array([f.q["s"] for f in fits]), np.array([f.pull("s", 200.0) for f in fits]))
    q, pulls = results["randomised"]
    for level, c in COVERAGE_LEVELS.items():
        cov = coverage_fraction(q, c)
        target = {"68%": 0.6827, "95%": 0.95}[level]
        assert cov.n == n
        assert abs(cov.fraction - target) < 3 * np.sqrt(target * (1 - target) / n), level
    assert abs(pulls.mean()) < 3 / np.sqrt(n) and abs(pulls.std() - 1) < 0.1
    over = coverage_fraction(results["fixed"][0], COVERAGE_LEVELS["68%"])
    assert over.fraction > 0.6827 + 6 * np.sqrt(0.6827 * 0.3173 / n)  # the test can tell a wrong toy ensemble


def test_coverage_fraction_binomial_interval_and_failed_toys():
    cov = coverage_fraction([0.1, 0.5, 2.0, np.nan], 1.0)
    assert (cov.covered, cov.n) == (2, 3)
    assert cov.low < 2 / 3 < cov.high
    assert np.isnan(coverage_fraction([np.nan], 1.0).fraction)


def _weak_signal():
    """μ ∈ [0, 10] on a 10-event signal over 200 background events: a quarter of the toys fit μ̂ at the bound 0."""
    sig = torch.tensor([0.2, 0.3, 0.5], dtype=D)
    bkg = torch.tensor([0.5, 0.3, 0.2], dtype=D)
    return TemplateModel(["sig", "bkg"], torch.stack([sig, bkg]), {"sig": 10.0, "bkg": 200.0},
                         [Parameter("mu", 1.0, bounds=(0.0, 10.0)), Parameter("k", 0.0, constraint=1.0)], poi="mu",
                         factors={"sig": ["mu"]}, norm_systematics=[NormSystematic("k", "bkg", 1.08, 0.92)])


def test_hessian_at_a_signal_strength_near_zero():
    # torch.prod's backward divided by the product: ∂²NLL/∂μ² came out 0 at μ = 1e-17 (review of issue 16's toys)
    m = _weak_signal()
    obs = m.expected(torch.tensor([0.0, 0.0], dtype=D)).detach()
    theta = torch.tensor([3.66e-17, 0.998], dtype=D)
    exact = torch.func.hessian(lambda t: m.nll(t, obs))(theta)
    assert torch.allclose(nll_hessian(m, obs, theta), exact, rtol=1e-10)
    assert float(exact[0, 0]) > 0.1


def test_toys_at_the_bound_are_fitted_not_failed():
    m = _weak_signal()
    obs, aux = sample_toys(m, 60, generator=torch.Generator().manual_seed(2))
    batched = fit_toys(m, obs, aux)
    at_bound = [k for k, f in enumerate(batched) if f.best["mu"] < 1e-9]
    assert len(at_bound) >= 5 and not any(f.error for f in batched)
    for k in at_bound[:5]:
        single = fit_toy(m, obs[k], aux[k])
        assert single.error is None
        assert batched[k].sigma["mu"] == pytest.approx(single.sigma["mu"], rel=1e-6)
        assert batched[k].q["mu"] == pytest.approx(single.q["mu"], abs=1e-7)


def test_toys_of_a_model_with_only_the_poi():
    m = counting(50.0, 1000.0)  # nothing to profile: the conditional fit has no free parameter
    obs, aux = sample_toys(m, 5, generator=torch.Generator().manual_seed(4))
    for b, k in zip(fit_toys(m, obs, aux), range(5)):
        s = fit_toy(m, obs[k], aux[k])
        assert b.error is None and b.q["s"] == pytest.approx(s.q["s"], abs=1e-8)
    with pytest.raises(InvalidModelSpecError, match="one value per bin"):
        fit_toy(m, torch.tensor([1.0, 2.0], dtype=D))


def test_toys_fitted_one_by_one_when_vmap_cannot_batch(monkeypatch):
    import lumin_inferno.statistics.toys as toys

    def cannot(*args, **kwargs):
        raise RuntimeError("vmap: an operation without a batching rule")

    m = _norm_dominated()
    obs, aux = sample_toys(m, 4, generator=torch.Generator().manual_seed(9))
    monkeypatch.setattr(toys, "_batched_newton", cannot)
    for k, f in enumerate(fit_toys(m, obs, aux)):
        assert f.error is None and f.q["s"] == pytest.approx(fit_toy(m, obs[k], aux[k]).q["s"], abs=1e-12)
