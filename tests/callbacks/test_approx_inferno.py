"""ApproxInfernoCallback on an Analysis: shifted copies follow LUMIN's shuffling, agreement with exact INFERNO,
several processes, POIs and a control region through train_models, named errors."""

import contextlib
import dataclasses
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

from lumin_inferno import ConfigurationError, EmptyProcessError, FoldFileError, InfernoCallback, TargetShapeError
from lumin_inferno.data import paper_benchmark
from lumin_inferno.analysis import (
    Analysis, FixedChannel, InputShift, NormFactor, Objective, Process, Systematic,
)
from lumin_inferno.callbacks.approx_inferno import ApproxInfernoCallback
from lumin_inferno.callbacks.batches import RowTrackingYielder
from lumin_inferno.callbacks.denormals import denormals_flushed
from lumin_inferno.data.paper import FEATURES, PaperTransform, sample_paper, standardise
from lumin_inferno.data.systematics import write_systematics_foldfile

#: σ(s) = 50 σ(μ): the paper's signal yield, to compare with exact INFERNO's variance of s in events².
S0 = 50.0


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


def _analysis(benchmark=2, steps=None, n_bins=6, **changes):
    a = paper_benchmark(benchmark).analysis(n_bins=n_bins, steps=steps or {"r": 0.2, "lambda": 0.5})
    if not changes:
        return a
    d = {f: getattr(a, f) for f in a.__dataclass_fields__}
    d.update(changes)
    return Analysis(**d)


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
        tamper(fp)
    batches = iter(fp.by)  # what Model.fit iterates after on_fold_begin
    x, y, w = next(batches)
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


def _exact(benchmark, steps=None, n_bins=6):
    """Exact INFERNO on the same analysis, α in units of the same template steps."""
    steps = steps or {"r": 0.2, "lambda": 0.5}
    bm = paper_benchmark(benchmark)
    return InfernoCallback(bm.analysis(n_bins, steps=steps, kind="transform"), transform=bm.transform(steps))


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


def test_row_tracking_yields_lumins_batches():
    """Same seed, same batches as LUMIN's own BatchYielder, with the rows they came from."""
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(103, 3)).astype(np.float32), rng.integers(0, 2, (103, 1)).astype(np.float32)
    w = rng.uniform(size=(103, 1)).astype(np.float32)
    for shuffle, drop_last in ((True, True), (False, False)):
        kw = dict(inputs=x, targets=y, weights=w, bs=20, objective="classification", shuffle=shuffle,
                  drop_last=drop_last)
        np.random.seed(5)
        theirs = list(BatchYielder(**kw))
        np.random.seed(5)
        tracker = RowTrackingYielder(BatchYielder(**kw))
        ours, rows = [], []
        for b in tracker:
            ours.append(b)
            rows.append(tracker.rows.copy())
        assert len(ours) == len(theirs) == (5 if drop_last else 6)
        for (xo, yo, wo), (xt, yt, wt), r in zip(ours, theirs, rows):
            assert torch.equal(xo, xt) and torch.equal(yo, yt) and torch.equal(wo, wt)
            assert torch.equal(xo, torch.as_tensor(x[r])) and r.dtype == np.int64
        assert tracker.rows is None and tracker.bs == 20  # attributes fall through to LUMIN's yielder


def test_shifted_copies_follow_lumins_shuffling(shifted_file, inferno_builder):
    """The rows the yielder recorded are the batch's own events, shifted."""
    fy = FoldYielder(shifted_file)
    model = Model(inferno_builder(fy.cont_feats))
    cb = ApproxInfernoCallback(_analysis())
    _, _, (x, labels, w, rows, by) = _drive_approx(model, cb, fy, seed=11)
    assert labels.shape == (600, 1) and set(labels.view(-1).tolist()) == {0.0, 1.0}
    assert model.fit_params.by is by  # LUMIN's yielder is back after on_fold_end
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
    cb = ApproxInfernoCallback(_analysis(1, n_bins=4))
    la, ga, (x, labels, w, _, _) = _drive_approx(model, cb, fy)
    le, ge = _drive_exact(model, _exact(1, n_bins=4), x, labels, w)
    assert float(la) == pytest.approx(float(le), rel=1e-6)  # both Var(μ), α in units of the same steps
    assert float((ga[0] - ge[0]).norm() / ge[0].norm()) < 1e-4  # float32 network: agree to rounding
    assert cb.sigma["train"]["mu"][-1] == pytest.approx(float(le) ** 0.5, rel=1e-6)


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
    cb = ApproxInfernoCallback(_analysis(2, steps={"r": 0.01, "lambda": 0.01}, n_bins=6))
    la, ga, (x, labels, w, _, _) = _drive_approx(model, cb, fy, bs=300)
    le, ge = _drive_exact(model, _exact(2, steps={"r": 0.01, "lambda": 0.01}), x, labels, w)
    assert float(la) == pytest.approx(float(le), rel=5e-4)
    flat_a = torch.cat([g.flatten() for g in ga])
    flat_e = torch.cat([g.flatten() for g in ge])
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


