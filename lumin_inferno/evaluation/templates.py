"""Evaluate a trained summary statistic: hard-assigned histograms → binned likelihood → expected σ(POI).

The protocol of the INFERNO paper: each event of a large test sample is put in one bin (argmax of a softmax
output, or a uniform binning of a classifier output); background templates are also built with the shape
nuisances moved by ±step (inputs transformed exactly, as in training) and interpolated (pyhf ``code4p``); the
expected uncertainty is the profile-likelihood width on Asimov data (and, for comparison, √(H⁻¹)ₛₛ).
"""

from __future__ import annotations

from typing import Callable, Optional, Sequence

import numpy as np

from ..exceptions import EmptyProcessError, InvalidModelSpecError, TargetShapeError

__all__ = [
    "argmax_bins",
    "uniform_bins",
    "bin_occupancy",
    "class_score_bins",
    "class_score_edges",
    "align_bins",
    "aligned_mean_probs",
    "hard_templates",
]

BinFunction = Callable[[np.ndarray], np.ndarray]


def argmax_bins(probs: np.ndarray) -> np.ndarray:
    """Hard bin of a softmax output: the argmax (bins are unordered classes; the index is kept, not sorted)."""
    return np.asarray(probs).argmax(axis=-1)


def bin_occupancy(bins: np.ndarray, n_bins: int, weights: Optional[np.ndarray] = None) -> np.ndarray:
    """Fraction of the (weighted) events in each of the ``n_bins`` bins of a hard assignment."""
    w = np.ones(len(bins)) if weights is None else np.asarray(weights, dtype=np.float64).reshape(-1)
    counts = np.bincount(np.asarray(bins).reshape(-1), weights=w, minlength=n_bins)[:n_bins]
    total = counts.sum()
    return counts / total if total > 0 else counts


def memoised_bins(fn: BinFunction) -> BinFunction:
    """``fn`` (inputs → bins) remembering its result per distinct input array (by content), for callers that bin the
    same sample more than once (the same fold re-read, benchmarks sharing a test sample and its shifted copies)."""
    import hashlib

    cache: dict = {}

    def bins(x: np.ndarray) -> np.ndarray:
        x = np.ascontiguousarray(x)
        # ndarray has the buffer protocol, but numpy 1.26's stubs do not declare __buffer__ (PEP 688)
        data = x.view(np.uint8).reshape(-1)
        key = (x.shape, x.dtype.str, hashlib.blake2b(data, digest_size=16).hexdigest())  # type: ignore[arg-type]
        if key not in cache:
            cache[key] = np.asarray(fn(x))
        return cache[key]

    return bins


def uniform_bins(scores: np.ndarray, n_bins: int = 10) -> np.ndarray:
    """Bin of a classifier score in [0, 1] with ``n_bins`` uniform bins (the paper's cross-entropy baseline)."""
    s = np.asarray(scores).reshape(len(scores), -1)[:, -1]
    return np.clip((s * n_bins).astype(np.int64), 0, n_bins - 1)


def class_score_edges(probs: np.ndarray, n_score_bins: int, weights: Optional[np.ndarray] = None) -> np.ndarray:
    """Score-bin edges per class for a multi-class summary, shape [n_classes, n_score_bins + 1]: the (weighted)
    quantiles of the winning class's probability among the events whose argmax is that class, so each
    class × score bin holds about the same simulated yield; the outer edges are 0 and 1. A class that wins no event
    gets uniform edges on [1/n_classes, 1]."""
    p = np.asarray(probs, dtype=np.float64)
    if p.ndim != 2 or p.shape[1] < 2:
        raise TargetShapeError(f"class_score_edges needs class probabilities of shape [events, classes ≥ 2], got {p.shape}")
    if n_score_bins < 1:
        raise InvalidModelSpecError(f"n_score_bins must be ≥ 1, got {n_score_bins}")
    w = np.ones(len(p)) if weights is None else np.asarray(weights, dtype=np.float64).reshape(-1)
    if len(w) != len(p):
        raise TargetShapeError(f"class_score_edges: {len(w)} weights for {len(p)} events")
    n_classes = p.shape[1]
    cls = p.argmax(axis=1)
    edges = np.tile(np.linspace(1.0 / n_classes, 1.0, n_score_bins + 1), (n_classes, 1))
    for c in range(n_classes):
        sel = cls == c
        if sel.any():
            score, ws = p[sel, c], np.clip(w[sel], 0.0, None)  # negative (NLO) weights: quantiles of |w| > 0 only
            order = np.argsort(score, kind="stable")
            cdf = np.cumsum(ws[order])
            if cdf[-1] > 0:
                edges[c] = np.interp(np.linspace(0, 1, n_score_bins + 1), cdf / cdf[-1], score[order])
    edges[:, 0], edges[:, -1] = 0.0, 1.0
    return edges


