"""Ensembles of INFERNO models: bin alignment, LUMIN's 1/loss weighting, save/load of ensemble + callback config."""

import contextlib
import io
from functools import partial

import numpy as np
import pytest
import torch

from lumin_inferno import ConfigurationError, InfernoCallback
from lumin_inferno.data import paper_benchmark
from lumin_inferno.evaluation.ensemble import (
    MANIFEST,
    AlignedEnsemble,
    align_ensemble,
    load_inferno_ensemble,
    save_inferno_ensemble,
)

FEATS = ["x0", "x1", "x2"]


def _pair(builder, relabel=(3, 0, 4, 1, 2)):
    """A random model and a copy whose output bins are relabelled: copy's column j is the original's relabel[j]."""
    from lumin.nn.models.model import Model

    torch.manual_seed(0)
    b = builder(FEATS, n_bins=5, width=16)
    m1, m2 = Model(b), Model(b)
    m2.model.load_state_dict(m1.model.state_dict())
    q = np.asarray(relabel)
    with torch.no_grad():
        m2.tail.dense.weight.copy_(m1.tail.dense.weight[q])
        m2.tail.dense.bias.copy_(m1.tail.dense.bias[q])
    return b, m1, m2, q


def _x(n=4000, seed=0):
    return (3 * np.random.default_rng(seed).normal(size=(n, len(FEATS)))).astype(np.float32)


def test_alignment_undoes_a_relabelling_that_lumin_averages_away(inferno_builder):
    from lumin.nn.ensemble.ensemble import Ensemble

    b, m1, m2, q = _pair(inferno_builder)
    x = _x()
    p1, p2 = m1.predict(x), m2.predict(x)
    assert np.allclose(p2, p1[:, q], atol=1e-6)
    ens = Ensemble.from_models([m1, m2], weights=[0.7, 0.3], model_builder=b)
    aligned = align_ensemble(ens, x)
    assert aligned.reference == 0  # the most weighted member
    populated = np.unique(p1.argmax(1))
    inverse = np.argsort(q)  # p2[:, inverse] == p1
    assert np.array_equal(aligned.permutations[1][populated], inverse[populated])
    assert np.array_equal(aligned.permutations[0], np.arange(5))
    # the two members are the same function, so the aligned ensemble is that function; LUMIN's average is not
    assert (aligned.predict_bins(x) == p1.argmax(1)).all()
    assert (aligned(x) == p1.argmax(1)).all()
    assert np.allclose(aligned.predict(x).sum(1), 1.0)
    # LUMIN's column-by-column average moves ~2 × 0.3 of each event's probability into unrelated bins
    assert np.abs(aligned.predict(x) - p1).sum(1).mean() < 1e-3
    assert np.abs(ens.predict(x, verbose=False) - p1).sum(1).mean() > 0.4
    # a DataFrame works (LUMIN's Ensemble.predict(df) fails); the reference can be chosen
    import pandas as pd

    other = align_ensemble([m1, m2], pd.DataFrame(x, columns=FEATS), reference=1)
    assert other.reference == 1 and np.allclose(other.weights, 0.5)
    assert (other.predict_bins(x) == p2.argmax(1)).all()
    with pytest.raises(ConfigurationError, match="out of range"):
        align_ensemble(ens, x, reference=2)
    with pytest.raises(ConfigurationError, match="expected a LUMIN Ensemble"):
        align_ensemble(object(), x)
    with pytest.raises(ConfigurationError, match="not a permutation"):
        AlignedEnsemble([m1, m2], [0.5, 0.5], [[0, 1, 2, 3, 4], [0, 0, 1, 2, 3]])


