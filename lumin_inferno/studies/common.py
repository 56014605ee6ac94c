"""What the studies share: seeding, training an ensemble with LUMIN's ``train_models`` (its printout to a log),
loading the trained members back, and median/16 %/84 % summaries over models."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence

import numpy as np
import torch

__all__ = ["seed_everything", "ensemble_tasks", "train_ensembles", "train_ensemble", "load_models", "predict",
           "inferno_bin_functions", "summarise",
           "check_training_settings"]


def check_training_settings(settings, positive: Sequence[str], events_per_fold: int, batch_sizes: Sequence[str],
                            sample: str) -> None:
    """The checks every study's settings share, made before any data is written or any model trained: the
    ``positive`` fields ≥ 1, at least 2 bins and 2 folds, temperatures > 0, a known ``select_on``, ``patience`` None
    or ≥ 1, and each of ``batch_sizes`` at most ``events_per_fold`` (else LUMIN yields no batch; ``sample`` names
    the setting that sizes the folds). Raises :class:`~lumin_inferno.exceptions.ConfigurationError`."""
    from ..exceptions import ConfigurationError

    for name in positive:
        if int(getattr(settings, name)) < 1:
            raise ConfigurationError(f"{name} must be ≥ 1, got {getattr(settings, name)}")
    if settings.n_bins < 2:
        raise ConfigurationError(f"n_bins must be ≥ 2 (one bin measures nothing), got {settings.n_bins}")
    if settings.n_folds < 2:
        raise ConfigurationError(f"n_folds must be ≥ 2 (LUMIN validates on one fold), got {settings.n_folds}")
    start = settings.temperature_start
    if not settings.temperature > 0 or (start is not None and not start > 0):
        raise ConfigurationError(f"temperatures must be > 0, got {settings.temperature} (start {start})")
    if settings.select_on not in ("hard_sigma", "loss"):
        raise ConfigurationError(f"select_on must be 'hard_sigma' or 'loss', got {settings.select_on!r}")
    if settings.patience is not None and settings.patience < 1:
        raise ConfigurationError(f"patience must be ≥ 1 or None (never stop early), got {settings.patience}")
    for name in batch_sizes:
        if getattr(settings, name) > events_per_fold:
            raise ConfigurationError(f"{name} ({getattr(settings, name)}) exceeds the events of one training fold "
                                     f"({events_per_fold}): raise {sample} or lower {name}")


def seed_everything(seed: int) -> None:
    """Seed torch, numpy and Python's ``random`` (LUMIN shuffles folds with it): the same seed, the same numbers."""
    torch.manual_seed(seed)
    np.random.seed(seed)
    random.seed(seed)


#: torch threads of every ensemble member the studies train, wherever it runs (here or on a Dask worker of one
#: thread): the thread count changes the order of floating-point sums, and training amplifies such differences to
#: percent-level changes of a member's σ (measured: up to 2 % between 2 threads here and 1 on a worker), so a fixed
#: count is what makes ``--workers N`` print the serial run's table.
MEMBER_THREADS = 1


def ensemble_tasks(fy, builder, n_models: int, bs: int, epochs: int, savepath: Path,
                   cb_partials: Optional[Sequence] = None, seed: int = 0,
                   fingerprint: Optional[str] = None, **kwargs) -> list:
    """The member tasks (:func:`~lumin_inferno.fanout.member_tasks`) of one of a study's ensembles: ``n_models``
    members, each LUMIN ``train_models`` on its own validation fold, seeded ``seed + i``, with
    :data:`MEMBER_THREADS` torch threads (so the numbers do not depend on where it ran), weights and LUMIN's printout
    under ``savepath/model_id_i``; finished members with the same ``fingerprint`` are reused. ``kwargs`` go to
    ``train_models`` (e.g. ``train_on_weights=False``, ``metric_partials``)."""
    from ..fanout import member_tasks

    pipe = getattr(fy, "input_pipe", None)
    return member_tasks(fy.foldfile.filename, builder, n_models, bs, epochs, savepath, cb_partials,
                        kwargs.pop("metric_partials", None), seed=seed, torch_threads=MEMBER_THREADS,
                        foldfile_kwargs={"input_pipe": pipe} if pipe is not None else None,
                        fingerprint=None if fingerprint is None else f"{fingerprint}|threads={MEMBER_THREADS}",
                        **kwargs)


def train_ensembles(ensembles: Sequence[list], client=None, progress: bool = False) -> List[tuple]:
    """Train several ensembles (lists of :func:`ensemble_tasks`) in **one** fan-out, every member at once on
    ``client``'s Dask workers (else here, in order), with one progress bar over all members; returns
    (results, histories) per ensemble, as LUMIN's ``train_models``."""
    from ..fanout import train_member_tasks

    done = train_member_tasks([t for tasks in ensembles for t in tasks], client, progress=progress)
    out, start = [], 0
    for tasks in ensembles:
        part = done[start:start + len(tasks)]
        out.append(([d[0] for d in part], [d[1] for d in part]))
        start += len(tasks)
    return out


def train_ensemble(fy, builder, n_models: int, bs: int, epochs: int, savepath: Path,
                   cb_partials: Optional[Sequence] = None, seed: int = 0, client=None,
                   fingerprint: Optional[str] = None, **kwargs) -> tuple:
    """One ensemble (:func:`ensemble_tasks`) trained by :func:`train_ensembles`; returns (results, histories)."""
    return train_ensembles([ensemble_tasks(fy, builder, n_models, bs, epochs, savepath, cb_partials, seed,
                                           fingerprint, **kwargs)], client)[0]


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


def inferno_bin_functions(models: list, reference: np.ndarray, analysis=None,
                          sample: Optional[Callable[[Callable], Any]] = None) -> list:
    """One bin function (inputs → argmax bin) per INFERNO member and, for several, one for their ensemble:
    :func:`~lumin_inferno.evaluation.align_ensemble` of the members (uniform weights), bins aligned to the first
    member's on the ``reference`` inputs, then fixed for any input, shifted ones included. INFERNO bins are
    unordered classes: they are aligned before averaging. With ``analysis`` and ``sample`` (a member's bin function
    → its :class:`~lumin_inferno.evaluation.EventBins` on a training sample), a last one: the members' joint bins
    merged back into ``analysis.n_bins`` (:func:`~lumin_inferno.evaluation.merge_summaries`)."""
    from ..evaluation.ensemble import align_ensemble, merge_summaries
    from ..evaluation.templates import argmax_bins, memoised_bins

    def member(model) -> Callable[[np.ndarray], np.ndarray]:
        return memoised_bins(lambda x: argmax_bins(predict(model, x)))

    fns: List[Callable[..., np.ndarray]] = [member(m) for m in models]
    if len(models) > 1:
        members = list(fns)
        fns.append(align_ensemble(models, reference, reference=0, bs=50_000))
        if analysis is not None and sample is not None:
            fns.append(merge_summaries(analysis, members, [analysis.n_bins] * len(members),
                                       [sample(fn) for fn in members], models=models))
    return fns


def summarise(values: List[float]) -> Dict[str, float]:
    """Median and 16 %/84 % quantiles over models."""
    v = np.asarray(values, dtype=float)
    return {"median": float(np.median(v)), "q16": float(np.quantile(v, 0.16)), "q84": float(np.quantile(v, 0.84))}
