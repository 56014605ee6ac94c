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

from lumin_inferno import (
    ConfigurationError,
    EmptyProcessError,
    HardBinPredHandler,
    InfernoCallback,
    InputTransformError,
    InvalidModelSpec,
    Parameter,
    TargetShapeError,
    UnsupportedNetworkError,
    paper_benchmark,
)
from lumin_inferno.callbacks import DenormalFlush
from lumin_inferno.callbacks.inferno import denormals_flushed
from lumin_inferno.data.paper import PaperTransform

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
        cb = InfernoCallback(**paper_benchmark(2).callback_kwargs())
        instances.append(cb)
        return cb

    results, histories, _ = _train(fy, inferno_builder(fy.cont_feats), tmp_path / "w", [make_cb], n_epochs=3)
    assert len(results) == 2 and len(instances) == 2 and instances[0] is not instances[1]
    assert all(cb.jacobian_used == "recorded" for cb in instances)
    for cb, hist, res in zip(instances, histories, results):
        train, valid = hist[0]["Training"], hist[0]["Validation"]
        assert len(valid) == 3
        # the logged losses are the callback's (variance of s, events^2), not a mean over events
        assert np.isclose(valid[-1], cb.history["valid"][-1])
        assert min(valid) == pytest.approx(res["loss"])
        assert np.mean(cb.history["train"][-4:]) < np.mean(cb.history["train"][:4])
        assert min(valid) < cb.history["train"][0]  # better than the untrained network
        # sigma(s) is bounded below by the background-free limit sqrt(s) and above by no separation sqrt(s+b)...
        assert 50 < valid[-1] < 5 * 1050


def test_ensemble_hard_bins(paper_foldfiles, inferno_builder, tmp_path):
    fy = FoldYielder(paper_foldfiles[0])
    builder = inferno_builder(fy.cont_feats, n_bins=5)
    results, _, _ = _train(fy, builder, tmp_path / "w", [partial(InfernoCallback, **paper_benchmark(1).callback_kwargs())])
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
    kw = paper_benchmark(benchmark).callback_kwargs()
    recorded = InfernoCallback(**kw)
    res_rec = _loss_and_grads(model, recorded, x, y, w)
    assert recorded.jacobian_used == "recorded"
    res_fwd = _loss_and_grads(model, InfernoCallback(jacobian="forward", **kw), x, y, w)
    res_rev = _loss_and_grads(model, InfernoCallback(jacobian="reverse", **kw), x, y, w)
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
    kw = paper_benchmark(3).callback_kwargs()
    cb = InfernoCallback(jacobian="recorded", **kw)
    _assert_same_loss_and_grads(_loss_and_grads(model, cb, x, y, w),
                                _loss_and_grads(model, InfernoCallback(jacobian="forward", **kw), x, y, w))
    assert cb.jacobian_used == "recorded"


@pytest.mark.parametrize("body", [{"bn": True}, {"do": 0.1}, {"res": True}])
def test_unsupported_network_falls_back_or_raises(paper_foldfiles, inferno_builder, body):
    torch.manual_seed(4)
    fy = FoldYielder(paper_foldfiles[0])
    model = Model(inferno_builder(fy.cont_feats, **body))
    x, y, w = _batch(paper_foldfiles)
    kw = paper_benchmark(2).callback_kwargs()
    auto = InfernoCallback(**kw)
    loss, _ = _loss_and_grads(model, auto, x, y, w)
    assert auto.jacobian_used == "forward" and "no recorded tangents" in auto.jacobian_note
    assert torch.isfinite(loss)
    with pytest.raises(UnsupportedNetworkError, match="BatchNorm1d|dropout with p=0.1|dense/res"):
        _loss_and_grads(model, InfernoCallback(jacobian="recorded", **kw), x, y, w)


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
    kw = paper_benchmark(2).callback_kwargs()
    auto = InfernoCallback(**kw)
    with pytest.warns(RuntimeWarning, match="plain chain"):
        res_auto = _loss_and_grads(model, auto, x, y, w)
    assert auto.jacobian_used == "forward"
    _assert_same_loss_and_grads(res_auto, _loss_and_grads(model, InfernoCallback(jacobian="forward", **kw), x, y, w))
    with pytest.raises(UnsupportedNetworkError, match="plain chain"):
        _loss_and_grads(model, InfernoCallback(jacobian="recorded", **kw), x, y, w)