def test_lumin_weights_inferno_members_by_inverse_variance(paper_foldfiles, inferno_builder, tmp_path):
    """train_models' result "loss" is the best validation Var(μ); Ensemble.from_results weights 1/loss."""
    from lumin.nn.data.fold_yielder import FoldYielder
    from lumin.nn.ensemble.ensemble import Ensemble
    from lumin.nn.training.train import train_models

    torch.manual_seed(1)
    np.random.seed(1)
    fy = FoldYielder(paper_foldfiles[0])
    builder = inferno_builder(fy.cont_feats, n_bins=4, width=16)
    with contextlib.redirect_stdout(io.StringIO()):
        results, _, _ = train_models(
            fy, n_models=2, bs=1000, model_builder=builder, n_epochs=1, live_fdbk=False, savepath=tmp_path / "w",
            cb_partials=[partial(InfernoCallback, paper_benchmark(1).analysis(4, kind="transform"),
                                 transform=paper_benchmark(1).transform())],
        )
        ens = Ensemble.from_results(results, size=2, model_builder=builder, metric="loss", verbose=False)
    losses = np.array(sorted(r["loss"] for r in results))
    assert (losses > 0).all() and np.isfinite(losses).all()
    assert 50 * np.sqrt(losses.min()) > np.sqrt(50)  # σ(s) = 50 σ(μ), above the signal-only Poisson limit √s
    expected = (1 / losses) / (1 / losses).sum()  # members sorted by loss, best first
    assert np.allclose(ens.weights, expected)
    aligned = align_ensemble(ens, FoldYielder(paper_foldfiles[1]).get_fold(0)["inputs"][:2000])
    assert aligned.reference == 0 and aligned.weights[0] >= aligned.weights[1]


def _paper_analysis(k, n_bins=5):
    return paper_benchmark(k).analysis(n_bins, kind="transform")


def test_save_load_round_trip(inferno_builder, tmp_path):
    from lumin.nn.ensemble.ensemble import Ensemble

    b, m1, m2, _ = _pair(inferno_builder)
    x = _x(2000, seed=3)
    ens = Ensemble.from_models([m1, m2], weights=[0.4, 0.6], model_builder=b)
    aligned = align_ensemble(ens, x)
    analysis = _paper_analysis(4)
    target = save_inferno_ensemble(tmp_path / "ens", aligned, analysis)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ens"]  # no temporary left behind
    assert sorted(p.name for p in target.iterdir()) == ["analysis.json", "ensemble_0.h5", "ensemble_1.h5",
                                                         "inferno_ensemble.json"]  # data only, no pickles
    loaded = load_inferno_ensemble(target, b)
    assert loaded.analysis == analysis
    transform = paper_benchmark(4).transform()
    cb = partial(InfernoCallback, loaded.analysis, transform=transform)()  # more members for the same measurement
    assert isinstance(cb, InfernoCallback) and cb.analysis == analysis and cb.transform is transform
    assert [p.tolist() for p in loaded.permutations] == [p.tolist() for p in aligned.permutations]
    assert loaded.reference == aligned.reference
    assert np.allclose(loaded.ensemble.weights, [0.4, 0.6])
    assert np.array_equal(loaded.aligned.predict(x), aligned.predict(x))
    assert np.array_equal(loaded.ensemble.predict(x, verbose=False), ens.predict(x, verbose=False))

    # overwrite is explicit and replaces the save as a whole
    with pytest.raises(ConfigurationError, match="exists"):
        save_inferno_ensemble(target, ens, analysis)
    save_inferno_ensemble(target, ens, _paper_analysis(0), overwrite=True)
    again = load_inferno_ensemble(target, b)
    assert again.analysis == _paper_analysis(0)
    assert all(np.array_equal(p, np.arange(5)) for p in again.permutations)  # a plain Ensemble: identity
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ens"]


def test_save_rejects_bad_configuration(inferno_builder, tmp_path):
    b, m1, m2, _ = _pair(inferno_builder)
    analysis = _paper_analysis(2)
    with pytest.raises(ConfigurationError, match="needs the Analysis"):
        save_inferno_ensemble(tmp_path / "a", [m1, m2], {"poi": "s"})
    with pytest.raises(ConfigurationError, match="5 output bins but the analysis has n_bins = 7"):
        save_inferno_ensemble(tmp_path / "a", [m1, m2], _paper_analysis(2, n_bins=7))
    with pytest.raises(ConfigurationError, match="permutation"):
        save_inferno_ensemble(tmp_path / "a", [m1, m2], analysis, permutations=[[0, 1, 2, 3, 4], [0, 1, 2, 3]])
    with pytest.raises(ConfigurationError, match="does not exist"):
        save_inferno_ensemble(tmp_path / "missing" / "a", [m1, m2], analysis)
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "precious.txt").write_text("keep")
    with pytest.raises(ConfigurationError, match="not a saved INFERNO ensemble"):
        save_inferno_ensemble(tmp_path / "data", [m1, m2], analysis, overwrite=True)
    assert (tmp_path / "data" / "precious.txt").read_text() == "keep"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data"]


