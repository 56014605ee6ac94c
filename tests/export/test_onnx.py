"""ONNX export: onnxruntime's output equals torch's (``Model.predict`` / ``Ensemble.predict``)."""

import numpy as np
import pytest

from lumin_inferno import ConfigurationError
from lumin_inferno.export.onnx import export_onnx

ort = pytest.importorskip("onnxruntime")

FEATS = ["x0", "x1", "x2", "x3"]
BATCH_SIZES = (1, 3, 64, 1001)  # the exporter traces with a batch of 2: all of these differ from it


def _model(builder, seed):
    import torch
    from lumin.nn.models.model import Model

    torch.manual_seed(seed)
    return Model(builder(FEATS, n_bins=6, width=16))


def _run(path, x):
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (inp,), (out,) = session.get_inputs(), session.get_outputs()
    assert inp.shape[0] == out.shape[0] and isinstance(inp.shape[0], str)  # a symbolic (dynamic) batch dimension
    return session.run(None, {inp.name: x})[0]


def _inputs(n, seed=1):
    return np.random.default_rng(seed + n).normal(size=(n, len(FEATS))).astype(np.float32)


@pytest.mark.parametrize("dynamo", [True, False], ids=["dynamo", "legacy"])
def test_single_model_matches_predict(inferno_builder, tmp_path, dynamo):
    model = _model(inferno_builder, 0)
    model.model.train()
    probs_path = export_onnx(model, tmp_path / "p.onnx", dynamo=dynamo)
    assert model.model.training  # the export restores the train/eval flag it found
    bins_path = export_onnx(model, tmp_path / "b.onnx", output="bin_index", dynamo=dynamo)
    for n in BATCH_SIZES:
        x = _inputs(n)
        expected = model.predict(x)
        got = _run(probs_path, x)
        assert got.shape == (n, 6) and got.dtype == np.float32
        assert np.abs(got - expected).max() < 5e-6
        bins = _run(bins_path, x)
        assert bins.shape == (n,) and bins.dtype == np.int64
        assert (bins == expected.argmax(1)).all()


def test_ensemble_of_two_matches_ensemble_predict(inferno_builder, tmp_path):
    from lumin.nn.ensemble.ensemble import Ensemble

    ensemble = Ensemble.from_models([_model(inferno_builder, 1), _model(inferno_builder, 2)], weights=[0.3, 0.9])
    probs_path = export_onnx(ensemble, tmp_path / "ens.onnx")
    bins_path = export_onnx(ensemble, tmp_path / "ens_bins.onnx", output="bin_index")
    for n in BATCH_SIZES:
        x = _inputs(n, seed=7)
        expected = ensemble.predict(x)
        got = _run(probs_path, x)
        assert np.abs(got - expected).max() < 5e-6
        assert np.allclose(got.sum(1), 1.0, atol=1e-5)
        assert (_run(bins_path, x) == expected.argmax(1)).all()
    # a plain list of models is a uniform-weight ensemble
    members = list(ensemble.models)
    export_onnx(members, tmp_path / "list.onnx")
    x = _inputs(10)
    assert np.abs(_run(tmp_path / "list.onnx", x) - 0.5 * (members[0].predict(x) + members[1].predict(x))).max() < 5e-6


def test_bad_requests_raise_and_write_nothing(inferno_builder, tmp_path, monkeypatch):
    model = _model(inferno_builder, 3)
    with pytest.raises(ConfigurationError, match="output must be one of"):
        export_onnx(model, tmp_path / "m.onnx", output="logits")
    with pytest.raises(ConfigurationError, match="does not exist"):
        export_onnx(model, tmp_path / "missing" / "m.onnx")
    with pytest.raises(ConfigurationError, match="expected a LUMIN Model"):
        export_onnx(object(), tmp_path / "m.onnx")
    with pytest.raises(ConfigurationError, match="weights"):
        export_onnx([model, model], tmp_path / "m.onnx", weights=[1.0])

    # an exporter failure midway leaves no file behind, and does not touch an existing file at the target
    import torch

    def broken_export(module, args, f, **kwargs):
        with open(f, "wb") as fh:
            fh.write(b"half an onnx file")
        raise RuntimeError("exporter crashed")

    monkeypatch.setattr(torch.onnx, "export", broken_export)
    with pytest.raises(ConfigurationError, match="exporter crashed"):
        export_onnx(model, tmp_path / "m.onnx")
    (tmp_path / "old.onnx").write_bytes(b"previous export")
    with pytest.raises(ConfigurationError):
        export_onnx(model, tmp_path / "old.onnx")
    assert (tmp_path / "old.onnx").read_bytes() == b"previous export"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["old.onnx"]


