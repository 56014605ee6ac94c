"""Host compatibility: LUMIN 0.9.1 under torch >= 2.6 (weights-only loading)."""

import contextlib
import io
from functools import partial

import numpy as np
import torch


def test_lumin_onecycle_checkpoint_reloads(tmp_path, paper_foldfiles, inferno_builder):
    # LUMIN's OneCycle puts numpy scalars into the optimiser state; SaveBest's reload must still work.
    from lumin.nn.callbacks.cyclic_callbacks import OneCycle
    from lumin.nn.data.fold_yielder import FoldYielder
    from lumin.nn.training.train import train_models

    from lumin_inferno import InfernoCallback
    from lumin_inferno.data import paper_benchmark

    fy = FoldYielder(paper_foldfiles[0])
    torch.manual_seed(0)
    np.random.seed(0)
    with contextlib.redirect_stdout(io.StringIO()):
        results, _, _ = train_models(
            fy, n_models=1, bs=500, model_builder=inferno_builder(fy.cont_feats), n_epochs=2,
            cb_partials=[partial(InfernoCallback, paper_benchmark(2).analysis(6, kind="transform"),
                                 transform=paper_benchmark(2).transform()),
                         partial(OneCycle, lengths=(1, 1), lr_range=[1e-4, 1e-3, 1e-6])],
            savepath=tmp_path, live_fdbk=False, train_on_weights=True,
        )
    assert len(results) == 1 and np.isfinite(results[0]["loss"])
