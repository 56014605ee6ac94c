"""Feature importance by σ(POI): exact zero for an unused feature, positive for a used one, plot written."""

import math

import numpy as np
import pytest

from lumin_inferno import ConfigurationError
from lumin_inferno.data import paper_benchmark
from lumin_inferno.data import TEMPLATE_SHIFTS
from lumin_inferno.evaluation import uniform_bins
from lumin_inferno.evaluation.importance import (
    drop_column_importance,
    permutation_importance,
    plot_feature_importance,
    poi_uncertainty,
)

FEATURES = ["x0", "x1", "x2"]


def _score_bins(x: np.ndarray) -> np.ndarray:
    """A fixed statistic that reads x0 and x2 only: 10 uniform bins of a hand-made signal-vs-background score."""
    return uniform_bins(1 / (1 + np.exp(-(-2.2 * x[:, 0] - 2.0 + 0.5 * x[:, 2]))), 10)


@pytest.fixture(scope="module")
def test_sample(paper_foldfiles):
    from lumin.nn.data.fold_yielder import FoldYielder

    fold = FoldYielder(paper_foldfiles[1]).get_fold(0)
    return fold["inputs"], fold["targets"], fold["weights"]


S0 = 50.0  # the paper's signal yield: σ(s) = 50 σ(μ)


def _likelihood(k=2):
    bm = paper_benchmark(k)
    return dict(analysis=bm.analysis(10, kind="transform"), transform=bm.transform())


def _old_style_sigma_s(bins_fn, x, y, w, k):
    """σ(s) in events from a TemplateModel built by hand, with s the signal yield and the nuisances in physical
    units (templates at r ± 0.2, λ = 3 ± 0.5): an independent construction of the same likelihood."""
    import torch

    from lumin_inferno.data import PaperTransform
    from lumin_inferno.evaluation import hard_templates
    from lumin_inferno.statistics import expected_poi_uncertainty
    from lumin_inferno.statistics import ShapeSystematic, TemplateModel

    bm = paper_benchmark(k)
    y = np.asarray(y).reshape(-1)
    sig, bkg = hard_templates(bins_fn(x), y, w, 10)
    systs = []
    xt, mask = torch.as_tensor(x), torch.as_tensor(y == 0)
    for p in bm.shape_nuisances:
        pair = []
        for sign in (1.0, -1.0):
            with torch.no_grad():
                moved = PaperTransform()(xt, {p.name: torch.tensor(p.nominal + sign * TEMPLATE_SHIFTS[p.name])}, mask)
            pair.append(torch.as_tensor(hard_templates(bins_fn(moved.numpy()), y, w, 10)[1] + 1e-7))
        systs.append(ShapeSystematic(p.name, "background", *pair, step=TEMPLATE_SHIFTS[p.name]))
    b = bm.background
    params = [bm.poi] + ([b] if hasattr(b, "name") else []) + list(bm.shape_nuisances)
    model = TemplateModel(["signal", "background"], torch.as_tensor(np.stack([sig, bkg]) + 1e-7),
                          {"signal": "s", "background": b.name if hasattr(b, "name") else float(b)}, params, "s",
                          systs)
    return expected_poi_uncertainty(model, method="hessian")


def test_permutation_importance_zero_for_unused_positive_for_used(test_sample, tmp_path):
    x, y, w = test_sample
    table = permutation_importance(_score_bins, inputs=x, targets=y, weights=w, features=FEATURES, n_repeats=2, **_likelihood())
    assert list(table.columns[:6]) == ["feature", "column", "sigma", "sigma_permuted", "delta_sigma", "delta_sigma_std"]
    by = table.set_index("feature")
    assert by.loc["x1", "delta_sigma"] == 0.0 and by.loc["x1", "delta_sigma_std"] == 0.0  # never read: exactly 0
    assert by.loc["x0", "delta_sigma"] > 1.0 / S0  # (1 event in s); x0 is the main discriminant
    assert table["feature"].iloc[0] == "x0"  # sorted, most important first
    assert table["delta_sigma"].is_monotonic_decreasing
    sigma = poi_uncertainty(_score_bins, inputs=x, targets=y, weights=w, **_likelihood())
    assert np.allclose(table["sigma"], sigma) and math.isfinite(sigma) and S0 * sigma > math.sqrt(50)
    # the importance uses the same σ as the evaluation: √(H⁻¹)ₛₛ of the hard-binned Asimov model, built by hand
    assert S0 * sigma == pytest.approx(_old_style_sigma_s(_score_bins, x, y, w, 2), rel=1e-9)

    path = plot_feature_importance(table, tmp_path / "plots" / "importance.png")
    assert path.is_file() and path.stat().st_size > 1000
    assert sorted(p.name for p in path.parent.iterdir()) == ["importance.png"]  # no temporary left behind


