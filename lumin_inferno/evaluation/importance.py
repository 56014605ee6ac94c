"""Feature importance in units of the measurement: how much the expected σ(POI) grows without a feature.

The metric is the expected uncertainty on the (first) parameter of interest of an
:class:`~lumin_inferno.analysis.Analysis`, in its units, of the hard-binned summary statistic on a held-out sample,
built exactly as in the final evaluation (:func:`~lumin_inferno.evaluation.analysis_template_model`: nominal
templates and shape-systematic templates, Asimov data, every other parameter profiled through √(H⁻¹)_poi,poi or the
profile likelihood) — not the classifier's loss, which for INFERNO is not even defined outside training.

* **Permutation importance** of feature j: Δσⱼ = σ(s | column j shuffled across events) − σ(s), averaged over
  ``n_repeats`` shuffles (spread = their standard deviation). Shuffling happens on the *nominal* inputs, before the
  shape-nuisance transform is applied to build the shifted templates, so a nuisance acting on feature j still moves
  the shuffled values as it would move real data. A feature the statistic does not read has Δσ = 0 exactly; a large
  Δσ means the measurement relies on it. Permutation breaks correlations between features, so two strongly
  correlated features can each look unimportant (the other one carries the information).
* **Drop-column importance** of feature j: σ(s) of a statistic *retrained* without feature j minus σ(s) of the
  statistic retrained with every feature (the user's training function; costs one training per feature, and is
  subject to the training's seed-to-seed spread).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Union

import numpy as np
import pandas as pd
import torch
from torch import Tensor

from ..exceptions import ConfigurationError, FailedMinimizationError, SingularHessianError, TargetShapeError
from .analysis import analysis_template_model
from ..statistics.fit import expected_poi_uncertainty
from .templates import BinFunction

__all__ = [
    "poi_uncertainty",
    "permutation_importance",
    "drop_column_importance",
    "plot_feature_importance",
    "ColumnSubsetTransform",
    "nuisances_acting_on",
]

PathLike = Union[str, Path]


def poi_uncertainty(
    bin_function: BinFunction,
    analysis,
    inputs: np.ndarray,
    targets: np.ndarray,
    weights: Optional[np.ndarray] = None,
    transform=None,
    method: str = "hessian",
) -> float:
    """Expected σ of the analysis's first POI (its units) of the hard-binned statistic on the sample: the metric
    of the importances.

    A shape systematic the statistic is blind to (its ±1σ templates equal the nominal one in every bin, e.g. λ for
    a statistic that does not read x2) is left out of the likelihood: its Fisher-information row is zero, so it does
    not change σ(POI), but a free one would make the Hessian singular. Returns ``inf`` if the remaining likelihood
    still has no finite variance (singular Hessian, failed profile).
    """
    model = analysis_template_model(analysis, bin_function, inputs, targets, weights, transform)
    blind = _blind_nuisances(model)
    if blind:
        model = analysis_template_model(analysis.without_nuisances(blind), bin_function, inputs, targets, weights,
                                        transform)
    try:
        return float(expected_poi_uncertainty(model, method=method))
    except (SingularHessianError, FailedMinimizationError):
        return math.inf


def _blind_nuisances(model) -> List[str]:
    """Names of shape nuisances whose up and down templates equal the nominal template of every process."""
    rows = {p: i for i, p in enumerate(model.processes)}
    moving = set()
    names = set()
    for syst in model.shape_systematics:
        names.add(syst.parameter)
        nominal = model.templates[rows[syst.process]]
        shifts = (syst.shift_up, syst.shift_down)
        if not all(torch.allclose(t.to(nominal.dtype), nominal, rtol=0.0, atol=1e-15) for t in shifts):
            moving.add(syst.parameter)
    return sorted(names - moving)


def nuisances_acting_on(transform, analysis, columns: Sequence[int], n_features: int) -> List[str]:
    """The ``"transform"`` nuisances of ``analysis`` whose input transform moves at least one of ``columns``
    (probed numerically on random inputs, every event in the mask, each nuisance at α = 1). A statistic trained on
    other columns only is blind to the rest; drop them (``analysis.without_nuisances``) for its InfernoCallback,
    whose loss would otherwise be singular."""
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(64, n_features, generator=gen, dtype=torch.float32).abs() + 0.5  # positive: valid for rates
    mask = torch.ones(64, dtype=torch.bool)
    cols = list(columns)
    out = []
    with torch.no_grad():
        for name in dict.fromkeys(s.name for s in analysis.systematics_of("transform")):
            if not torch.allclose(transform(x, {name: torch.tensor(1.0)}, mask)[:, cols], x[:, cols]):
                out.append(name)
    return out


def _names(features: Optional[Sequence[str]], n: int) -> List[str]:
    names = [f"x{j}" for j in range(n)] if features is None else [str(f) for f in features]
    if len(names) != n:
        raise ConfigurationError(f"{len(names)} feature names for {n} input columns")
    return names


def permutation_importance(
    bin_function: BinFunction,
    analysis,
    inputs: np.ndarray,
    targets: np.ndarray,
    weights: Optional[np.ndarray] = None,
    transform=None,
    features: Optional[Sequence[str]] = None,
    columns: Optional[Sequence[int]] = None,
    n_repeats: int = 3,
    method: str = "hessian",
    seed: int = 0,
) -> pd.DataFrame:
    """Permutation importance of each input feature, measured as the increase of the expected σ(POI).

    Args:
        bin_function: maps an inputs array ``[n, n_features]`` to integer bins (e.g. ``AlignedEnsemble`` or
            ``lambda x: argmax_bins(model.predict(x))``).
        analysis: the :class:`~lumin_inferno.analysis.Analysis` (σ of its first POI is the metric).
        inputs, targets, weights: a held-out sample (e.g. ``FoldYielder.get_fold(i)`` of a fold not used for
            training), nominal inputs.
        transform: the input transform of the analysis's ``"transform"`` systematics.
        features: names of the input columns (default ``x0, x1, ...``).
        columns: which columns to test (default all).
        n_repeats: shuffles per feature; the spread is their standard deviation.
        method: ``"hessian"`` (√(H⁻¹)ₛₛ, fast; default) or ``"profile"`` (MINOS half-width, slower).
        seed: seed of the shuffles (each repeat uses the same permutation of events for every feature).

    Returns:
        DataFrame, one row per feature, sorted by decreasing ``delta_sigma``: ``feature``, ``column``, ``sigma``
        (σ(POI) with every feature intact), ``sigma_permuted`` (mean over repeats), ``delta_sigma`` (mean Δσ),
        ``delta_sigma_std`` (spread over repeats; 0 for one repeat), ``relative`` (Δσ/σ), ``n_repeats``.
    """
    x = np.asarray(getattr(inputs, "values", inputs), dtype=np.float32)
    if x.ndim != 2:
        raise TargetShapeError(f"inputs must be [n_events, n_features], got shape {x.shape}")
    if n_repeats < 1:
        raise ConfigurationError(f"n_repeats must be ≥ 1, got {n_repeats}")
    names = _names(features, x.shape[1])
    cols = list(range(x.shape[1])) if columns is None else [int(c) for c in columns]
    if any(not 0 <= c < x.shape[1] for c in cols):
        raise ConfigurationError(f"columns {cols} out of range for {x.shape[1]} features")

    def sigma(data: np.ndarray) -> float:
        return poi_uncertainty(bin_function, analysis, data, targets, weights, transform, method)

    nominal = sigma(x)
    rng = np.random.default_rng(seed)
    orders = [rng.permutation(len(x)) for _ in range(n_repeats)]
    rows = []
    for j in cols:
        values = []
        for order in orders:
            shuffled = x.copy()
            shuffled[:, j] = x[order, j]
            values.append(sigma(shuffled))
        deltas = np.asarray(values) - nominal
        rows.append(
            {
                "feature": names[j],
                "column": j,
                "sigma": nominal,
                "sigma_permuted": float(np.mean(values)),
                "delta_sigma": float(np.mean(deltas)),
                "delta_sigma_std": float(np.std(deltas, ddof=1)) if n_repeats > 1 else 0.0,
                "relative": float(np.mean(deltas) / nominal),
                "n_repeats": n_repeats,
            }
        )
    return _sorted(pd.DataFrame(rows))


def drop_column_importance(
    train_function: Callable[[Sequence[int]], BinFunction],
    analysis,
    inputs: np.ndarray,
    targets: np.ndarray,
    weights: Optional[np.ndarray] = None,
    transform=None,
    features: Optional[Sequence[str]] = None,
    columns: Optional[Sequence[int]] = None,
    method: str = "hessian",
    reference: Optional[BinFunction] = None,
) -> pd.DataFrame:
    """Drop-column importance: retrain without each feature and measure how much σ(POI) grows.

    Args:
        train_function: ``train_function(kept_columns)`` trains a summary statistic on the input columns
            ``kept_columns`` (indices into the full input array, in order) and returns its bin function, which takes
            ``inputs[:, kept_columns]``. Called once with every column (the reference) and once per tested column.
        analysis, inputs, targets, weights, transform: as for :func:`permutation_importance`. The transform is
            applied to the *full* inputs, then the dropped column is removed, so nuisances acting on the remaining
            features still enter.
        reference: the bin function of a statistic already trained with every column (same procedure), to save
            the reference training; by default ``train_function(all columns)`` is called.

    Returns:
        DataFrame sorted by decreasing ``delta_sigma``: ``feature``, ``column``, ``sigma`` (all features),
        ``sigma_dropped`` (retrained without the feature), ``delta_sigma``, ``relative``.
    """
    x = np.asarray(getattr(inputs, "values", inputs), dtype=np.float32)
    names = _names(features, x.shape[1])
    every = list(range(x.shape[1]))
    cols = every if columns is None else [int(c) for c in columns]

    def sigma(kept: List[int], fn: Optional[BinFunction] = None) -> float:
        fn = train_function(kept) if fn is None else fn
        return poi_uncertainty(lambda data: fn(np.asarray(data)[:, kept]), analysis, x, targets, weights, transform,
                               method)

    sigma_all = sigma(every, reference)
    rows = []
    for j in cols:
        dropped = sigma([c for c in every if c != j])
        rows.append(
            {
                "feature": names[j],
                "column": j,
                "sigma": sigma_all,
                "sigma_dropped": dropped,
                "delta_sigma": dropped - sigma_all,
                "relative": (dropped - sigma_all) / sigma_all,
            }
        )
    return _sorted(pd.DataFrame(rows))


@dataclass
class ColumnSubsetTransform:
    """A shape-nuisance input transform written for the full input array, applied to inputs that keep only the
    columns ``kept`` (for training without some features, e.g. drop-column importance).

    The kept columns are put back at their positions in a zero-filled ``[n, n_features]`` array, ``transform`` is
    applied, and the kept columns are returned. Valid when the transform of a kept column does not read a dropped
    one (true for :class:`~lumin_inferno.data.PaperTransform`, which moves x0 and x2 each by itself). Picklable if
    ``transform`` is.
    """

    transform: Any
    kept: Sequence[int]
    n_features: int

    def __call__(self, x: Tensor, nuisances: Dict[str, Tensor], mask: Tensor) -> Tensor:
        idx = torch.as_tensor(list(self.kept), dtype=torch.long, device=x.device)
        if x.shape[1] != len(idx):
            raise TargetShapeError(f"inputs have {x.shape[1]} columns but {len(idx)} kept columns were declared")
        full = x.new_zeros((x.shape[0], self.n_features)).index_copy(1, idx, x)  # out of place, differentiable
        return self.transform(full, nuisances, mask).index_select(1, idx)


def _sorted(df: pd.DataFrame) -> pd.DataFrame:
    return df.sort_values(["delta_sigma", "column"], ascending=[False, True], kind="stable").reset_index(drop=True)


def plot_feature_importance(
    table: pd.DataFrame, path: PathLike, title: str = "", relative: bool = False, poi: str = "POI"
) -> Path:
    """Horizontal bars of Δσ(POI) per feature (most important on top) with the spread over repeats as error bars;
    written atomically to ``path`` (format from the suffix). ``relative=True`` plots Δσ/σ in percent."""
    from .plots import hep_figure

    if table.empty:
        raise ConfigurationError("nothing to plot: the importance table is empty")
    t = table.iloc[::-1]  # matplotlib draws the first bar at the bottom
    scale = 100.0 / t["sigma"].to_numpy() if relative else 1.0
    values = t["delta_sigma"].to_numpy() * scale
    err = t["delta_sigma_std"].to_numpy() * scale if "delta_sigma_std" in t else None
    finite = np.where(np.isfinite(values), values, np.nan)
    with hep_figure(path, figsize=(10, 3.0 + 0.7 * len(t))) as (fig, (ax,)):
        y = np.arange(len(t))
        ax.barh(y, np.nan_to_num(finite, nan=0.0), xerr=err, color="C0", alpha=0.8, capsize=3)
        for yi, v in zip(y, values):
            if not np.isfinite(v):
                ax.annotate("σ → ∞", (0, yi), xytext=(4, 0), textcoords="offset points", va="center")
        ax.axvline(0.0, color="k", lw=1)
        ax.set_yticks(y)
        ax.set_yticklabels(t["feature"].tolist())
        sigma0 = float(table["sigma"].iloc[0])
        ax.set_xlabel(f"Δσ({poi}) / σ({poi}) [%]" if relative else f"Δσ({poi})")
        label = title or "importance for the measurement"
        ax.set_title(f"{label}\nσ({poi}) = {sigma0:.4g} with every feature intact", fontsize=14, loc="left")
    return Path(path)
