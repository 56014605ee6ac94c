"""Property-based tests (hypothesis) of the statistics core on random valid models: what must hold for every
binned likelihood, not only for the hand-made ones of the other tests."""

import numpy as np
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lumin_inferno.statistics import (NormSystematic, Parameter, ShapeSystematic, TemplateModel, fisher_information,
                                      nll_hessian, poi_variance)

D = torch.float64
# derandomize: the same examples on every run (CI must not turn red by chance); database=None: no .hypothesis/ folder
SETTINGS = settings(max_examples=25, deadline=None, derandomize=True, database=None,
                    suppress_health_check=[HealthCheck.too_slow])


@st.composite
def models(draw):
    """(spec, builder): a random analysis of 2–4 processes over 2–8 bins, signal strength μ on process 0, 0–2 shape
    and 0–2 normalisation systematics on random processes; ``builder(scale, perm, systematics)`` makes the model with
    yields × scale, bins permuted by ``perm``, with or without the systematics."""
    n_proc = draw(st.integers(2, 4))
    n_bins = draw(st.integers(2, 8))
    positive = st.floats(0.05, 1.0)
    raw = np.array(draw(st.lists(positive, min_size=n_proc * n_bins, max_size=n_proc * n_bins))).reshape(n_proc, n_bins)
    templates = raw / raw.sum(1, keepdims=True)
    yields = draw(st.lists(st.floats(20.0, 2000.0), min_size=n_proc, max_size=n_proc))
    shapes = []
    for k in range(draw(st.integers(0, 2))):
        p = draw(st.integers(0, n_proc - 1))
        eps = np.array(draw(st.lists(st.floats(-0.3, 0.3), min_size=n_bins, max_size=n_bins)))
        shapes.append((f"shape{k}", p, templates[p] * (1 + eps), templates[p] * (1 - 0.8 * eps)))
    norms = []
    for k in range(draw(st.integers(0, 2))):
        norms.append((f"norm{k}", draw(st.integers(0, n_proc - 1)), draw(st.floats(1.01, 1.5))))

    def build(scale: float = 1.0, perm=None, systematics: bool = True) -> TemplateModel:
        perm = np.arange(n_bins) if perm is None else np.asarray(perm)
        t = lambda a: torch.tensor(np.asarray(a)[..., perm], dtype=D)  # noqa: E731
        names = [f"p{i}" for i in range(n_proc)]
        params = [Parameter("mu", 1.0)]
        ss, ns = [], []
        if systematics:
            params += [Parameter(n, 0.0, constraint=1.0) for n, *_ in shapes + norms]
            ss = [ShapeSystematic(n, names[p], t(up), t(down)) for n, p, up, down in shapes]
            ns = [NormSystematic(n, names[p], k, 1.0 / k) for n, p, k in norms]
        return TemplateModel(names, t(templates), {n: scale * y for n, y in zip(names, yields)}, params, poi="mu",
                             factors={names[0]: ["mu"]}, shape_systematics=ss, norm_systematics=ns)

    return n_bins, build


@SETTINGS
@given(models())
def test_fisher_symmetric_positive_definite_and_equal_to_the_asimov_hessian(case):
    _, build = case
    m = build()
    info = fisher_information(m)
    assert torch.allclose(info, info.T, rtol=1e-12, atol=0)
    eig = torch.linalg.eigvalsh(info)
    assert eig.min() > -1e-9 * eig.max()
    # on Asimov data at θ⁰ the observed and the expected information agree
    assert torch.allclose(nll_hessian(m), info, rtol=1e-7, atol=1e-9 * float(info.abs().max()))


@SETTINGS
@given(models())
def test_profiling_nuisances_never_shrinks_sigma(case):
    _, build = case
    full = float(poi_variance(fisher_information(build())))
    stat = float(poi_variance(fisher_information(build(systematics=False))))
    assert full >= stat * (1 - 1e-9)


@SETTINGS
@given(models(), st.randoms(use_true_random=False))
def test_bin_order_does_not_matter(case, rnd):
    n_bins, build = case
    perm = list(range(n_bins))
    rnd.shuffle(perm)
    a = float(poi_variance(fisher_information(build())))
    b = float(poi_variance(fisher_information(build(perm=perm))))
    assert np.isclose(a, b, rtol=1e-9)


@SETTINGS
@given(models(), st.floats(0.1, 10.0))
def test_statistical_sigma_scales_with_one_over_root_luminosity(case, lumi):
    _, build = case
    base = float(poi_variance(fisher_information(build(systematics=False))).sqrt())
    scaled = float(poi_variance(fisher_information(build(scale=lumi, systematics=False))).sqrt())
    assert np.isclose(scaled, base / np.sqrt(lumi), rtol=1e-9)


@SETTINGS
@given(models())
def test_asimov_nll_is_zero_at_the_nominal_point_and_positive_elsewhere(case):
    _, build = case
    m = build()
    theta0 = m.nominal()
    assert abs(float(m.nll(theta0, m.asimov()))) < 1e-9
    shifted = theta0.clone()
    shifted[0] += 0.1
    assert float(m.nll(shifted, m.asimov())) > 0
