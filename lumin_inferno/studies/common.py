"""What the studies share: seeding, training an ensemble with LUMIN's ``train_models`` (its printout to a log),
loading the trained members back, and median/16 %/84 % summaries over models."""

from __future__ import annotations

import contextlib
import random
from pathlib import Path
from typing import Dict, List, Optional, Sequence, TextIO

import numpy as np
import torch

__all__ = ["seed_everything", "train_ensemble", "load_models", "summarise"]


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


def summarise(values: List[float]) -> Dict[str, float]:
    """Median and 16 %/84 % quantiles over models."""
    v = np.asarray(values, dtype=float)
    return {"median": float(np.median(v)), "q16": float(np.quantile(v, 0.16)), "q84": float(np.quantile(v, 0.84))}
