"""ApproxInfernoCallback: shifted copies follow LUMIN's shuffling, agreement with exact INFERNO, several processes
through train_models, named errors."""

import contextlib
import io
import random
from functools import partial
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from lumin.nn.data.batch_yielder import BatchYielder
from lumin.nn.data.fold_yielder import FoldYielder
from lumin.nn.models.abs_model import FitParams
from lumin.nn.models.model import Model
from lumin.nn.training.train import train_models

from lumin_inferno import (
    ConfigurationError,
    EmptyProcessError,
    FoldFileError,
    InfernoCallback,
    InvalidModelSpec,
    Parameter,
    TargetShapeError,
    paper_benchmark,
)
from lumin_inferno.callbacks.approx_inferno import ApproxInfernoCallback
from lumin_inferno.callbacks.inferno import denormals_flushed
from lumin_inferno.data.paper import FEATURES, PaperTransform, sample_paper, standardise
from lumin_inferno.data.systematics import write_systematics_foldfile
from lumin_inferno.statistics.builders import ProcessSpec


def _paper_file(directory: Path, name: str, steps: dict, n: int = 1500, seed: int = 3) -> Path:
    """Paper-problem fold file (3 folds) with background shifted copies at r ± steps["r"], λ = 3 ± steps["lambda"]."""
    df = standardise(sample_paper(n, n, seed=seed)).sample(frac=1.0, random_state=seed).reset_index(drop=True)
    x = torch.as_tensor(df[FEATURES].to_numpy(np.float32))
    is_bkg = torch.as_tensor(df["gen_target"].to_numpy() == 0)
    nominal = {"r": 0.0, "lambda": 3.0}
    shifted = {}
    for name_, step in steps.items():
        pair = []
        for sign in (1.0, -1.0):
            with torch.no_grad():
                xs = PaperTransform()(x, {name_: torch.tensor(nominal[name_] + sign * step)}, is_bkg).numpy()
            pair.append(df.assign(**{f: xs[:, i] for i, f in enumerate(FEATURES)}))
        shifted[name_] = tuple(pair)
    return write_systematics_foldfile(directory / name, df, 3, FEATURES, "gen_target", shifted,
                                      wgt_feat="gen_weight", strat_key="gen_target")


@pytest.fixture(scope="module")
def shifted_file(tmp_path_factory) -> Path:
    return _paper_file(tmp_path_factory.mktemp("approx"), "train", {"r": 0.2, "lambda": 0.5})


def _approx_kwargs(nuisances=("r", "lambda"), steps=None):
    steps = steps or {"r": 0.2, "lambda": 0.5}
    params = [p for p in paper_benchmark(2).shape_nuisances if p.name in nuisances]
    return dict(
        poi=Parameter("s", 50.0),
        processes=[ProcessSpec("signal", "s"), ProcessSpec("background", 1000.0, shape_systematics=list(nuisances))],
        labels={"signal": 1, "background": 0},
        parameters=params,
        steps={k: steps[k] for k in nuisances},
    )


def _drive_approx(model, cb, fy, bs=600, seed=0, fold=0, tamper=None):
    """One training batch through LUMIN's hooks, as Model.fit / _fit_batch do, on a real shuffled BatchYielder."""
    np.random.seed(seed)
    by = BatchYielder(**fy.get_fold(fold), bs=bs, objective="classification", shuffle=True)
    model.fit_params = FitParams(cbs=[cb], state="train", fy=fy, trn_idx=fold, trn_idxs=[fold], bs=bs, by=by,
                                 loss_func=None)
    fp = model.fit_params
    cb.set_model(model)
    cb.on_train_begin()
    cb.on_fold_begin()
    if tamper is not None:
        tamper(by)
    x, y, w = next(iter(by))
    fp.x, fp.y, fp.w = x, y, w
    cb.on_batch_begin()
    labels = fp.y
    fp.y_pred = model.model(fp.x)
    cb.on_forwards_end()
    loss = fp.loss_val
    grads = torch.autograd.grad(loss, list(model.model.parameters()))
    rows = cb._rows
    cb.on_batch_end()
    cb.on_fold_end()
    return loss.detach(), grads, (x, labels, w, rows, by)