def test_transform_tangents_method_is_checked(paper_foldfiles, inferno_builder):
    torch.manual_seed(6)
    fy = FoldYielder(paper_foldfiles[0])
    model = Model(inferno_builder(fy.cont_feats))
    x, y, w = _batch(paper_foldfiles)
    kw = paper_benchmark(2).callback_kwargs()

    class NoTangents:  # the same transform, derivatives by autograd
        def __call__(self, x, nuisances, mask):
            return PaperTransform()(x, nuisances, mask)

    class WrongTangents(PaperTransform):
        def tangents(self, x, names):
            return 2 * super().tangents(x, names)

    _assert_same_loss_and_grads(_loss_and_grads(model, InfernoCallback(**kw), x, y, w),
                                _loss_and_grads(model, InfernoCallback(**{**kw, "transform": NoTangents()}), x, y, w))
    with pytest.raises(InputTransformError, match="tangents differs"):
        _loss_and_grads(model, InfernoCallback(**{**kw, "transform": WrongTangents()}), x, y, w)


def test_loss_equals_inverse_hessian_of_exact_nll(paper_foldfiles, inferno_builder):
    """The Fisher-information loss equals (H⁻¹)_ss with H the full Hessian of the Asimov NLL, where ν depends on the
    nuisances non-linearly through the network (second derivatives included, Asimov data held fixed)."""
    torch.manual_seed(2)
    fy = FoldYielder(paper_foldfiles[0])
    model = Model(inferno_builder(fy.cont_feats))
    x, y, w = _batch(paper_foldfiles)
    bm = paper_benchmark(4)
    kw = bm.callback_kwargs()
    loss, _ = _loss_and_grads(model, InfernoCallback(**kw), x, y, w)

    transform, net = kw["transform"], model.model
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
    cb = InfernoCallback(**paper_benchmark(2).callback_kwargs())
    assert np.allclose(model.predict(x, cbs=[cb]), model.predict(x))


# ---------------------------------------------------------------------------------------------- named errors
def _one_batch_error(paper_foldfiles, inferno_builder, cb, x=None, y=None, w=None, builder=None):
    fy = FoldYielder(paper_foldfiles[0])
    model = Model(builder or inferno_builder(fy.cont_feats))
    bx, by, bw = _batch(paper_foldfiles, 200)
    _loss_and_grads(model, cb, bx if x is None else x, by if y is None else y, bw if w is None else w)


def test_batch_without_signal_or_background(paper_foldfiles, inferno_builder):
    cb = InfernoCallback(**paper_benchmark(2).callback_kwargs())
    x, y, w = _batch(paper_foldfiles, 200)
    with pytest.raises(EmptyProcessError, match="no signal events"):
        _one_batch_error(paper_foldfiles, inferno_builder, cb, y=torch.zeros_like(y))
    with pytest.raises(EmptyProcessError, match="no background events"):
        _one_batch_error(paper_foldfiles, inferno_builder, InfernoCallback(**paper_benchmark(2).callback_kwargs()),
                         y=torch.ones_like(y))
    with pytest.raises(EmptyProcessError, match="zero total weight"):
        _one_batch_error(paper_foldfiles, inferno_builder, InfernoCallback(**paper_benchmark(0).callback_kwargs()),
                         w=torch.where(y.view(-1) == 1, 0.0, 1.0).unsqueeze(1))


def test_wrong_target_shape(paper_foldfiles, inferno_builder):
    x, y, w = _batch(paper_foldfiles, 200)
    with pytest.raises(TargetShapeError, match="one column"):
        _one_batch_error(paper_foldfiles, inferno_builder, InfernoCallback(**paper_benchmark(2).callback_kwargs()),
                         y=torch.cat([y, 1 - y], 1))
    with pytest.raises(TargetShapeError, match="integer process labels"):
        _one_batch_error(paper_foldfiles, inferno_builder, InfernoCallback(**paper_benchmark(2).callback_kwargs()),
                         y=y * 0.5 + 0.25)


