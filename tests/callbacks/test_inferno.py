"""InfernoCallback inside LUMIN's real fit loop, on fold files written to disk."""

import contextlib
import io
import random
from functools import partial
from pathlib import Path

import numpy as np
import pytest
import torch
from lumin.nn.callbacks.callback import Callback
from lumin.nn.data.fold_yielder import FoldYielder
from lumin.nn.ensemble.ensemble import Ensemble
from lumin.nn.models.abs_model import FitParams
from lumin.nn.models.model import Model
from lumin.nn.training.train import train_models

from lumin_inferno import (ConfigurationError, EmptyProcessError, HardBinPredHandler, InfernoCallback,
                           InputTransformError, InvalidModelSpecError, Parameter, TargetShapeError,
                           UnsupportedNetworkError)
from lumin_inferno.data import paper_benchmark
from lumin_inferno.callbacks import DenormalFlush
from lumin_inferno.callbacks.denormals import denormals_flushed
from lumin_inferno.data.paper import PaperNuisanceTransform

S0 = 50.0  # the paper's signal yield: Var(s) = 50² Var(μ)


def paper_cb(benchmark, n_bins=6, **kwargs):
    """InfernoCallback on the paper's benchmark as an Analysis (exact transform nuisances)."""
    bm = paper_benchmark(benchmark)
    transform = kwargs.pop("transform", bm.transform())
    return InfernoCallback(bm.analysis(n_bins=n_bins, kind="transform"), transform=transform, **kwargs)

_HAS_FTZ = torch.set_flush_denormal(False)  # True where the CPU can flush denormals (x86 with SSE3)


def _train(fy, builder, savepath, cb_partials, n_models=2, n_epochs=2, bs=500):
    with contextlib.redirect_stdout(io.StringIO()):
        return train_models(
            fy, n_models=n_models, bs=bs, model_builder=builder, n_epochs=n_epochs, cb_partials=cb_partials,
            savepath=Path(savepath), live_fdbk=False,
        )