def _drive_exact(model, cb, x, y, w):
    model.fit_params = FitParams(cbs=[cb], state="train", x=x, y=y, w=w, loss_func=None)
    cb.set_model(model)
    cb.on_batch_begin()
    model.fit_params.y_pred = model.model(model.fit_params.x)
    cb.on_forwards_end()
    loss = model.fit_params.loss_val
    grads = torch.autograd.grad(loss, list(model.model.parameters()))
    cb.on_batch_end()
    return loss.detach(), grads


class LinearProbs(torch.nn.Module):
    """Bin probabilities linear in the inputs, 1/B + x·W with each row of W summing to 0 (so rows sum to 1): the
    templates are then exactly linear in a shift of the inputs."""

    def __init__(self, n_in=3, n_bins=4, scale=0.01, seed=0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        w = torch.randn(n_in, n_bins, generator=g) * scale
        self.weight = torch.nn.Parameter(w - w.mean(1, keepdim=True))
        self.n_bins = n_bins

    def forward(self, x):
        return 1.0 / self.n_bins + x @ self.weight


def test_shifted_copies_follow_lumins_shuffling(shifted_file, inferno_builder):
    """The rows looked up by the stacked event index are the batch's own events, shifted."""
    fy = FoldYielder(shifted_file)
    model = Model(inferno_builder(fy.cont_feats))
    cb = ApproxInfernoCallback(**_approx_kwargs())
    _, _, (x, labels, w, rows, by) = _drive_approx(model, cb, fy, seed=11)
    assert labels.shape == (600, 1) and set(labels.view(-1).tolist()) == {0.0, 1.0}  # plain targets again
    assert by.targets.shape == (len(by.inputs), 1)  # restored at on_fold_end
    from lumin_inferno.data.systematics import read_fold_systematics

    up = torch.as_tensor(read_fold_systematics(fy, 0).inputs["r"][0])[rows]
    expect = PaperTransform()(x, {"r": torch.tensor(0.2)}, labels.view(-1) == 0)
    assert torch.allclose(up, expect, atol=1e-5)
    assert not torch.equal(rows, torch.arange(600))  # the batch really was shuffled


def test_linear_shape_effect_approx_equals_exact(shifted_file, inferno_builder):
    """Templates linear in the nuisance (linear bin probabilities, r shifts x0): the central difference of the
    shifted copies is the exact derivative, so loss and parameter gradients agree (same network, same batch)."""
    fy = FoldYielder(shifted_file)
    model = Model(inferno_builder(fy.cont_feats))
    model.model = LinearProbs()
    la, ga, (x, labels, w, _, _) = _drive_approx(model, ApproxInfernoCallback(**_approx_kwargs(["r"])), fy)
    le, ge = _drive_exact(model, InfernoCallback(**paper_benchmark(1).callback_kwargs()), x, labels, w)
    assert float(la) == pytest.approx(float(le), rel=1e-6)
    assert float((ga[0] - ge[0]).norm() / ge[0].norm()) < 1e-4  # float32 network: agree to rounding


def _smooth_builder(cont_feats):
    from lumin.nn.models.helpers import CatEmbedder
    from lumin.nn.models.model_builder import ModelBuilder

    from lumin_inferno import SoftmaxTemperatureTail

    with contextlib.redirect_stdout(io.StringIO()):
        return ModelBuilder(objective="classification", n_out=6, cont_feats=cont_feats, cat_embedder=CatEmbedder([], []),
                            model_args={"body": {"width": 32, "depth": 2, "act": "swish"}, "tail": {"temperature": 0.1}},
                            tail=SoftmaxTemperatureTail, opt_args={"opt": "adam", "lr": 1e-3})


def test_small_shifts_of_a_smooth_network_approach_exact(tmp_path):
    """For a non-linear (smooth) network the approximation is a central difference: with small stored shifts its
    loss and gradients converge (as step²) to exact INFERNO's (r and λ, benchmark 2). With ReLU they do not for the
    gradients: events whose shifted copies straddle a kink add terms the almost-everywhere derivative lacks
    (docs/approx_inferno.md)."""
    torch.manual_seed(4)
    path = _paper_file(tmp_path, "small", {"r": 0.01, "lambda": 0.01}, n=600)
    fy = FoldYielder(path)
    model = Model(_smooth_builder(fy.cont_feats))
    cb = ApproxInfernoCallback(**_approx_kwargs(steps={"r": 0.01, "lambda": 0.01}))
    la, ga, (x, labels, w, _, _) = _drive_approx(model, cb, fy, bs=300)
    le, ge = _drive_exact(model, InfernoCallback(**paper_benchmark(2).callback_kwargs()), x, labels, w)
    assert float(la) == pytest.approx(float(le), rel=5e-4)
    flat_a, flat_e = torch.cat([g.flatten() for g in ga]), torch.cat([g.flatten() for g in ge])
    assert float((flat_a - flat_e).norm() / flat_e.norm()) < 5e-3


# ------------------------------------------------------------------------------------------- three processes
def _three_process_file(directory: Path, n_per_class: int = 1200, seed: int = 0) -> Path:
    """signal (label 2) + two backgrounds (labels 0, 1); 'jes' scales x0 of both backgrounds (correlated), 'pdf'
    is a weight systematic of bkg_b."""
    rng = np.random.default_rng(seed)
    means = {0: (1.5, 0.0, 0.5), 1: (-1.0, 1.5, 0.0), 2: (0.0, 0.0, -0.5)}
    frames = [pd.DataFrame(rng.normal(means[k], 1.0, size=(n_per_class, 3)).astype(np.float32), columns=FEATURES)
              .assign(label=k) for k in means]
    df = pd.concat(frames).sample(frac=1.0, random_state=seed).reset_index(drop=True)
    df["weight"] = rng.uniform(0.8, 1.2, len(df)).astype(np.float32)
    bkg = df["label"] < 2
    up, down = df.copy(), df.copy()
    up.loc[bkg, "x0"] *= 1.1
    down.loc[bkg, "x0"] *= 0.9
    pdf_up = df["weight"] * np.where(df["label"] == 1, 1.0 + 0.1 * df["x1"].clip(-2, 2), 1.0)
    pdf_down = df["weight"] * np.where(df["label"] == 1, 1.0 - 0.1 * df["x1"].clip(-2, 2), 1.0)
    return write_systematics_foldfile(directory / "three", df, 3, FEATURES, "label", {"jes": (up, down)},
                                      {"pdf": (pdf_up, pdf_down)}, wgt_feat="weight", strat_key="label")


THREE_PROCESS = dict(
    poi=Parameter("s", 50.0),
    processes=[
        ProcessSpec("signal", "s"),
        ProcessSpec("bkg_a", 600.0, shape_systematics=["jes"], norm_systematics={"lumi": 1.025, "xs_a": 1.1}),
        ProcessSpec("bkg_b", "b2", shape_systematics=["jes", "pdf"],
                    norm_systematics={"lumi": 1.025, "xs_b": (1.2, 0.9)}),
    ],
    labels={"signal": 2, "bkg_a": 0, "bkg_b": 1},
    parameters=[Parameter("b2", 300.0, constraint=60.0)],
)


def test_three_processes_train_through_train_models(tmp_path, inferno_builder):
    torch.manual_seed(0)
    np.random.seed(0)
    random.seed(0)
    fy = FoldYielder(_three_process_file(tmp_path))
    instances, flushed = [], []

    class Probe(ApproxInfernoCallback):  # is the denormal flush on while the loss is computed?
        def on_forwards_end(self) -> None:
            flushed.append(denormals_flushed())
            super().on_forwards_end()

    def make_cb():
        instances.append(Probe(**THREE_PROCESS))
        return instances[-1]

    with contextlib.redirect_stdout(io.StringIO()):
        results, histories, _ = train_models(fy, n_models=1, bs=600, model_builder=inferno_builder(fy.cont_feats),
                                             n_epochs=4, cb_partials=[make_cb], savepath=tmp_path / "w",
                                             live_fdbk=False)
    if torch.set_flush_denormal(False):  # where the CPU has the mode: on in every batch, off again afterwards
        assert flushed and all(flushed) and not denormals_flushed()
    cb, valid = instances[0], histories[0][0]["Validation"]
    assert len(valid) == 4 and np.isclose(valid[-1], cb.history["valid"][-1])  # LUMIN logs our loss
    assert np.isfinite(results[0]["loss"]) and min(valid) == pytest.approx(results[0]["loss"])
    assert np.mean(cb.history["train"][-3:]) < np.mean(cb.history["train"][:3])
    assert min(valid) < cb.history["train"][0]
    assert 50 < min(valid) < 50 + 600 + 300 + 60**2  # between no background and no separation


# ---------------------------------------------------------------------------------------------- named errors
def test_missing_systematic_in_fold_file(shifted_file, paper_foldfiles, inferno_builder, tmp_path):
    fy = FoldYielder(shifted_file)
    kw = _approx_kwargs()
    kw["processes"] = [kw["processes"][0], ProcessSpec("background", 1000.0, shape_systematics=["r", "lambda", "jes"])]
    kw["parameters"] = kw["parameters"] + [Parameter("jes", 0.0)]
    with pytest.raises(FoldFileError, match=r"systematic 'jes' \(on \['background'\]\) has no shifted inputs"):
        _drive_approx(Model(inferno_builder(fy.cont_feats)), ApproxInfernoCallback(**kw), fy)
    plain = FoldYielder(paper_foldfiles[0])
    with pytest.raises(FoldFileError, match="holds no shifted systematics"):
        with contextlib.redirect_stdout(io.StringIO()):
            train_models(plain, n_models=1, bs=500, model_builder=inferno_builder(plain.cont_feats), n_epochs=1,
                         cb_partials=[partial(ApproxInfernoCallback, **_approx_kwargs())], savepath=tmp_path / "w",
                         live_fdbk=False)


def test_batch_not_matching_stacked_index_is_caught(shifted_file, inferno_builder):
    fy = FoldYielder(shifted_file)
    with pytest.raises(ConfigurationError, match="not the fold's rows"):
        _drive_approx(Model(inferno_builder(fy.cont_feats)), ApproxInfernoCallback(**_approx_kwargs()), fy,
                      tamper=lambda by: setattr(by, "inputs", by.inputs[::-1].copy()))
    with pytest.raises(ConfigurationError, match="do not carry the event index"):
        _drive_approx(Model(inferno_builder(fy.cont_feats)), ApproxInfernoCallback(**_approx_kwargs()), fy,
                      tamper=lambda by: setattr(by, "targets", by.targets[:, :1]))


def test_process_and_label_errors(shifted_file, inferno_builder):
    fy = FoldYielder(shifted_file)
    kw = _approx_kwargs()
    with pytest.raises(EmptyProcessError, match="no events of process 'signal'"):
        _drive_approx(Model(inferno_builder(fy.cont_feats)), ApproxInfernoCallback(**{**kw, "labels": {
            "signal": 7, "background": [0, 1]}}), fy)
    with pytest.raises(TargetShapeError, match=r"target value\(s\) \[1.0\] belong to no process"):
        _drive_approx(Model(inferno_builder(fy.cont_feats)), ApproxInfernoCallback(**{**kw, "processes": [
            ProcessSpec("signal", "s", ["r", "lambda"]), ProcessSpec("other", 5.0)], "labels": {"signal": 0,
                                                                                               "other": 5}}), fy)


def test_spec_errors():
    kw = _approx_kwargs()
    with pytest.raises(InvalidModelSpec, match="no target label"):
        ApproxInfernoCallback(**{**kw, "labels": {"signal": 1}})
    with pytest.raises(InvalidModelSpec, match="more than one process"):
        ApproxInfernoCallback(**{**kw, "labels": {"signal": 1, "background": [0, 1]}})
    with pytest.raises(InvalidModelSpec, match="unknown parameter 'b'"):
        ApproxInfernoCallback(**{**kw, "processes": [ProcessSpec("signal", "s"), ProcessSpec("background", "b")]})
    with pytest.raises(InvalidModelSpec, match="step"):
        ApproxInfernoCallback(**{**kw, "steps": {"r": 0.0, "lambda": 0.5}})


def test_inert_at_prediction(shifted_file, inferno_builder):
    fy = FoldYielder(shifted_file)
    model = Model(inferno_builder(fy.cont_feats))
    x = fy.get_fold(0)["inputs"][:50]
    assert np.allclose(model.predict(x, cbs=[ApproxInfernoCallback(**_approx_kwargs())]), model.predict(x))