def test_categorical_features(tmp_path):
    """Categorical codes are columns of the float input (after the continuous ones), as for ``Model.predict``."""
    import contextlib
    import io

    import torch
    from lumin.nn.models.helpers import CatEmbedder
    from lumin.nn.models.model import Model
    from lumin.nn.models.model_builder import ModelBuilder

    from lumin_inferno import SoftmaxTemperatureTail

    torch.manual_seed(4)
    with contextlib.redirect_stdout(io.StringIO()):
        builder = ModelBuilder(
            objective="classification",
            n_out=5,
            cont_feats=["a", "b"],
            cat_embedder=CatEmbedder(["c"], [4]),
            model_args={"body": {"width": 16, "depth": 2}, "tail": {"temperature": 0.1}},
            tail=SoftmaxTemperatureTail,
            opt_args={"opt": "adam", "lr": 1e-3},
        )
    model = Model(builder)
    path = export_onnx(model, tmp_path / "cat.onnx")
    x = np.random.default_rng(0).normal(size=(33, 3)).astype(np.float32)
    x[:, 2] = np.arange(33) % 4
    assert np.abs(_run(path, x) - model.predict(x)).max() < 5e-6


@pytest.mark.parametrize("dynamo", [True, False], ids=["dynamo", "legacy"])
def test_aligned_ensemble_matches_aligned_torch_prediction(inferno_builder, tmp_path, dynamo):
    """With bin permutations the graph averages aligned bins: onnxruntime == AlignedEnsemble.predict."""
    from lumin.nn.ensemble.ensemble import Ensemble

    from lumin_inferno.evaluation.ensemble import align_ensemble

    ensemble = Ensemble.from_models([_model(inferno_builder, 5), _model(inferno_builder, 6)], weights=[0.3, 0.9])
    aligned = align_ensemble(ensemble, 3 * _inputs(3000, seed=2))
    perms = [p.tolist() for p in aligned.permutations]
    assert perms[1] == list(range(6)) and perms[0] != list(range(6))  # member 1 is the reference, 0 is reordered
    explicit = export_onnx(ensemble, tmp_path / "explicit.onnx", permutations=perms, dynamo=dynamo)
    implicit = export_onnx(aligned, tmp_path / "implicit.onnx", dynamo=dynamo)  # takes the AlignedEnsemble's own
    bins_path = export_onnx(aligned, tmp_path / "bins.onnx", output="bin_index", dynamo=dynamo)
    for n in BATCH_SIZES:
        x = 3 * _inputs(n, seed=11)
        expected = aligned.predict(x)
        for path in (explicit, implicit):
            got = _run(path, x)
            assert got.shape == (n, 6) and np.abs(got - expected).max() < 5e-6
        top2 = np.sort(expected, axis=1)[:, -2:]
        clear = top2[:, 1] - top2[:, 0] > 1e-5
        assert (_run(bins_path, x)[clear] == aligned.predict_bins(x)[clear]).all()
    assert np.abs(_run(explicit, x) - ensemble.predict(x, verbose=False)).max() > 0.05  # not LUMIN's average
    with pytest.raises(ConfigurationError, match="permutation"):
        export_onnx(ensemble, tmp_path / "bad.onnx", permutations=[[0, 1, 2, 3, 4, 5], [0, 0, 1, 2, 3, 4]])
    with pytest.raises(ConfigurationError, match="permutation"):
        export_onnx(ensemble, tmp_path / "bad.onnx", permutations=[[0, 1, 2], [0, 1, 2]])
    assert not (tmp_path / "bad.onnx").exists()


def test_merged_summary_graph_equals_its_bin_function(inferno_builder, tmp_path, dynamo=True):
    """A MergedSummary of three members (lookup tables of their joint bins) exported as one graph: onnxruntime's bins
    equal MergedSummary(x) event by event, its probabilities are their one-hot; without models it is refused."""
    from lumin_inferno.evaluation import MergedSummary
    from lumin_inferno.evaluation.templates import argmax_bins

    models = [_model(inferno_builder, s) for s in (3, 4, 5)]
    rng = np.random.default_rng(0)
    tables = [rng.integers(0, 4, 6 * 6), rng.integers(0, 4, 4 * 6)]  # 6 × 6 cells → 4 groups, 4 × 6 → 4
    tables[1][:4] = np.arange(4)  # every group in use
    fns = [lambda x, m=m: argmax_bins(m.predict(x)) for m in models]
    merged = MergedSummary(fns, [6, 6, 6], tables, models)
    bins_path = export_onnx(merged, tmp_path / "merged_bins.onnx", output="bin_index", dynamo=dynamo)
    probs_path = export_onnx(merged, tmp_path / "merged.onnx", dynamo=dynamo)
    for n in BATCH_SIZES:
        x = _inputs(n, seed=11)
        expected = merged(x)
        assert (_run(bins_path, x) == expected).all()
        assert (_run(probs_path, x) == np.eye(4, dtype=np.float32)[expected]).all()
    with pytest.raises(ConfigurationError, match="merge_summaries\\(..., models=...\\)"):
        export_onnx(MergedSummary(fns, [6, 6, 6], tables), tmp_path / "no.onnx")
    with pytest.raises(ConfigurationError, match="no member weights"):
        export_onnx(merged, tmp_path / "no.onnx", weights=[1, 2, 3])
    with pytest.raises(ConfigurationError, match="permutations do not apply"):
        export_onnx(merged, tmp_path / "no.onnx", permutations=[list(range(6))] * 3)
    with pytest.raises(ConfigurationError, match=r"member bins \[6, 6, 5\] are not its models' output sizes"):
        export_onnx(MergedSummary(fns, [6, 6, 5], tables, models), tmp_path / "no.onnx")
    assert not (tmp_path / "no.onnx").exists()