THREE_PROCESS = Analysis(
    processes=(
        Process("signal", 50.0, labels=(2,), role="signal"),
        Process("bkg_a", 600.0, labels=(0,)),
        Process("bkg_b", 300.0, labels=(1,)),
        Process("other", None, mc_stat=False),
    ),
    factors=(NormFactor("mu", ("signal",)), NormFactor("k_a", ("bkg_a",)), NormFactor("k_b", ("bkg_b",), poi=False)),
    systematics=(
        Systematic("jes", "inputs", ("bkg_a", "bkg_b")),
        Systematic("pdf", "weights", ("bkg_b",)),
        Systematic("lumi", "norm", ("signal", "bkg_a", "bkg_b"), kappa_up=1.025),
        Systematic("xs_a", "norm", ("bkg_a",), kappa_up=1.1),
    ),
    channels=(FixedChannel("cr_b", {"bkg_b": (200.0, 100.0), "other": (20.0, 30.0)},
                           variations={"jes": {"bkg_b": ((210.0, 104.0), (190.0, 97.0))}},
                           mc_uncertainty={"bkg_b": (10.0, 7.0)}),),
    n_bins=8,
    objective=Objective("generalised_variance"),
)


def test_three_processes_two_pois_and_a_control_region_train_through_train_models(tmp_path, inferno_builder):
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
        instances.append(Probe(THREE_PROCESS))
        return instances[-1]

    with contextlib.redirect_stdout(io.StringIO()):
        results, histories, _ = train_models(fy, n_models=1, bs=600, model_builder=inferno_builder(fy.cont_feats, n_bins=8),
                                             n_epochs=4, cb_partials=[make_cb], savepath=tmp_path / "w",
                                             live_fdbk=False)
    if torch.set_flush_denormal(False):  # where the CPU has the mode: on in every batch, off again afterwards
        assert flushed and all(flushed) and not denormals_flushed()
    cb, valid = instances[0], histories[0][0]["Validation"]
    assert len(valid) == 4 and np.isclose(valid[-1], cb.history["valid"][-1])  # LUMIN logs our loss
    assert np.isfinite(results[0]["loss"]) and min(valid) == pytest.approx(results[0]["loss"])
    assert np.mean(cb.history["train"][-3:]) < np.mean(cb.history["train"][:3])
    # log det of the POI covariance is the log of the product of the σ's times (1 - ρ²) ≤ 1
    sig = {p: cb.sigma["valid"][p][-1] for p in ("mu", "k_a")}
    assert valid[-1] <= 2 * np.log(sig["mu"] * sig["k_a"]) + 1e-9
    assert 0 < sig["mu"] < 10 and 0 < sig["k_a"] < 1
    assert list(histories[0][1]) == ["sigma_mu", "sigma_k_a"]  # every POI's σ in LUMIN's history
    assert all(len(v) == 4 and np.all(np.isfinite(v)) for v in histories[0][1].values())


