"""ReseedEmptyBins: a dead bin is split off the fullest one and gets events again."""

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
from lumin.nn.training.train import train_models

from lumin_inferno import ConfigurationError, InfernoCallback
from lumin_inferno.data import paper_benchmark
from lumin_inferno.callbacks.bins import ReseedEmptyBins


class KillBin(Callback):
    """Make bin 0 unreachable at the start of training (its logit far below the others)."""

    def on_train_begin(self) -> None:
        super().on_train_begin()
        with torch.no_grad():
            self.model.tail.dense.weight[0] = 0.0
            self.model.tail.dense.bias[0] = -1e3


@pytest.mark.parametrize("reseed", [False, True])
def test_dead_bin_is_reseeded(paper_foldfiles, inferno_builder, tmp_path, reseed):
    torch.manual_seed(0)
    np.random.seed(0)
    random.seed(0)
    fy = FoldYielder(paper_foldfiles[0])
    bm = paper_benchmark(2)
    made = []

    def reseeder():
        made.append(ReseedEmptyBins())
        return made[-1]

    cbs = [partial(InfernoCallback, bm.analysis(n_bins=6, kind="transform"), transform=bm.transform()), KillBin]
    if reseed:
        cbs.append(reseeder)
    builder = inferno_builder(fy.cont_feats, n_bins=6)
    with contextlib.redirect_stdout(io.StringIO()):
        results, _, _ = train_models(fy, n_models=1, bs=500, model_builder=builder, n_epochs=3, cb_partials=cbs,
                                     savepath=Path(tmp_path / "w"), live_fdbk=False)
    from lumin.nn.models.model import Model

    model = Model(builder)
    model.load(str(Path(results[0]["path"]) / "train_0.h5"))
    bins = model.predict(fy.get_fold(0)["inputs"]).argmax(1)
    if not reseed:
        assert (bins == 0).sum() == 0  # a dead bin stays dead
        return
    cb = made[0]
    assert cb.reseeded[0] and cb.reseeded[0][0][0] == 0  # split off after the first epoch
    assert cb._counts[0] > 0  # the last epoch's training batches fill it again


def test_needs_a_dense_tail():
    cb = ReseedEmptyBins()

    class Fake:
        tail = torch.nn.Linear(2, 3)

    cb.set_model(Fake())
    with pytest.raises(ConfigurationError, match="dense"):
        cb._dense()
    with pytest.raises(ConfigurationError, match="min_fraction"):
        ReseedEmptyBins(min_fraction=1.0)