def test_transform_errors(paper_foldfiles, inferno_builder):
    kw = paper_benchmark(2).callback_kwargs()
    drops_column = lambda x, nuis, mask: x[:, :2]  # noqa: E731
    with pytest.raises(InputTransformError, match="input shape"):
        _one_batch_error(paper_foldfiles, inferno_builder, InfernoCallback(**{**kw, "transform": drops_column}))
    not_identity = PaperTransform(r0=0.3)  # believes the sample was generated at r = 0.3
    with pytest.raises(InputTransformError, match="unchanged at the nominal"):
        _one_batch_error(paper_foldfiles, inferno_builder, InfernoCallback(**{**kw, "transform": not_identity}))

    def in_place(x, nuis, mask):
        x[:, 0] += 0.0 * nuis["r"]
        return x

    with pytest.raises(InputTransformError, match="in place"):
        _one_batch_error(paper_foldfiles, inferno_builder, InfernoCallback(**{**kw, "transform": in_place}))


def test_spec_mismatches():
    with pytest.raises(InvalidModelSpec, match="need an input transform"):
        InfernoCallback(poi=Parameter("s", 50.0), background=1000.0, shape_nuisances=[Parameter("r", 0.0)])
    with pytest.raises(InvalidModelSpec, match="unique"):
        InfernoCallback(poi=Parameter("s", 50.0), background=Parameter("s", 1000.0))
    with pytest.raises(InvalidModelSpec, match="jacobian"):
        InfernoCallback(poi=Parameter("s", 50.0), background=1000.0, jacobian="central")
    assert InfernoCallback(poi=Parameter("s", 50.0), background=1000.0).jacobian == "auto"
    with pytest.raises(InvalidModelSpec, match="background yield"):
        InfernoCallback(poi=Parameter("s", 50.0), background=0.0)


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
            _one_batch_error(paper_foldfiles, None, InfernoCallback(**paper_benchmark(0).callback_kwargs()),
                             builder=builder)


def test_batch_size_larger_than_fold(paper_foldfiles, inferno_builder, tmp_path):
    fy = FoldYielder(paper_foldfiles[0])
    with pytest.raises(ConfigurationError, match="larger than training fold"):
        _train(fy, inferno_builder(fy.cont_feats), tmp_path / "w",
               [partial(InfernoCallback, **paper_benchmark(0).callback_kwargs())], n_models=1, bs=100_000)


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
    cbs = [partial(InfernoCallback, flush_denormals=flush, **paper_benchmark(2).callback_kwargs()),
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
    kw = paper_benchmark(4).callback_kwargs()
    on = _loss_and_grads(model, InfernoCallback(flush_denormals=True, **kw), x, y, w)
    off = _loss_and_grads(model, InfernoCallback(flush_denormals=False, **kw), x, y, w)
    _assert_same_loss_and_grads(on, off)


@pytest.mark.skipif(not _HAS_FTZ, reason="this CPU cannot flush denormal numbers")
def test_error_in_a_batch_does_not_leave_denormals_flushed(paper_foldfiles, inferno_builder):
    x, y, w = _batch(paper_foldfiles, 200)
    with pytest.raises(EmptyProcessError, match="no signal"):  # raised in on_batch_begin
        _one_batch_error(paper_foldfiles, inferno_builder, InfernoCallback(**paper_benchmark(2).callback_kwargs()),
                         y=torch.zeros_like(y))
    assert not denormals_flushed()
    with pytest.raises(EmptyProcessError, match="zero total weight"):  # raised in on_forwards_end
        _one_batch_error(paper_foldfiles, inferno_builder, InfernoCallback(**paper_benchmark(0).callback_kwargs()),
                         w=torch.where(y.view(-1) == 1, 0.0, 1.0).unsqueeze(1))
    assert not denormals_flushed()