def test_train_models_two_models_lowers_loss_and_gets_fresh_state(paper_foldfiles, inferno_builder, tmp_path):
    torch.manual_seed(0)
    np.random.seed(0)  # LUMIN shuffles batches with numpy's global generator...
    random.seed(0)  # ...and the training folds with Python's
    fy = FoldYielder(paper_foldfiles[0])
    instances = []

    def make_cb():
        cb = paper_cb(2)
        instances.append(cb)
        return cb

    results, histories, _ = _train(fy, inferno_builder(fy.cont_feats), tmp_path / "w", [make_cb], n_epochs=3)
    assert len(results) == 2 and len(instances) == 2 and instances[0] is not instances[1]
    assert all(cb.jacobian_used == "recorded" for cb in instances)
    for cb, hist, res in zip(instances, histories, results):
        train, valid = hist[0]["Training"], hist[0]["Validation"]
        assert len(valid) == 3 and len(train) == 3 * (fy.n_folds - 1)  # one training entry per training fold
        # the logged losses are the callback's (variance of μ), not a mean over events
        assert np.isclose(valid[-1], cb.history["valid"][-1])
        assert min(valid) == pytest.approx(res["loss"])
        assert np.mean(cb.history["train"][-4:]) < np.mean(cb.history["train"][:4])
        assert min(valid) < cb.history["train"][0]  # better than the untrained network
        # sigma(s) is bounded below by the background-free limit sqrt(s) and above by no separation sqrt(s+b)...
        assert 50 / S0**2 < valid[-1] < 5 * 1050 / S0**2
        assert cb.sigma["valid"]["mu"][-1] == pytest.approx(valid[-1] ** 0.5, rel=1e-9)
        # σ(μ) per epoch in LUMIN's metric history and results (mean of the epoch's validation batches)
        per_epoch = hist[1]["sigma_mu"]
        assert len(per_epoch) == 3 and per_epoch[-1] == pytest.approx(np.mean(cb.sigma["valid"]["mu"][-len(
            cb.sigma["valid"]["mu"]) // 3:]), rel=1e-9)
        assert res["sigma_mu"] == per_epoch[int(np.argmin(valid))]


def test_ensemble_hard_bins(paper_foldfiles, inferno_builder, tmp_path):
    fy = FoldYielder(paper_foldfiles[0])
    builder = inferno_builder(fy.cont_feats, n_bins=5)
    results, _, _ = _train(fy, builder, tmp_path / "w", [lambda: paper_cb(1, n_bins=5)])
    with contextlib.redirect_stdout(io.StringIO()):
        ens = Ensemble.from_results(results, size=2, model_builder=builder, metric="loss")
    x = FoldYielder(paper_foldfiles[1]).get_fold(0)["inputs"][:300]
    soft = ens.predict(x, verbose=False)
    votes = ens.predict(x, pred_cb=HardBinPredHandler(), verbose=False)
    assert soft.shape == votes.shape == (300, 5)
    assert np.allclose(soft.sum(1), 1, atol=1e-5)
    assert np.allclose(votes.sum(1), 1, atol=1e-5)  # weighted votes of the members
    # for a single model the handler gives the one-hot of the argmax
    m = ens.models[0]
    one_hot = m.predict(x, pred_cb=HardBinPredHandler())
    assert set(np.unique(one_hot)) <= {0.0, 1.0}
    assert np.array_equal(one_hot.argmax(1), m.predict(x).argmax(1))


# ---------------------------------------------------------------------------------------------- one batch by hand
def _batch(paper_foldfiles, n=400):
    fold = FoldYielder(paper_foldfiles[0]).get_fold(0)
    return (torch.tensor(fold["inputs"][:n]), torch.tensor(fold["targets"][:n], dtype=torch.float32),
            torch.tensor(fold["weights"][:n]))


def _loss_and_grads(model, cb, x, y, w):
    """Drive the callback through LUMIN's hooks for one training batch, as Model._fit_batch does."""
    model.fit_params = FitParams(cbs=[cb], state="train", x=x, y=y, w=w, loss_func=None)
    cb.set_model(model)
    cb.on_train_begin()
    cb.on_batch_begin()
    model.fit_params.y_pred = model.model(model.fit_params.x)
    cb.on_forwards_end()
    loss = model.fit_params.loss_val
    params = list(model.model.parameters())
    grads = torch.autograd.grad(loss, params, allow_unused=True)
    grads = [torch.zeros_like(p) if g is None else g for p, g in zip(params, grads)]
    cb.on_batch_end()
    cb.on_train_end()
    return loss.detach(), grads


def _assert_same_loss_and_grads(a, b):
    (la, ga), (lb, gb) = a, b
    assert torch.allclose(la, lb, rtol=1e-5)
    flat_a, flat_b = torch.cat([g.flatten() for g in ga]), torch.cat([g.flatten() for g in gb])
    assert float((flat_a - flat_b).norm() / flat_a.norm()) < 1e-4  # float32 network: agree to rounding


@pytest.mark.parametrize("benchmark", [2, 4])
def test_recorded_forward_and_reverse_jacobians_agree(paper_foldfiles, inferno_builder, benchmark):
    torch.manual_seed(1)
    fy = FoldYielder(paper_foldfiles[0])
    model = Model(inferno_builder(fy.cont_feats))
    x, y, w = _batch(paper_foldfiles)
    w = w * torch.linspace(0.5, 1.5, len(w))[:, None]  # non-trivial weights
    recorded = paper_cb(benchmark)
    BM = benchmark
    res_rec = _loss_and_grads(model, recorded, x, y, w)
    assert recorded.jacobian_used == "recorded"
    res_fwd = _loss_and_grads(model, paper_cb(BM, jacobian="forward"), x, y, w)
    res_rev = _loss_and_grads(model, paper_cb(BM, jacobian="reverse"), x, y, w)
    _assert_same_loss_and_grads(res_fwd, res_rev)
    _assert_same_loss_and_grads(res_fwd, res_rec)
    # the batch the caller passed in is untouched (the recorded mode reorders a copy, background first)
    assert torch.equal(x, _batch(paper_foldfiles)[0])


@pytest.mark.parametrize("act", ["swish", "selu", "prelu"])
def test_recorded_jacobian_with_smooth_activations(paper_foldfiles, inferno_builder, act):
    """Smooth activations contribute σ''(z) to the gradient through the tangents; the recorded route keeps it."""
    torch.manual_seed(3)
    fy = FoldYielder(paper_foldfiles[0])
    model = Model(inferno_builder(fy.cont_feats, act=act))
    x, y, w = _batch(paper_foldfiles)
    BM = 3
    cb = paper_cb(BM, jacobian="recorded")
    _assert_same_loss_and_grads(_loss_and_grads(model, cb, x, y, w),
                                _loss_and_grads(model, paper_cb(BM, jacobian="forward"), x, y, w))
    assert cb.jacobian_used == "recorded"


@pytest.mark.parametrize("body", [{"bn": True}, {"do": 0.1}, {"res": True}])
def test_unsupported_network_falls_back_or_raises(paper_foldfiles, inferno_builder, body):
    torch.manual_seed(4)
    fy = FoldYielder(paper_foldfiles[0])
    model = Model(inferno_builder(fy.cont_feats, **body))
    x, y, w = _batch(paper_foldfiles)
    BM = 2
    auto = paper_cb(BM)
    loss, _ = _loss_and_grads(model, auto, x, y, w)
    assert auto.jacobian_used == "forward" and "no recorded tangents" in auto.jacobian_note
    assert torch.isfinite(loss)
    with pytest.raises(UnsupportedNetworkError, match="BatchNorm1d|dropout with p=0.1|dense/res"):
        _loss_and_grads(model, paper_cb(BM, jacobian="recorded"), x, y, w)


class _SkipsSecondLayer(torch.nn.Sequential):
    def forward(self, x):
        return self[0](x)


class _RepeatsSecondLayer(torch.nn.Sequential):
    def forward(self, x):
        return self[1](self[1](self[0](x)))


@pytest.mark.parametrize("chain", [_SkipsSecondLayer, _RepeatsSecondLayer])
def test_recorded_jacobian_checked_against_generic_on_first_batch(paper_foldfiles, inferno_builder, chain):
    """A network that does not apply its layers as the plain chain they are listed in is caught on the first batch:
    auto mode warns and falls back (same loss as jacobian='forward'), recorded mode raises."""
    torch.manual_seed(5)
    fy = FoldYielder(paper_foldfiles[0])
    model = Model(inferno_builder(fy.cont_feats))
    body = model.model[1]
    body.layers = chain(*body.layers)
    x, y, w = _batch(paper_foldfiles)
    BM = 2
    auto = paper_cb(BM)
    with pytest.warns(RuntimeWarning, match="plain chain"):
        res_auto = _loss_and_grads(model, auto, x, y, w)
    assert auto.jacobian_used == "forward"
    _assert_same_loss_and_grads(res_auto, _loss_and_grads(model, paper_cb(BM, jacobian="forward"), x, y, w))
    with pytest.raises(UnsupportedNetworkError, match="plain chain"):
        _loss_and_grads(model, paper_cb(BM, jacobian="recorded"), x, y, w)


def test_transform_tangents_method_is_checked(paper_foldfiles, inferno_builder):
    torch.manual_seed(6)
    fy = FoldYielder(paper_foldfiles[0])
    model = Model(inferno_builder(fy.cont_feats))
    x, y, w = _batch(paper_foldfiles)

    class NoTangents:  # the same transform, derivatives by autograd
        def __call__(self, x, nuisances, mask):
            return PaperNuisanceTransform()(x, nuisances, mask)

    class WrongTangents(PaperNuisanceTransform):
        def tangents(self, x, names):
            return 2 * super().tangents(x, names)

    _assert_same_loss_and_grads(_loss_and_grads(model, paper_cb(2), x, y, w),
                                _loss_and_grads(model, paper_cb(2, transform=NoTangents()), x, y, w))
    with pytest.raises(InputTransformError, match="tangents differs"):
        _loss_and_grads(model, paper_cb(2, transform=WrongTangents()), x, y, w)


def test_loss_equals_inverse_hessian_of_exact_nll(paper_foldfiles, inferno_builder):
    """The Fisher-information loss equals (H⁻¹)_ss with H the full Hessian of the Asimov NLL, where ν depends on the
    nuisances non-linearly through the network (second derivatives included, Asimov data held fixed)."""
    torch.manual_seed(2)
    fy = FoldYielder(paper_foldfiles[0])
    model = Model(inferno_builder(fy.cont_feats))
    x, y, w = _batch(paper_foldfiles)
    loss, _ = _loss_and_grads(model, paper_cb(4), x, y, w)
    loss = loss * S0**2  # Var(s) in events²

    from lumin_inferno.data.paper import PaperTransform

    transform, net = PaperTransform(), model.model
    sig, bkg = y.view(-1) == 1, y.view(-1) == 0
    with torch.no_grad():
        sig_shape = net(x[sig]).double().mean(0) + 1e-7

    def expected(theta):  # theta = (s, b, r, lambda)
        xb = transform(x[bkg], {"r": theta[2], "lambda": theta[3]}, torch.ones(int(bkg.sum()), dtype=torch.bool))
        bkg_shape = net(xb.float()).double().mean(0) + 1e-7
        return theta[0] * sig_shape + theta[1] * bkg_shape

    theta0 = torch.tensor([50.0, 1000.0, 0.0, 3.0], dtype=torch.float64)
    asimov = expected(theta0).detach()

    def nll(theta):
        nu = expected(theta)
        constraint = 0.5 * ((theta[1] - 1000.0) / 100.0) ** 2 + 0.5 * (theta[2] / 0.4) ** 2
        constraint = constraint + 0.5 * ((theta[3] - 3.0) / 1.0) ** 2
        return (nu - asimov * torch.log(nu)).sum() + constraint

    with torch.no_grad():
        h = torch.func.hessian(nll)(theta0)
    assert float(torch.linalg.inv(h)[0, 0]) == pytest.approx(float(loss), rel=1e-4)


def test_callback_is_inert_at_prediction(paper_foldfiles, inferno_builder):
    fy = FoldYielder(paper_foldfiles[0])
    model = Model(inferno_builder(fy.cont_feats))
    x = fy.get_fold(0)["inputs"][:50]
    cb = paper_cb(2)
    assert np.allclose(model.predict(x, cbs=[cb]), model.predict(x))


# ---------------------------------------------------------------------------------------------- named errors
def _one_batch_error(paper_foldfiles, inferno_builder, cb, x=None, y=None, w=None, builder=None):
    fy = FoldYielder(paper_foldfiles[0])
    model = Model(builder or inferno_builder(fy.cont_feats))
    bx, by, bw = _batch(paper_foldfiles, 200)
    _loss_and_grads(model, cb, bx if x is None else x, by if y is None else y, bw if w is None else w)


def test_batch_without_signal_or_background(paper_foldfiles, inferno_builder):
    cb = paper_cb(2)
    x, y, w = _batch(paper_foldfiles, 200)
    with pytest.raises(EmptyProcessError, match="no events of process 'signal'"):
        _one_batch_error(paper_foldfiles, inferno_builder, cb, y=torch.zeros_like(y))
    with pytest.raises(EmptyProcessError, match="no events of process 'background'"):
        _one_batch_error(paper_foldfiles, inferno_builder, paper_cb(2), y=torch.ones_like(y))
    with pytest.raises(EmptyProcessError, match="zero total weight"):
        _one_batch_error(paper_foldfiles, inferno_builder, paper_cb(0),
                         w=torch.where(y.view(-1) == 1, 0.0, 1.0).unsqueeze(1))


def test_wrong_target_shape(paper_foldfiles, inferno_builder):
    x, y, w = _batch(paper_foldfiles, 200)
    with pytest.raises(TargetShapeError, match="one column"):
        _one_batch_error(paper_foldfiles, inferno_builder, paper_cb(2),
                         y=torch.cat([y, 1 - y], 1))
    with pytest.raises(TargetShapeError, match="integer process labels"):
        _one_batch_error(paper_foldfiles, inferno_builder, paper_cb(2),
                         y=y * 0.5 + 0.25)


def test_transform_errors(paper_foldfiles, inferno_builder):
    drops_column = lambda x, nuis, mask: x[:, :2]  # noqa: E731
    with pytest.raises(InputTransformError, match="input shape"):
        _one_batch_error(paper_foldfiles, inferno_builder, paper_cb(2, transform=drops_column))
    not_identity = lambda x, nuis, mask: PaperNuisanceTransform()(x, nuis, mask) + 0.05  # noqa: E731
    with pytest.raises(InputTransformError, match="unchanged at the nominal"):
        _one_batch_error(paper_foldfiles, inferno_builder, paper_cb(2, transform=not_identity))
    ignores = lambda x, nuis, mask: x * 1.0  # noqa: E731  (does not depend on the nuisances at all)
    with pytest.raises(InputTransformError, match="does not depend on the nuisances"):
        _one_batch_error(paper_foldfiles, inferno_builder, paper_cb(2, transform=ignores, jacobian="forward"))

    def in_place(x, nuis, mask):
        x[:, 0] += 0.0 * nuis["r"]
        return x

    with pytest.raises(InputTransformError, match="in place"):
        _one_batch_error(paper_foldfiles, inferno_builder, paper_cb(2, transform=in_place))


def test_spec_mismatches():
    bm = paper_benchmark(2)
    with pytest.raises(InvalidModelSpecError, match=r"\['r', 'lambda'\] declare no input shifts"):
        InfernoCallback(bm.analysis(kind="transform"))
    with pytest.raises(InvalidModelSpecError, match="jacobian"):
        InfernoCallback(bm.analysis(kind="transform"), transform=bm.transform(), jacobian="central")
    assert InfernoCallback(paper_benchmark(0).analysis()).jacobian == "auto"
    with pytest.raises(ConfigurationError, match="train with ApproxInfernoCallback"):
        InfernoCallback(bm.analysis(kind="inputs"))
    with pytest.raises(ConfigurationError, match="takes an Analysis"):
        InfernoCallback({"poi": Parameter("s", 50.0)})


def test_model_without_softmax_output(paper_foldfiles, tmp_path):
    from lumin.nn.models.helpers import CatEmbedder
    from lumin.nn.models.model_builder import ModelBuilder

    fy = FoldYielder(paper_foldfiles[0])
    with contextlib.redirect_stdout(io.StringIO()):
        sigmoid = ModelBuilder(objective="classification", n_out=1, cont_feats=fy.cont_feats,
                               cat_embedder=CatEmbedder([], []), model_args={"body": {"width": 8, "depth": 1}})
        logsoftmax = ModelBuilder(objective="multiclass", n_out=4, cont_feats=fy.cont_feats,
                                  cat_embedder=CatEmbedder([], []), model_args={"body": {"width": 8, "depth": 1}})
    for builder, match in ((sigmoid, ">= 2 bins"), (logsoftmax, "not probabilities")):
        with pytest.raises(ConfigurationError, match=match):
            _one_batch_error(paper_foldfiles, None, paper_cb(0),
                             builder=builder)


def test_batch_size_larger_than_fold(paper_foldfiles, inferno_builder, tmp_path):
    fy = FoldYielder(paper_foldfiles[0])
    with pytest.raises(ConfigurationError, match="larger than training fold"):
        _train(fy, inferno_builder(fy.cont_feats), tmp_path / "w",
               [lambda: paper_cb(0)], n_models=1, bs=100_000)


# ------------------------------------------------------------------------------------------- denormal numbers
@pytest.mark.skipif(not _HAS_FTZ, reason="this CPU cannot flush denormal numbers")
def test_denormal_flush_probe_and_restore():
    assert not denormals_flushed()
    flush = DenormalFlush()
    flush.begin()
    assert denormals_flushed()
    assert float(torch.tensor([3e-39]) * 0.5) == 0.0  # a denormal result is zero while flushing
    flush.end()
    assert not denormals_flushed() and float(torch.tensor([3e-39]) * 0.5) > 0
    torch.set_flush_denormal(True)  # a mode the user set is put back, not switched off
    try:
        flush.begin()
        flush.end()
        assert denormals_flushed()
    finally:
        torch.set_flush_denormal(False)
    off = DenormalFlush(enabled=False)
    off.begin()
    assert not denormals_flushed()
    off.end()


class _ProbeDenormals(Callback):
    """Records, for every batch, whether denormals are flushed when the loss is computed."""

    def __init__(self, seen):
        super().__init__()
        self.seen = seen

    def on_forwards_end(self) -> None:
        self.seen.append(denormals_flushed())


@pytest.mark.skipif(not _HAS_FTZ, reason="this CPU cannot flush denormal numbers")
@pytest.mark.parametrize("flush", [True, False])
def test_denormals_flushed_inside_lumin_batches_only(paper_foldfiles, inferno_builder, tmp_path, flush):
    fy = FoldYielder(paper_foldfiles[0])
    seen: list = []
    cbs = [lambda: paper_cb(2, flush_denormals=flush),
           partial(_ProbeDenormals, seen)]
    _train(fy, inferno_builder(fy.cont_feats), tmp_path / "w", cbs, n_models=1, n_epochs=1)
    assert len(seen) > 2 and set(seen) == {flush}  # training and validation batches alike
    assert not denormals_flushed()  # the process-wide default is back after training


@pytest.mark.skipif(not _HAS_FTZ, reason="this CPU cannot flush denormal numbers")
def test_flushing_denormals_leaves_loss_and_gradients(paper_foldfiles, inferno_builder):
    torch.manual_seed(3)
    fy = FoldYielder(paper_foldfiles[0])
    model = Model(inferno_builder(fy.cont_feats))
    x, y, w = _batch(paper_foldfiles)
    # saturate the network, as training at low temperature does: the last layer scaled until the far bins'
    # probabilities (and their gradients) fall into float32's denormal range (< 1.18e-38)
    last = [m for m in model.model.modules() if isinstance(m, torch.nn.Linear)][-1]
    with torch.no_grad():
        last.weight.mul_(40.0)
        last.bias.mul_(40.0)
        probs = model.model(x)
    tiny = torch.finfo(torch.float32).tiny
    assert bool(((probs > 0) & (probs < tiny)).any()), f"no denormal output (smallest {float(probs[probs > 0].min())})"
    on = _loss_and_grads(model, paper_cb(4, flush_denormals=True), x, y, w)
    off = _loss_and_grads(model, paper_cb(4, flush_denormals=False), x, y, w)
    _assert_same_loss_and_grads(on, off)


@pytest.mark.skipif(not _HAS_FTZ, reason="this CPU cannot flush denormal numbers")
def test_error_in_a_batch_does_not_leave_denormals_flushed(paper_foldfiles, inferno_builder):
    x, y, w = _batch(paper_foldfiles, 200)
    with pytest.raises(EmptyProcessError, match="process 'signal'"):  # raised in on_batch_begin
        _one_batch_error(paper_foldfiles, inferno_builder, paper_cb(2),
                         y=torch.zeros_like(y))
    assert not denormals_flushed()
    with pytest.raises(EmptyProcessError, match="zero total weight"):  # raised in on_forwards_end
        _one_batch_error(paper_foldfiles, inferno_builder, paper_cb(0),
                         w=torch.where(y.view(-1) == 1, 0.0, 1.0).unsqueeze(1))
    assert not denormals_flushed()


# ------------------------------------------------------------------------------- several processes, declared shifts
def _four_process_file(directory: Path, n_per_class: int = 800, seed: int = 0):
    """sig_a, sig_b, bkg_1, bkg_2 (labels 0-3) on three raw features, stored standardised with a fitted
    StandardScaler that the FoldYielder gets as its input pipe."""
    import pandas as pd
    from sklearn.preprocessing import StandardScaler

    from lumin_inferno.data.systematics import write_systematics_foldfile

    rng = np.random.default_rng(seed)
    means = {0: (60.0, 0.5, 1.0), 1: (45.0, -0.5, 2.0), 2: (40.0, 0.0, 0.0), 3: (55.0, 1.0, -1.0)}
    feats = ["pt", "eta", "mass"]
    df = pd.concat([pd.DataFrame(rng.normal(m, (10.0, 1.0, 1.0), (n_per_class, 3)), columns=feats).assign(label=k)
                    for k, m in means.items()]).sample(frac=1.0, random_state=seed).reset_index(drop=True)
    pipe = StandardScaler().fit(df[feats].to_numpy())
    df[feats] = pipe.transform(df[feats].to_numpy()).astype(np.float32)
    df["weight"] = np.float32(1.0)
    path = write_systematics_foldfile(directory / "four", df, 3, feats, "label", {}, {"none": (df["weight"],
                                      df["weight"])}, wgt_feat="weight", strat_key="label")
    return FoldYielder(path, input_pipe=pipe)


def _four_process_analysis(**changes):
    from lumin_inferno.analysis import (Analysis, FixedChannel, InputShift, NormFactor, Objective, Process,
                                        Systematic)

    d = dict(
        processes=(Process("sig_a", 40.0, labels=(0,), role="signal"), Process("sig_b", 25.0, labels=(1,),
                                                                               role="signal"),
                   Process("bkg_1", 500.0, labels=(2,)), Process("bkg_2", 300.0, labels=(3,))),
        factors=(NormFactor("mu_a", ("sig_a",)), NormFactor("mu_b", ("sig_b",)),
                 NormFactor("k_2", ("bkg_2",), poi=False)),
        systematics=(Systematic("pt_scale", "transform", ("sig_a", "sig_b", "bkg_1", "bkg_2"),
                                shifts=(InputShift("pt", scale=0.03),)),
                     Systematic("eta_shift", "transform", ("bkg_1",), shifts=(InputShift("eta", shift=0.2),)),
                     Systematic("lumi_13TeV", "norm", ("sig_a", "sig_b", "bkg_1"), kappa_up=1.025)),
        channels=(FixedChannel("cr", {"bkg_2": (150.0, 120.0), "bkg_1": (20.0, 10.0)},
                               variations={"pt_scale": {"bkg_2": ((153.0, 118.0), (147.0, 122.0))}},
                               mc_uncertainty={"bkg_2": (9.0, 8.0)}),),
        n_bins=6,
        objective=Objective("generalised_variance"),
    )
    d.update(changes)
    return Analysis(**d)


def _fy_loss_and_grads(model, cb, fy, n=600):
    fold = fy.get_fold(0)
    x = torch.tensor(fold["inputs"][:n])
    y = torch.tensor(fold["targets"][:n], dtype=torch.float32)
    w = torch.tensor(fold["weights"][:n]) * torch.linspace(0.5, 1.5, n)[:, None]
    model.fit_params = FitParams(cbs=[cb], state="train", x=x, y=y, w=w, loss_func=None, fy=fy)
    cb.set_model(model)
    cb.on_train_begin()
    cb.on_batch_begin()
    model.fit_params.y_pred = model.model(model.fit_params.x)
    cb.on_forwards_end()
    loss = model.fit_params.loss_val
    grads = torch.autograd.grad(loss, list(model.model.parameters()))
    cb.on_batch_end()
    cb.on_train_end()
    return loss.detach(), grads


def test_several_processes_declared_shifts_all_jacobians_agree(inferno_builder, tmp_path):
    torch.manual_seed(8)
    fy = _four_process_file(tmp_path)
    model = Model(inferno_builder(fy.cont_feats))
    a = _four_process_analysis()
    rec = InfernoCallback(a)
    res = {"recorded": _fy_loss_and_grads(model, rec, fy)}
    assert rec.jacobian_used == "recorded"
    for mode in ("forward", "reverse"):
        res[mode] = _fy_loss_and_grads(model, InfernoCallback(a, jacobian=mode), fy)
    _assert_same_loss_and_grads(res["forward"], res["recorded"])
    _assert_same_loss_and_grads(res["forward"], res["reverse"])
    assert set(rec.sigma["train"]) == {"mu_a", "mu_b"}


def test_declared_shift_is_the_physical_shift_through_the_input_pipe(tmp_path):
    """InputShiftTransform moves the raw feature by scale·x (+ shift) per unit α, in standardised space."""
    from lumin_inferno.data.shifts import InputShiftTransform

    fy = _four_process_file(tmp_path)
    a = _four_process_analysis()
    t = InputShiftTransform(a, fy.cont_feats, fy.input_pipe)
    x = torch.tensor(fy.get_fold(0)["inputs"][:50], dtype=torch.float64)
    moved = t(x, {"pt_scale": torch.tensor(1.5, dtype=torch.float64)}, torch.ones(50, dtype=torch.bool))
    raw, raw_moved = (fy.input_pipe.inverse_transform(v.numpy()) for v in (x, moved))
    assert np.allclose(raw_moved[:, 0], raw[:, 0] * (1 + 1.5 * 0.03), rtol=1e-10)
    assert np.allclose(raw_moved[:, 1:], raw[:, 1:])
    shifted = t(x, {"eta_shift": torch.tensor(-1.0, dtype=torch.float64)}, torch.ones(50, dtype=torch.bool))
    assert np.allclose(fy.input_pipe.inverse_transform(shifted.numpy())[:, 1], raw[:, 1] - 0.2, atol=1e-10)


def test_several_processes_train_through_train_models(inferno_builder, tmp_path):
    torch.manual_seed(0)
    np.random.seed(0)
    random.seed(0)
    fy = _four_process_file(tmp_path)
    instances = []

    def make():
        instances.append(InfernoCallback(_four_process_analysis()))
        return instances[-1]

    _, histories, _ = _train(fy, inferno_builder(fy.cont_feats), tmp_path / "w", [make], n_models=1, n_epochs=4,
                             bs=600)
    cb, valid = instances[0], histories[0][0]["Validation"]
    assert np.isclose(valid[-1], cb.history["valid"][-1])
    assert np.mean(cb.history["train"][-3:]) < np.mean(cb.history["train"][:3])
    assert valid[-1] <= 2 * np.log(cb.sigma["valid"]["mu_a"][-1] * cb.sigma["valid"]["mu_b"][-1]) + 1e-9


def test_hooks_driven_by_hand_leave_no_recording_hooks(paper_foldfiles, inferno_builder):
    # without on_train_begin/on_train_end (a script driving one batch) the callback must not leave forward hooks
    # on the network: they would keep the last batch's activations alive
    fy = FoldYielder(paper_foldfiles[0])
    model = Model(inferno_builder(fy.cont_feats))
    fold = fy.get_fold(0)
    x = torch.as_tensor(fold["inputs"][:400])
    y = torch.as_tensor(fold["targets"][:400]).reshape(-1, 1).float()
    cb = paper_cb(2)
    model.fit_params = FitParams(cbs=[cb], state="train", x=x, y=y, w=None, loss_func=None)
    cb.set_model(model)
    cb.on_batch_begin()
    model.fit_params.y_pred = model.model(model.fit_params.x)
    cb.on_forwards_end()
    assert torch.isfinite(model.fit_params.loss_val)
    cb.on_batch_end()
    assert not any(m._forward_hooks for m in model.model.modules())


# ---------------------------------------------------------------------------------------------- template average
def _drive(model, cb, batches, state="train"):
    """Per batch (x, y, w): (loss, grads) with LUMIN's hooks driven by hand, one training epoch."""
    model.fit_params = FitParams(cbs=[cb], state=state, x=None, y=None, w=None, loss_func=None)
    cb.set_model(model)
    cb.on_train_begin()
    cb.on_epoch_begin()
    out = []
    for x, y, w in batches:
        fp = model.fit_params
        fp.x, fp.y, fp.w = x, y, w
        cb.on_batch_begin()
        fp.y_pred = model.model(fp.x)
        cb.on_forwards_end()
        params = list(model.model.parameters())
        grads = torch.autograd.grad(fp.loss_val, params, allow_unused=True)
        out.append((fp.loss_val.detach(), [torch.zeros_like(p) if g is None else g for p, g in zip(params, grads)]))
        cb.on_batch_end()
    cb.on_train_end()
    return out


def test_template_average_is_the_objective_of_the_averaged_templates(paper_foldfiles, inferno_builder):
    """With template_average β the loss of batch t is the objective of β·T̄ₜ₋₁ + (1 − β)·Tₜ and its gradient is
    that objective's gradient through the current batch's templates, divided by (1 − β); the first batch of an epoch
    is the plain per-batch loss; validation batches are never averaged."""
    from lumin_inferno.analysis import SummaryTemplates, template_model
    from lumin_inferno.statistics.hessian import fisher_information
    from lumin_inferno.statistics.objectives import model_objective

    torch.manual_seed(3)
    fy = FoldYielder(paper_foldfiles[0])
    model = Model(inferno_builder(fy.cont_feats))
    x, y, w = _batch(paper_foldfiles, 1200)
    batches = [(x[i:i + 400], y[i:i + 400], w[i:i + 400]) for i in (0, 400, 800)]
    beta = 0.7
    averaged = _drive(model, paper_cb(4, template_average=beta), batches)
    plain = _drive(model, paper_cb(4), batches)
    _assert_same_loss_and_grads(averaged[0], plain[0])  # the average starts at the epoch's first batch
    assert not torch.allclose(averaged[1][0], plain[1][0], rtol=1e-3)

    # the reference: templates of each batch from a β = 0 callback, averaged by hand
    ref = paper_cb(4)
    model.fit_params = FitParams(cbs=[ref], state="train", x=None, y=None, w=None, loss_func=None)
    ref.set_model(model)
    ref.on_train_begin()
    past = None
    for t, (bx, by, bw) in enumerate(batches):
        fp = model.fit_params
        fp.x, fp.y, fp.w = bx, by, bw
        ref.on_batch_begin()
        fp.y_pred = model.model(fp.x)
        now = ref.summary_templates(fp.y_pred, fp.w.reshape(-1))
        ref.on_batch_end()
        if past is None:
            mix = now
        else:
            def avg(a, b):
                return beta * a.detach() + (1 - beta) * b
            mix = SummaryTemplates({p: avg(past.nominal[p], v) for p, v in now.nominal.items()},
                                   {k: (avg(past.shifted[k][0], u), avg(past.shifted[k][1], d))
                                    for k, (u, d) in now.shifted.items()})
        a = ref.analysis
        tm = template_model(a, mix)
        value = model_objective(tm, fisher_information(tm), [tm.index(p) for p in a.objective_pois],
                                a.objective.kind, a.objective.weights)
        grads = torch.autograd.grad(value, list(model.model.parameters()), allow_unused=True)
        scale = 1.0 if past is None else 1 - beta
        grads = [torch.zeros_like(p) if g is None else g / scale for p, g in zip(model.model.parameters(), grads)]
        _assert_same_loss_and_grads(averaged[t], (value.detach(), grads))
        past = SummaryTemplates({p: v.detach() for p, v in mix.nominal.items()},
                                {k: (u.detach(), d.detach()) for k, (u, d) in mix.shifted.items()})
    ref.on_train_end()

    valid_avg = _drive(model, paper_cb(4, template_average=beta), batches, state="valid")
    valid_plain = _drive(model, paper_cb(4), batches, state="valid")
    for (la, _), (lb, _) in zip(valid_avg, valid_plain):
        assert torch.allclose(la, lb)


def test_template_average_restarts_every_epoch_and_is_checked(paper_foldfiles, inferno_builder, tmp_path):
    with pytest.raises(ConfigurationError, match="template_average"):
        paper_cb(2, template_average=1.0)
    fy = FoldYielder(paper_foldfiles[0])
    starts = []

    class Spy(Callback):  # records the callback's average when each training epoch begins (after its reset)
        def on_epoch_begin(self):
            if self.model.fit_params.state == "train":
                cb = next(c for c in self.model.fit_params.cbs if isinstance(c, InfernoCallback))
                starts.append(len(cb._average))

    _train(fy, inferno_builder(fy.cont_feats), tmp_path / "w", [partial(paper_cb, 2, template_average=0.9), Spy],
           n_models=1, n_epochs=2)
    assert starts == [0, 0]