def test_permutation_importance_options_and_errors(test_sample):
    x, y, w = test_sample
    one = permutation_importance(_score_bins, inputs=x[:3000], targets=y[:3000], weights=w[:3000], columns=[1], n_repeats=1,
                                 **_likelihood(0))
    assert one["feature"].tolist() == ["x1"] and one["delta_sigma"].iloc[0] == 0.0  # default names x0, x1, ...
    with pytest.raises(ConfigurationError, match="names"):
        permutation_importance(_score_bins, inputs=x, targets=y, weights=w, features=["a"], **_likelihood(0))
    with pytest.raises(ConfigurationError, match="out of range"):
        permutation_importance(_score_bins, inputs=x, targets=y, weights=w, columns=[3], **_likelihood(0))
    with pytest.raises(ConfigurationError, match="n_repeats"):
        permutation_importance(_score_bins, inputs=x, targets=y, weights=w, n_repeats=0, **_likelihood(0))
    with pytest.raises(ConfigurationError, match="empty"):
        plot_feature_importance(one.iloc[:0], "unused.png")


def test_drop_column_importance_with_a_training_function(test_sample):
    """The "training" here returns the fixed statistic on whatever of x0, x2 it is given (x1 is ignored)."""
    x, y, w = test_sample
    calls = []

    def train(kept):
        calls.append(list(kept))
        pos = {c: i for i, c in enumerate(kept)}

        def bins(xk):
            full = np.zeros((len(xk), 3), dtype=np.float32)
            full[:, 0] = xk[:, pos[0]] if 0 in pos else 0.0
            full[:, 2] = xk[:, pos[2]] if 2 in pos else 0.0
            return _score_bins(full)

        return bins

    table = drop_column_importance(train, inputs=x, targets=y, weights=w, features=FEATURES, **_likelihood(0))
    assert calls == [[0, 1, 2], [1, 2], [0, 2], [0, 1]]
    by = table.set_index("feature")
    assert by.loc["x1", "delta_sigma"] == 0.0
    assert by.loc["x0", "delta_sigma"] > 1.0 / S0 and table["feature"].iloc[0] == "x0"
    assert "sigma_dropped" in table.columns
    calls.clear()
    again = drop_column_importance(train, inputs=x, targets=y, weights=w, features=FEATURES, columns=[1], reference=_score_bins,
                                   **_likelihood(0))
    assert calls == [[0, 2]] and again["delta_sigma"].tolist() == [0.0]  # the given reference is not retrained


def test_column_subset_transform_acts_on_the_kept_columns():
    import pickle

    import torch

    from lumin_inferno.data import PaperTransform
    from lumin_inferno.evaluation.importance import ColumnSubsetTransform

    full = torch.randn(50, 4)
    mask = torch.arange(50) % 2 == 0
    nuisances = {"r": torch.tensor(0.3), "lambda": torch.tensor(2.5)}
    reference = PaperTransform()(full, nuisances, mask)
    for kept in ([0, 2, 3], [1, 2], [0, 1, 2, 3]):
        sub = ColumnSubsetTransform(PaperTransform(), kept, 4)
        assert torch.allclose(sub(full[:, kept], nuisances, mask), reference[:, kept])
        nominal = {"r": torch.tensor(0.0), "lambda": torch.tensor(3.0)}
        assert torch.allclose(sub(full[:, kept], nominal, mask), full[:, kept])
        assert pickle.loads(pickle.dumps(sub)) == sub
    # differentiable w.r.t. the nuisances, as InfernoCallback needs
    r = torch.tensor(0.0, requires_grad=True)
    out = ColumnSubsetTransform(PaperTransform(), [0, 3], 4)(full[:, [0, 3]], {"r": r}, mask)
    (grad,) = torch.autograd.grad(out[:, 0].sum(), r)
    assert grad.item() == pytest.approx(mask.sum().item() / PaperTransform().scale[0])


def test_blind_nuisances_leave_the_likelihood(test_sample):
    """A statistic that does not read x2 is blind to λ: σ(s) under benchmark 2 (r, λ free) equals benchmark 1's
    (r free), instead of a singular Hessian; the probe finds which nuisances act on which columns."""
    from lumin_inferno.evaluation.importance import nuisances_acting_on

    x, y, w = test_sample

    def x0_only(a):
        return uniform_bins(1 / (1 + np.exp(2.2 * a[:, 0] + 2.0)), 10)

    s2 = poi_uncertainty(x0_only, inputs=x, targets=y, weights=w, **_likelihood(2))
    s1 = poi_uncertainty(x0_only, inputs=x, targets=y, weights=w, **_likelihood(1))
    assert math.isfinite(s2) and s2 == pytest.approx(s1, rel=1e-12)
    table = permutation_importance(x0_only, inputs=x, targets=y, weights=w, features=FEATURES, n_repeats=1, **_likelihood(2))
    assert table.set_index("feature").loc["x2", "delta_sigma"] == 0.0
    bm = paper_benchmark(2)
    names = lambda cols: nuisances_acting_on(bm.transform(), bm.analysis(kind="transform"), cols, 4)  # noqa: E731
    assert names([0, 1, 2, 3]) == ["r", "lambda"] and names([0, 3]) == ["r"] and names([1, 2]) == ["lambda"]
    assert names([1, 3]) == []
