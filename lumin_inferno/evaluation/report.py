"""A trained summary's health check: is it better than a cross-entropy baseline, does it use its bins, has its
training converged? Plain sentences that name the model and what to change (docs/training.md)."""

from __future__ import annotations

import math
import warnings
from typing import List, Optional, Sequence

import numpy as np

__all__ = ["training_report", "TrainingWarning"]


class TrainingWarning(UserWarning):
    """A trained summary statistic that is probably not what the analysis wants (see :func:`training_report`)."""


def training_report(
    name: str,
    sigma: float,
    baseline_sigma: Optional[float] = None,
    occupancy: Optional[Sequence[float]] = None,
    metric_history: Optional[Sequence[float]] = None,
    still_improving: float = 0.005,
    emit: bool = False,
) -> List[str]:
    """Warnings about one trained summary (empty list: nothing to report).

    Args:
        name: how the model is called in the messages (e.g. ``"INFERNO 4, model 2"``).
        sigma: its expected σ(POI) on an independent sample (or any lower-is-better figure in POI units).
        baseline_sigma: the same figure for a cross-entropy classifier binned as the analysis would bin it; the
            summary should beat it (INFERNO optimises the figure, cross-entropy does not).
        occupancy: fraction of the sample's events in each bin; a bin with none is capacity thrown away.
        metric_history: the selection metric per validation epoch (e.g. LUMIN's ``hard_sigma`` history). If the
            best epoch is one of the last two and the metric fell by more than ``still_improving`` (relative) over
            the last third of the epochs, training had not converged.
        emit: also issue each message as a :class:`TrainingWarning`.
    """
    out: List[str] = []
    if baseline_sigma is not None and math.isfinite(baseline_sigma) and not sigma < baseline_sigma:
        out.append(f"{name}: σ = {sigma:.4g} is no better than the cross-entropy baseline's {baseline_sigma:.4g}; "
                   "see docs/training.md (batch size vs the signal fraction, learning rate, epochs, bins)")
    if occupancy is not None:
        occ = np.asarray(occupancy, dtype=float)
        empty = int((occ <= 0).sum())
        if empty:
            out.append(f"{name}: {empty} of {len(occ)} bins receive no events (capacity thrown away); fewer bins or "
                       "a higher starting temperature may help (docs/training.md)")
    if metric_history is not None:
        h = np.asarray([v for v in metric_history if math.isfinite(v)], dtype=float)
        if len(h) >= 3:
            best = int(np.argmin(h))
            third = h[-max(2, len(h) // 3):]
            drop = (third[0] - third.min()) / third[0] if third[0] > 0 else 0.0
            if best >= len(h) - 2 and drop > still_improving:
                out.append(f"{name}: not converged: the validation metric was still falling at the last epoch "
                           f"({100 * drop:.1f} % over the last {len(third)} epochs); train longer")
    if emit:
        for message in out:
            warnings.warn(message, TrainingWarning, stacklevel=2)
    return out
