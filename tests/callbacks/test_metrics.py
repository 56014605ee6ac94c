"""HardSigmaMetric: the hard-binned objective on the validation fold as LUMIN's main metric."""

import contextlib
import io
import random
from functools import partial
from pathlib import Path

import numpy as np
import pytest
import torch
from lumin.nn.data.fold_yielder import FoldYielder
from lumin.nn.models.model import Model
from lumin.nn.training.train import train_models

from lumin_inferno import ConfigurationError, InfernoCallback, expected_poi_uncertainty, foldfile_template_model
from lumin_inferno.data import paper_benchmark
from lumin_inferno.callbacks.metrics import HardSigmaMetric
from lumin_inferno.evaluation.templates import bin_occupancy
from lumin_inferno.evaluation.templates import argmax_bins


def test_bin_occupancy_fractions():
    occ = bin_occupancy(np.array([0, 0, 2, 2, 2]), 4, weights=np.array([1.0, 1.0, 1.0, 0.5, 0.5]))
    assert occ == pytest.approx([0.5, 0.0, 0.5, 0.0])


def test_save_best_keeps_the_epoch_of_lowest_hard_sigma(paper_foldfiles, inferno_builder, tmp_path):
    torch.manual_seed(1)
    np.random.seed(1)
    random.seed(1)
    fy = FoldYielder(paper_foldfiles[0])
    bm = paper_benchmark(2)
    analysis, transform = bm.analysis(n_bins=6, kind="transform"), bm.transform()
    metrics = []

    def make_metric():
        metrics.append(HardSigmaMetric(analysis, transform=transform))
        return metrics[-1]

    builder = inferno_builder(fy.cont_feats, n_bins=6, lr=1e-2)
    with contextlib.redirect_stdout(io.StringIO()):
        results, histories, _ = train_models(
            fy, n_models=1, bs=500, model_builder=builder, n_epochs=5,
            cb_partials=[partial(InfernoCallback, analysis, transform=transform)], metric_partials=[make_metric],
            savepath=Path(tmp_path / "w"), live_fdbk=False)
    hard = histories[0][1]["hard_sigma"]
    assert len(hard) == 5 and np.all(np.isfinite(hard))
    assert results[0]["hard_sigma"] == pytest.approx(min(hard))  # the results are the selected epoch's
    # the saved model is that epoch's: its hard σ on the validation fold, computed here independently, is the minimum
    model = Model(builder)
    model.load(str(Path(results[0]["path"]) / "train_0.h5"))
    tm = foldfile_template_model(analysis, lambda x: argmax_bins(model.predict(x)), fy, 0, transform)
    assert expected_poi_uncertainty(tm, method="hessian") == pytest.approx(min(hard), rel=1e-5)
    m = metrics[0]
    assert len(m.empty_bins) == 5 and len(m.occupancy) == 5
    assert all(o.sum() == pytest.approx(1.0) for o in m.occupancy)


def test_metric_refuses_lumins_permuted_inputs():
    bm = paper_benchmark(0)
    with pytest.raises(ConfigurationError, match="permutation_importance"):
        HardSigmaMetric(bm.analysis(n_bins=4)).evaluate_model(None, None, 0, None, None)
    with pytest.raises(ConfigurationError, match="Analysis"):
        HardSigmaMetric("not an analysis")