# ---------------------------------------------------------------------------------------------- named errors
def test_missing_systematic_in_fold_file(shifted_file, paper_foldfiles, inferno_builder, tmp_path):
    fy = FoldYielder(shifted_file)
    base = _analysis()
    bad = _analysis(systematics=base.systematics + (Systematic("jes", "inputs", ("background",)),))
    with pytest.raises(FoldFileError, match=r"systematic 'jes' \(on \['background'\]\) has no shifted inputs"):
        _drive_approx(Model(inferno_builder(fy.cont_feats)), ApproxInfernoCallback(bad), fy)
    renamed = _analysis(systematics=(Systematic("r_shift", "inputs", ("background",), column="r"),
                                     Systematic("lambda", "inputs", ("background",))), nuisances=())
    loss, _, _ = _drive_approx(Model(inferno_builder(fy.cont_feats)), ApproxInfernoCallback(renamed), fy)
    assert torch.isfinite(loss)  # a systematic may read a column of another name
    plain = FoldYielder(paper_foldfiles[0])
    with pytest.raises(FoldFileError, match="holds no shifted systematics"):
        with contextlib.redirect_stdout(io.StringIO()):
            train_models(plain, n_models=1, bs=500, model_builder=inferno_builder(plain.cont_feats), n_epochs=1,
                         cb_partials=[partial(ApproxInfernoCallback, _analysis())], savepath=tmp_path / "w",
                         live_fdbk=False)


def test_batch_not_from_the_tracked_rows_is_caught(shifted_file, inferno_builder):
    fy = FoldYielder(shifted_file)
    with pytest.raises(ConfigurationError, match="not the fold's rows"):
        _drive_approx(Model(inferno_builder(fy.cont_feats)), ApproxInfernoCallback(_analysis()), fy,
                      tamper=lambda fp: setattr(fp.by.yielder, "inputs", fp.by.yielder.inputs[::-1].copy()))
    with pytest.raises(ConfigurationError, match="does not come from the row-tracking yielder"):
        _drive_approx(Model(inferno_builder(fy.cont_feats)), ApproxInfernoCallback(_analysis()), fy,
                      tamper=lambda fp: setattr(fp, "by", fp.by.yielder))


def test_process_and_label_errors(shifted_file, inferno_builder):
    fy = FoldYielder(shifted_file)
    a = _analysis()
    never = _analysis(processes=(Process("signal", 50.0, labels=(7,), role="signal"),
                                 Process("background", 1000.0, labels=(0, 1))))
    with pytest.raises(EmptyProcessError, match=r"process 'signal' \(labels \(7,\)\) has no events in"):
        _drive_approx(Model(inferno_builder(fy.cont_feats)), ApproxInfernoCallback(never), fy)
    orphan = _analysis(processes=(Process("signal", 50.0, labels=(5,), role="signal"), a.processes[1]))
    with pytest.raises(EmptyProcessError, match="process 'signal'"):
        _drive_approx(Model(inferno_builder(fy.cont_feats)), ApproxInfernoCallback(orphan), fy)
    no_bkg_label = _analysis(processes=(Process("signal", 50.0, labels=(1,), role="signal"),
                                        Process("background", 1000.0, labels=(3,))),
                             systematics=(), nuisances=())
    with pytest.raises((EmptyProcessError, TargetShapeError), match="background|belong to no process"):
        _drive_approx(Model(inferno_builder(fy.cont_feats)), ApproxInfernoCallback(no_bkg_label), fy)


def test_configuration_errors(shifted_file, inferno_builder):
    exact = _analysis(systematics=(Systematic("tes", "transform", ("background",),
                                              shifts=(InputShift("x0", scale=0.01),)),), nuisances=())
    with pytest.raises(ConfigurationError, match=r"\['tes'\] are exact input transforms"):
        ApproxInfernoCallback(exact)
    with pytest.raises(ConfigurationError, match="takes an Analysis"):
        ApproxInfernoCallback({"processes": []})
    fy = FoldYielder(shifted_file)
    with pytest.raises(ConfigurationError, match="6 outputs but the analysis's summary has n_bins = 5"):
        _drive_approx(Model(inferno_builder(fy.cont_feats)), ApproxInfernoCallback(_analysis(n_bins=5)), fy)


def test_inert_at_prediction(shifted_file, inferno_builder):
    fy = FoldYielder(shifted_file)
    model = Model(inferno_builder(fy.cont_feats))
    x = fy.get_fold(0)["inputs"][:50]
    assert np.allclose(model.predict(x, cbs=[ApproxInfernoCallback(_analysis())]), model.predict(x))