def class_score_bins(probs: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Hard bin of a multi-class summary, as analysts bin a multi-class classifier: category = argmax class c,
    then the winning probability p_c in the score bins ``edges[c]`` (shape [n_classes, n_score_bins + 1], e.g. from
    :func:`class_score_edges`); bin index = c · n_score_bins + score bin (``ClassScoreTail``'s output order)."""
    p = np.asarray(probs)
    e = np.asarray(edges, dtype=np.float64)
    if p.ndim != 2 or e.ndim != 2 or e.shape[0] != p.shape[1] or e.shape[1] < 2:
        raise TargetShapeError(f"class_score_bins: probabilities {p.shape} and edges {e.shape} do not match "
                               "([events, classes] and [classes, score bins + 1])")
    n_score = e.shape[1] - 1
    cls = p.argmax(axis=1)
    score = p[np.arange(len(p)), cls]
    inner = e[cls, 1:-1]  # the inner edges of each event's class
    b = (score[:, None] >= inner).sum(axis=1) if n_score > 1 else np.zeros(len(p), dtype=np.int64)
    return cls * n_score + b


def align_bins(reference: np.ndarray, probs: np.ndarray) -> np.ndarray:
    """Permutation ``perm`` of ``probs``' output columns so that ``probs[:, perm]`` bins events like ``reference``.

    INFERNO outputs are unordered classes: two models trained from different initialisations learn similar bins
    under different labels, so their softmax outputs cannot be averaged column by column. The permutation maximises
    the number of events both models put in the same bin (linear assignment on the argmax co-occurrence matrix,
    ``scipy.optimize.linear_sum_assignment``).
    """
    from scipy.optimize import linear_sum_assignment

    reference, probs = np.asarray(reference), np.asarray(probs)
    if reference.shape != probs.shape or reference.ndim != 2:
        raise TargetShapeError(f"need two [n_events, n_bins] outputs of equal shape, got {reference.shape} and {probs.shape}")
    n_bins = reference.shape[1]
    co = np.zeros((n_bins, n_bins))
    np.add.at(co, (reference.argmax(1), probs.argmax(1)), 1.0)
    rows, cols = linear_sum_assignment(co, maximize=True)
    perm = np.empty(n_bins, dtype=np.int64)
    perm[rows] = cols
    return perm


def aligned_mean_probs(probs: Sequence[np.ndarray]) -> np.ndarray:
    """Mean softmax output of an ensemble of INFERNO models after aligning each model's bins to the first one
    (:func:`align_bins`); its argmax is the ensemble's hard bin."""
    probs = [np.asarray(p) for p in probs]
    if not probs:
        raise InvalidModelSpecError("need at least one model's output")
    return np.mean([probs[0]] + [p[:, align_bins(probs[0], p)] for p in probs[1:]], axis=0)


def hard_templates(
    bins: np.ndarray, targets: np.ndarray, weights: Optional[np.ndarray], n_bins: int, signal_class: int = 1
) -> tuple:
    """Weighted histograms of signal and background, each normalised to unit sum (fraction of yield per bin)."""
    targets = np.asarray(targets).reshape(-1)
    bins = np.asarray(bins).reshape(-1)
    if len(targets) != len(bins):
        raise TargetShapeError(f"{len(bins)} bin assignments but {len(targets)} targets")
    w = np.ones(len(bins)) if weights is None else np.asarray(weights, dtype=float).reshape(-1)
    is_sig = targets == signal_class
    out = []
    for mask, name in ((is_sig, "signal"), (~is_sig, "background")):
        total = w[mask].sum()
        if not total > 0:
            raise EmptyProcessError(f"the evaluation sample has no {name} events")
        out.append(np.bincount(bins[mask], weights=w[mask], minlength=n_bins)[:n_bins] / total)
    return out[0], out[1]
