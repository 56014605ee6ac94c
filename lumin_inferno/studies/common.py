"""What the studies share: seeding, training an ensemble with LUMIN's ``train_models`` (its printout to a log),
loading the trained members back, and median/16 %/84 % summaries over models."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import numpy as np
import torch

__all__ = ["seed_everything", "train_ensemble", "load_models", "predict", "inferno_bin_functions", "summarise"]


def seed_everything(seed: int) -> None:
    """Seed torch, numpy and Python's ``random`` (LUMIN shuffles folds with it): the same seed, the same numbers."""
    torch.manual_seed(seed)
    np.random.seed(seed)
    random.seed(seed)


def train_ensemble(fy, builder, n_models: int, bs: int, epochs: int, savepath: Path,
                   cb_partials: Optional[Sequence] = None, seed: int = 0, client=None,
                   fingerprint: Optional[str] = None, **kwargs) -> tuple:
    """``n_models`` members trained by :func:`~lumin_inferno.fanout.train_members` (each LUMIN ``train_models`` on
    its own validation fold, seeded ``seed + i``, in a fresh process; on ``client``'s Dask workers if given), weights
    and LUMIN's printout under ``savepath/model_id_i``; finished members with the same ``fingerprint`` are reused.
    Returns (results, histories). ``kwargs`` go to ``train_models`` (e.g. ``train_on_weights=False``)."""
    from ..fanout import train_members

    pipe = getattr(fy, "input_pipe", None)
    return train_members(fy.foldfile.filename, builder, n_models, bs, epochs, savepath, cb_partials,
                         kwargs.pop("metric_partials", None), seed=seed, client=client, progress=False,
                         fingerprint=fingerprint, foldfile_kwargs={"input_pipe": pipe} if pipe is not None else None,
                         **kwargs)


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