def test_multi_class_summary_trains_on_the_class_score_bins(tmp_path):
    """A ClassScoreTail (3 classes × 3 score bins, the analysts' binning relaxed) as the summary of approximate
    INFERNO: LUMIN trains it, the objective falls, and the hard binning of the trained network (argmax class ×
    score bin) is what the soft output tends to."""
    from lumin.nn.models.helpers import CatEmbedder
    from lumin.nn.models.model_builder import ModelBuilder

    from lumin_inferno import ClassScoreTail
    from lumin_inferno.evaluation import class_score_bins

    torch.manual_seed(0)
    np.random.seed(0)
    random.seed(0)
    fy = FoldYielder(_three_process_file(tmp_path))
    analysis = dataclasses.replace(THREE_PROCESS, n_bins=9)
    with contextlib.redirect_stdout(io.StringIO()):
        builder = ModelBuilder(objective="classification", n_out=9, cont_feats=fy.cont_feats,
                               cat_embedder=CatEmbedder([], []),
                               model_args={"body": {"width": 32, "depth": 2},
                                           "tail": {"n_classes": 3, "temperature": 0.1, "score_temperature": 0.03}},
                               tail=ClassScoreTail, opt_args={"opt": "adam", "lr": 3e-3})
        instances = []
        results, histories, _ = train_models(fy, n_models=1, bs=600, model_builder=builder, n_epochs=5,
                                             cb_partials=[lambda: instances.append(ApproxInfernoCallback(analysis))
                                                          or instances[-1]],
                                             savepath=tmp_path / "w", live_fdbk=False)
    cb = instances[0]
    assert np.mean(cb.history["train"][-3:]) < np.mean(cb.history["train"][:3])
    assert all(np.isfinite(histories[0][1]["sigma_mu"]))
    model = Model(builder)
    model.load(str(Path(results[0]["path"]) / "train_0.h5"))
    x = fy.get_fold(0)["inputs"]
    soft = model.predict(x)
    assert soft.shape == (len(x), 9) and np.allclose(soft.sum(1), 1, atol=1e-5)
    head_body, tail = model.model[:-1], model.model[-1]  # LUMIN's nn.Sequential(head, body, tail)
    with torch.no_grad():
        probs = torch.softmax(tail.dense(head_body(torch.as_tensor(x))), -1).numpy()
    hard = class_score_bins(probs, tail.edges.numpy())
    assert np.mean(soft.argmax(1) == hard) > 0.8


def test_negative_event_weights_enter_with_their_sign():
    """NLO-like samples: negative weights subtract from the soft template and add to its MC variance (w²); a bin
    whose batch sum is negative is clipped to 0 and counted."""
    from lumin_inferno.callbacks.common import nominal_soft_templates

    a = dataclasses.replace(THREE_PROCESS, n_bins=3)
    probs = torch.tensor([[1.0, 0, 0], [0, 1.0, 0], [0, 0, 1.0], [0, 0, 1.0], [1.0, 0, 0], [0, 1.0, 0]])
    w = torch.tensor([2.0, 1.0, 0.5, -1.0, 1.0, 1.0])
    labels = {"signal": [0, 1, 2, 3], "bkg_a": [4], "bkg_b": [5]}
    masks = {k: torch.tensor([i in v for i in range(6)]) for k, v in labels.items()}
    totals, nominal, variance, clipped = nominal_soft_templates(a, masks, probs, w, {"signal": 8, "bkg_a": 2,
                                                                                     "bkg_b": 2}, "train")
    assert float(totals["signal"]) == pytest.approx(2.5) and clipped == 1
    torch.testing.assert_close(nominal["signal"], torch.tensor([0.8, 0.4, 0.0], dtype=torch.float64))
    # Σ (w p / Σw)², scaled by 4 events in the batch of the 8 in the fold
    torch.testing.assert_close(variance["signal"], torch.tensor([0.64, 0.16, (0.04 + 0.16)], dtype=torch.float64) * 0.5)
    with pytest.raises(EmptyProcessError, match="'bkg_a'"):
        nominal_soft_templates(a, masks, probs, torch.tensor([2.0, 1.0, 0.5, -1.0, -1.0, 1.0]), {}, "valid")
