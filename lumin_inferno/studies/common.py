"""What the studies share: seeding, training an ensemble with LUMIN's ``train_models`` (its printout to a log),
loading the trained members back, and median/16 %/84 % summaries over models."""

from __future__ import annotations

import contextlib
import random
from pathlib import Path
from typing import Dict, List, Optional, Sequence, TextIO

import numpy as np
import torch

__all__ = ["seed_everything", "train_ensemble", "load_models", "predict", "inferno_bin_functions", "summarise"]


def seed_everything(seed: int) -> None:
    """Seed torch, numpy and Python's ``random`` (LUMIN shuffles folds with it): the same seed, the same numbers."""
    torch.manual_seed(seed)
    np.random.seed(seed)
    random.seed(seed)


def train_ensemble(fy, builder, n_models: int, bs: int, epochs: int, savepath: Path, log: TextIO,
                   cb_partials: Optional[Sequence] = None, **kwargs) -> tuple:
    """``n_models`` models from LUMIN's ``train_models`` (each on its own validation fold), weights under
    ``savepath``, LUMIN's printout into ``log``; returns (results, histories). ``kwargs`` go to ``train_models``
    (e.g. ``train_on_weights=False``)."""
    from lumin.nn.training.train import train_models

    savepath = Path(savepath)
    savepath.mkdir(parents=True, exist_ok=True)
    for i in range(n_models):  # train_models shells out `rm -r` on these; create them so it stays quiet
        (savepath / f"model_id_{i}").mkdir(exist_ok=True)
    with contextlib.redirect_stdout(log):
        results, histories, _ = train_models(fy, n_models=n_models, bs=bs, model_builder=builder, n_epochs=epochs,
                                             cb_partials=list(cb_partials) if cb_partials else None,
                                             savepath=savepath, live_fdbk=False, **kwargs)
    return results, histories


def load_models(results, builder) -> list:
    """The members saved by :func:`train_ensemble` (LUMIN ``Model`` s, best epoch as ``SaveBest`` kept it)."""
    from lumin.nn.models.model import Model

    models = []
    for r in results:
        m = Model(builder)
        idx = int(Path(r["path"]).name.split("_")[-1])
        m.load(str(Path(r["path"]) / f"train_{idx}.h5"))
        models.append(m)
    return models


def predict(model, x: np.ndarray) -> np.ndarray:
    """A trained member's output on ``x`` (LUMIN ``Model.predict`` in batches of 50k events)."""
    return model.predict(x, bs=50_000)


def inferno_bin_functions(models: list, reference: np.ndarray) -> list:
    """One bin function (inputs → argmax bin) per INFERNO member and, for several, a last one for their ensemble:
    :func:`~lumin_inferno.evaluation.align_ensemble` of the members (uniform weights), bins aligned to the first
    member's on the ``reference`` inputs, then fixed for any input, shifted ones included. INFERNO bins are
    unordered classes: they are aligned before averaging."""
    from ..evaluation.ensemble import align_ensemble
    from ..evaluation.templates import argmax_bins

    fns = [lambda x, m=m: argmax_bins(predict(m, x)) for m in models]
    if len(models) > 1:
        fns.append(align_ensemble(models, reference, reference=0, bs=50_000))
    return fns


def summarise(values: List[float]) -> Dict[str, float]:
    """Median and 16 %/84 % quantiles over models."""
    v = np.asarray(values, dtype=float)
    return {"median": float(np.median(v)), "q16": float(np.quantile(v, 0.16)), "q84": float(np.quantile(v, 0.84))}
