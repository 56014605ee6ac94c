"""ForwardTangents: Jacobian-vector products of LUMIN networks from their recorded activations."""

import contextlib
import io

import pytest
import torch
from lumin.nn.models.helpers import CatEmbedder
from lumin.nn.models.model_builder import ModelBuilder

from lumin_inferno import SoftmaxTemperatureTail, UnsupportedNetworkError
from lumin_inferno.models import ForwardTangents


def _net(act="relu", **body):
    with contextlib.redirect_stdout(io.StringIO()):
        builder = ModelBuilder(
            objective="classification", n_out=5, cont_feats=["a", "b", "c", "d"], cat_embedder=CatEmbedder([], []),
            model_args={"body": {"width": 16, "depth": 3, "act": act, **body}, "tail": {"temperature": 0.3}},
            tail=SoftmaxTemperatureTail,
        )
        return builder.get_model()[0].double()


@pytest.mark.parametrize("act", ["relu", "swish", "selu", "prelu", "sigmoid", "linear"])
def test_jvp_equals_autograd_and_is_differentiable(act):
    torch.manual_seed(0)
    net = _net(act)
    x = torch.randn(50, 4, dtype=torch.float64)
    directions = torch.randn(3, 20, 4, dtype=torch.float64)  # K=3 tangents for the first 20 rows
    tangents = ForwardTangents(net)
    tangents.attach()
    tangents.arm()
    out = net(x)
    assert tangents.output is out
    got = tangents.jvp(directions)
    expected = torch.stack([torch.func.jvp(net, (x[:20],), (d,))[1] for d in directions])
    assert got.shape == (3, 20, 5)
    assert torch.allclose(got, expected, rtol=1e-10, atol=1e-12)
    # the gradient of a function of the tangents w.r.t. the weights (INFERNO's second-order term) matches too
    params = [p for p in net.parameters()]
    g_got = torch.autograd.grad((got**2).sum(), params, allow_unused=True)

    def tangents_of(x_rows):
        return torch.stack([torch.func.jvp(net, (x_rows,), (d,))[1] for d in directions])

    g_exp = torch.autograd.grad((tangents_of(x[:20]) ** 2).sum(), params, allow_unused=True)
    for a, b in zip(g_got, g_exp):
        if b is None:
            assert a is None or torch.count_nonzero(a) == 0
        else:
            assert torch.allclose(a, b, rtol=1e-8, atol=1e-10)
    # recording is one-shot and the hooks come off
    net(x)
    assert tangents.output is out
    tangents.detach()
    assert not net._forward_hooks


@pytest.mark.parametrize("body, match", [({"bn": True}, "BatchNorm1d"), ({"do": 0.2}, "dropout with p=0.2"),
                                         ({"res": True}, "dense/res"), ({"dense": True}, "dense/res")])
def test_unsupported_layers_are_named(body, match):
    with pytest.raises(UnsupportedNetworkError, match=match):
        ForwardTangents(_net(**body))


def test_categorical_embeddings_and_unknown_modules_are_unsupported():
    with contextlib.redirect_stdout(io.StringIO()):
        builder = ModelBuilder(
            objective="classification", n_out=3, cont_feats=["a"], cat_embedder=CatEmbedder(["c"], [4]),
            model_args={"body": {"width": 8, "depth": 1}}, tail=SoftmaxTemperatureTail,
        )
    with pytest.raises(UnsupportedNetworkError, match="categorical"):
        ForwardTangents(builder.get_model()[0])
    with pytest.raises(UnsupportedNetworkError, match="LayerNorm has no forward-tangent rule"):
        ForwardTangents(torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.LayerNorm(2)))


def test_jvp_without_a_recorded_pass_is_an_error():
    tangents = ForwardTangents(_net())
    with pytest.raises(RuntimeError, match="arm"):
        tangents.jvp(torch.zeros(1, 2, 4, dtype=torch.float64))
