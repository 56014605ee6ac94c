"""The searches' objectives (discovery significance, expected CLs limit) as INFERNO losses through the callbacks."""

import pytest
import torch
from lumin.nn.data.fold_yielder import FoldYielder
from lumin.nn.models.model import Model

from lumin_inferno.analysis import Objective
from lumin_inferno.callbacks.approx_inferno import ApproxInfernoCallback
from lumin_inferno.statistics.search import discovery_significance, expected_cls_upper_limit

from .test_approx_inferno import _analysis, _drive_approx, _paper_file


@pytest.mark.parametrize("kind", ["discovery", "cls_limit"])
def test_search_objective_is_the_batch_likelihoods_figure(kind, tmp_path, inferno_builder):
    fy = FoldYielder(_paper_file(tmp_path, "train", {"r": 0.2, "lambda": 0.5}, n=1200))
    torch.manual_seed(0)
    model = Model(inferno_builder(fy.cont_feats, n_bins=6))
    cb = ApproxInfernoCallback(_analysis(objective=Objective(kind)))
    built = []
    make = cb.template_model
    cb.template_model = lambda *args: built.append(make(*args)) or built[-1]  # keep the batch's likelihood
    loss, grads, _ = _drive_approx(model, cb, fy)
    tm = built[-1].detached()
    expected = discovery_significance(tm) ** -2 if kind == "discovery" else expected_cls_upper_limit(tm)
    assert float(loss) == pytest.approx(float(expected), rel=1e-9)
    assert float(loss) > 0 and all(torch.isfinite(g).all() for g in grads)
    assert max(float(g.abs().max()) for g in grads) > 0  # the network gets a gradient through the fits
    assert len(cb.sigma["train"]["mu"]) == 1  # every POI's σ is still reported


def test_unknown_objective_is_named():
    with pytest.raises(Exception, match="objective must be one of"):
        Objective("significance")