def test_load_missing_or_corrupt_files_raise(inferno_builder, tmp_path):
    b, m1, m2, _ = _pair(inferno_builder)
    analysis = _paper_analysis(1)
    with pytest.raises(ConfigurationError, match="not a directory"):
        load_inferno_ensemble(tmp_path / "nothing", b)
    target = save_inferno_ensemble(tmp_path / "ens", [m1, m2], analysis)
    (target / "ensemble_1.h5").unlink()
    with pytest.raises(ConfigurationError, match="lacks"):
        load_inferno_ensemble(target, b)
    target = save_inferno_ensemble(tmp_path / "ens", [m1, m2], analysis, overwrite=True)
    data = (target / "ensemble_0.h5").read_bytes()
    (target / "ensemble_0.h5").write_bytes(data[: len(data) // 2])  # a truncated file
    with pytest.raises(ConfigurationError, match="checksum"):
        load_inferno_ensemble(target, b)
    with pytest.raises(ConfigurationError, match="ensemble_0.h5 .* does not load"):
        load_inferno_ensemble(target, b, verify=False)
    target = save_inferno_ensemble(tmp_path / "ens", [m1, m2], analysis, overwrite=True)
    wider = inferno_builder(FEATS, n_bins=5, width=32)
    with pytest.raises(ConfigurationError, match="does not load into model_builder's network"):
        load_inferno_ensemble(target, wider)
    (target / MANIFEST).write_text("{not json")
    with pytest.raises(ConfigurationError, match="corrupt manifest"):
        load_inferno_ensemble(target, b)
    (target / MANIFEST).unlink()
    with pytest.raises(ConfigurationError, match="has no"):
        load_inferno_ensemble(target, b)


def test_load_never_unpickles(inferno_builder, tmp_path):
    """A member file that would run code when unpickled is refused, not executed."""
    import pickle

    b, m1, m2, _ = _pair(inferno_builder)
    target = save_inferno_ensemble(tmp_path / "ens", [m1, m2], _paper_analysis(1))
    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    torch.save({"model": Payload(), "opt": {}, "input_mask": None}, target / "ensemble_0.h5", pickle_module=pickle)
    with pytest.raises(ConfigurationError, match="does not load"):
        load_inferno_ensemble(target, b, verify=False)
    assert not marker.exists()


def test_merged_summary_save_load_round_trip(inferno_builder, tmp_path):
    """A MergedSummary saved with its models and tables comes back as InfernoEnsemble.merged, giving the same bins;
    a save without merged tables has none; a corrupt table is a named error."""
    import json

    from lumin.nn.models.model import Model

    from lumin_inferno.evaluation import MergedSummary
    from lumin_inferno.evaluation.templates import argmax_bins

    b, m1, _, _ = _pair(inferno_builder)
    torch.manual_seed(1)
    m2 = Model(b)
    table = np.random.default_rng(0).integers(0, 5, 25)
    table[:5] = np.arange(5)
    merged = MergedSummary([lambda v, m=m: argmax_bins(m.predict(v)) for m in (m1, m2)], [5, 5], [table], [m1, m2])
    x = _x(3000, seed=5)
    target = save_inferno_ensemble(tmp_path / "merged", merged, _paper_analysis(4))
    loaded = load_inferno_ensemble(target, b)
    assert loaded.merged is not None and np.array_equal(loaded.merged(x), merged(x))
    assert np.array_equal(loaded.merged.tables[0], table)
    assert load_inferno_ensemble(save_inferno_ensemble(tmp_path / "plain", [m1, m2], _paper_analysis(4)), b).merged \
        is None
    with pytest.raises(ConfigurationError, match="models=..."):
        save_inferno_ensemble(tmp_path / "nomodels", MergedSummary(merged.bin_functions, [5, 5], [table]),
                              _paper_analysis(4))
    assert not (tmp_path / "nomodels").exists()
    manifest = json.loads((target / "inferno_ensemble.json").read_text())
    manifest["merged_tables"] = [table[:20].tolist()]
    (target / "inferno_ensemble.json").write_text(json.dumps(manifest))
    with pytest.raises(ConfigurationError, match="merge table 0 has 20 entries"):
        load_inferno_ensemble(target, b)
