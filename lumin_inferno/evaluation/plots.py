"""Plots people would rather see than read, saved to files (matplotlib, HEP style from ``mplhep``).

Every function takes plain numbers or a :class:`~lumin_inferno.statistics.TemplateModel`, writes one figure to
``path`` (format from the suffix: .png, .pdf, ...), closes it and returns the path. Nothing is shown on screen, so
they run headless (CI, batch jobs).
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Mapping, Optional, Sequence, Tuple, Union, cast

import numpy as np
import torch

from ..io import atomic_write
from ..statistics.likelihood import TemplateModel

__all__ = [
    "plot_training_curves", "plot_templates", "plot_profile_curves", "plot_sigma_summary", "plot_channel_templates",
    "plot_poi_sigmas", "plot_poi_contours", "plot_pulls", "plot_coverage",
]

PathLike = Union[str, Path]


@contextlib.contextmanager
def hep_figure(path: PathLike, figsize=(8, 6), ncols: int = 1):
    """The one plot style of the package: ``with hep_figure(path) as (fig, axes):`` draws in mplhep's ROOT style on
    ``ncols`` panels and saves the figure to ``path`` atomically (never a half-written file) when the block ends."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    try:
        import mplhep

        style = mplhep.style.ROOT
    except ImportError:  # pragma: no cover - mplhep is a requirement, but plots should not die without it
        style = "default"
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with plt.style.context(style):
        fig, axes = plt.subplots(1, ncols, figsize=figsize, squeeze=False)
        try:
            yield fig, axes[0]
            fig.tight_layout()
            with atomic_write(path, suffix=".tmp" + path.suffix) as tmp:  # never a half-written figure
                fig.savefig(tmp, dpi=110)
        finally:
            plt.close(fig)


def plot_training_curves(histories: Mapping[str, Sequence], path: PathLike, sqrt: bool = True,
                         metric: Optional[str] = None, scale: float = 1.0) -> Path:
    """Validation loss per epoch for each labelled set of LUMIN histories (as returned by ``train_models``), or the
    validation ``metric`` (e.g. ``"hard_sigma"``, :class:`~lumin_inferno.callbacks.HardSigmaMetric`) times ``scale``.

    With ``sqrt=True`` the INFERNO loss, a variance of the POI, is shown as the expected σ(POI) in POI units.
    Each model is one thin line (up to its last epoch, early stopping included); the median over models is thick.
    """
    with hep_figure(path) as (fig, (ax,)):
        for i, (label, hists) in enumerate(histories.items()):
            colour = f"C{i}"
            curves = [scale * np.asarray(h[1][metric] if metric else h[0]["Validation"], dtype=float) for h in hists]
            if sqrt and not metric:
                curves = [np.sqrt(np.clip(c, 0, None)) for c in curves]
            for c in curves:
                ax.plot(np.arange(1, len(c) + 1), c, color=colour, alpha=0.3, lw=1)
            n = min(len(c) for c in curves)
            ax.plot(np.arange(1, n + 1), np.median([c[:n] for c in curves], axis=0), color=colour, lw=2.5, label=label)
        ax.set_xlabel("epoch")
        ax.set_ylabel(f"validation {metric}" if metric else
                      "validation √loss = σ(POI) (soft)" if sqrt else "validation loss")
        ax.legend(fontsize="small")
    return Path(path)


def plot_templates(model: TemplateModel, path: PathLike, title: str = "") -> Path:
    """Expected events per bin at the nominal point: signal and background stacked, with each shape
    systematic's shift_up/shift_down background drawn as lines (the nuisance moved by ± one template step)."""
    import mplhep

    with torch.no_grad():
        theta = model.nominal()
        yields = model.process_yields(theta).numpy()
        nominal = model.templates.numpy() * yields[:, None]
    bins = np.arange(model.n_bins + 1)
    with hep_figure(path, figsize=(9, 6)) as (fig, (ax,)):
        order = np.argsort(nominal[0] / np.maximum(nominal.sum(0), 1e-12))  # bins by purity, easier to read
        procs = list(reversed(range(len(model.processes))))
        mplhep.histplot([nominal[i][order] for i in procs], bins, stack=True, histtype="fill", alpha=0.6, ax=ax,
                        label=[model.processes[i] for i in procs])
        for k, syst in enumerate(model.shape_systematics):
            p = model.processes.index(syst.process)
            for sign, tmpl, ls in (("+", syst.shift_up, "-"), ("−", syst.shift_down, "--")):
                counts = tmpl.detach().numpy() * yields[p]
                mplhep.histplot(counts[order], bins, ax=ax, color=f"C{k + 2}", ls=ls,
                                label=f"{syst.process}, {syst.parameter} {sign}{syst.step:g}")
        ax.set_yscale("log")
        ax.set_ylim(bottom=0.05)  # empty bins hold only the template floor (~1e-4 events): keep them off-scale
        ax.set_xlabel("bin (ordered by signal purity)")
        ax.set_ylabel("expected events")
        ax.set_title(title, fontsize="medium")
        ax.legend(fontsize="x-small")
    return Path(path)


def plot_profile_curves(
    curves: Mapping[str, Tuple[Union[Sequence[float], np.ndarray], Union[Sequence[float], np.ndarray]]], path: PathLike,
    poi: str = "s",
) -> Path:
    """Profile-likelihood curves ΔNLL(POI) (nuisances profiled), one per label; the ΔNLL = ½ line marks the 68 % CL
    interval, whose half-width is the expected uncertainty."""
    with hep_figure(path) as (fig, (ax,)):
        for label, (x, y) in curves.items():
            ax.plot(np.asarray(x), np.asarray(y), lw=2, label=label)
        ax.axhline(0.5, color="grey", ls=":", lw=1)
        ax.set_xlabel(poi)
        ax.set_ylabel("ΔNLL (profiled)")
        ax.set_ylim(bottom=0)
        ax.legend(fontsize="small")
    return Path(path)


def plot_sigma_summary(
    rows: Mapping[int, Mapping[str, Union[float, Mapping[str, float], None]]], path: PathLike
) -> Path:
    """σ(POI) per benchmark: ours (median with 16–84 % band over models) for each method, the paper's values and the
    analytic limit. ``rows[k]`` has optional ``ce``/``inferno`` summaries ({median, q16, q84}) and numbers
    ``paper_ce``, ``paper_inferno``, ``limit``."""
    ks = sorted(rows)
    x = np.arange(len(ks))
    with hep_figure(path) as (fig, (ax,)):
        for off, key, label, colour in ((-0.12, "ce", "cross-entropy (ours)", "C0"), (0.12, "inferno", "INFERNO (ours)", "C1")):
            # the "ce"/"inferno" entries are {median, q16, q84} summaries
            pts = [(i, cast(Mapping[str, float], rows[k][key])) for i, k in enumerate(ks) if rows[k].get(key)]
            if pts:
                xi = np.array([i for i, _ in pts]) + off
                med = np.array([e["median"] for _, e in pts])
                err = np.array([[e["median"] - e["q16"] for _, e in pts], [e["q84"] - e["median"] for _, e in pts]])
                ax.errorbar(xi, med, yerr=err, fmt="o", color=colour, label=label, capsize=3)
        for key, label, colour, marker in (("paper_ce", "cross-entropy (paper)", "C0", "x"),
                                           ("paper_inferno", "INFERNO (paper)", "C1", "x")):
            ax.plot(x, [rows[k].get(key, np.nan) for k in ks], ls="none", marker=marker, color=colour, label=label)
        ax.plot(x, [rows[k].get("limit", np.nan) for k in ks], ls="--", marker="_", ms=20, color="k",
                label="analytic limit (unbinned)")
        ax.set_xticks(x, [str(k) for k in ks])
        ax.set_xlabel("benchmark")
        ax.set_ylabel("expected σ(s) [events]")
        ax.legend(fontsize="x-small")
    return Path(path)


def plot_channel_templates(model: TemplateModel, path: PathLike, title: str = "", n_variations: int = 4) -> Path:
    """One panel per channel of ``model``: expected events per bin at the nominal point, processes stacked
    (``mplhep.histplot``), and the total expected at α = ±1 for the ``n_variations`` nuisances that move that
    channel's total most (Σ over bins of |Δν|, either direction). Summary-channel bins are ordered by the
    signal-to-total ratio of the first process, as in :func:`plot_templates`."""
    import mplhep

    with torch.no_grad():
        theta = model.nominal()
        per_process = model.process_expected(theta).numpy()  # [processes, bins]
        total = per_process.sum(0)
        shifted = {}
        nuisances = [p for p in model.parameter_names if p not in model.pois and p in
                     {s.parameter for s in list(model.shape_systematics) + list(model.norm_systematics)}]
        for name in nuisances:
            i = model.index(name)
            pair = []
            for sign in (1.0, -1.0):
                t = theta.clone()
                t[i] = t[i] + sign
                pair.append(model.expected(t).numpy())
            shifted[name] = pair
    slices = model.channel_slices()
    assert model.channels is not None  # TemplateModel fills in the default
    with hep_figure(path, figsize=(7.5 * len(slices), 7), ncols=len(slices)) as (fig, axes):
        if title:
            fig.suptitle(title, fontsize="medium")
        for ax, (channel, sl) in zip(axes, slices.items()):
            counts = per_process[:, sl]
            order = np.arange(counts.shape[1])
            if channel == model.channels[0][0]:
                order = np.argsort(counts[0] / np.maximum(counts.sum(0), 1e-12))
            edges = np.arange(len(order) + 1)
            mplhep.histplot([c[order] for c in counts], edges, stack=True, histtype="fill", alpha=0.6,
                            color=[f"C{i}" for i in range(len(counts))],
                            label=list(model.processes), ax=ax)
            impact = {n: sum(np.abs(v[sl] - total[sl]).sum() for v in pair) for n, pair in shifted.items()}
            top = [n for n in sorted(impact, key=impact.__getitem__, reverse=True)[:n_variations] if impact[n] > 0]
            for k, name in enumerate(top):
                for v, ls, pm in ((shifted[name][0], "-", "+1"), (shifted[name][1], "--", "−1")):
                    mplhep.histplot(v[sl][order], edges, ax=ax, color=f"C{len(model.processes) + k}", ls=ls,
                                    label=f"total, {name} {pm}σ")
            ax.set_yscale("log")
            ax.set_ylim(bottom=0.05)  # empty bins hold only the template floor: keep them off-scale
            ax.set_xlabel(f"{channel} bin" + (" (by purity)" if channel == model.channels[0][0] else ""))
            ax.set_ylabel("expected events")
            ax.legend(fontsize=9, ncol=2, loc="lower left")
    return Path(path)


def plot_poi_sigmas(
    rows: Mapping[str, Mapping[str, Mapping[str, float]]],
    limit: Mapping[str, float],
    path: PathLike,
    limit_error: Optional[Mapping[str, float]] = None,
) -> Path:
    """Expected σ of each POI per method against the limit: ``rows[method][poi]`` = {median, q16, q84} over models
    (optional ``ensemble``); ``limit[poi]`` the optimum (dashed line, its Monte Carlo error as a band). One panel per
    POI, σ / limit on the y axis so both POIs read the same way."""
    pois = list(limit)
    methods = list(rows)
    with hep_figure(path, figsize=(6 * len(pois), 6), ncols=len(pois)) as (fig, axes):
        for ax, poi in zip(axes, pois):
            lim = limit[poi]
            for i, m in enumerate(methods):
                e = rows[m][poi]
                ax.errorbar([i], [e["median"] / lim], yerr=[[(e["median"] - e["q16"]) / lim], [(e["q84"] - e["median"]) / lim]],
                            fmt="o", color=f"C{i}", capsize=3, label="median over models" if i == 0 else None)
                if e.get("ensemble") is not None:
                    ax.plot([i + 0.15], [e["ensemble"] / lim], marker="*", ms=12, color=f"C{i}", ls="none",
                            label="ensemble" if i == 0 else None)
            ax.axhline(1.0, color="k", ls="--", lw=1, label="limit (unbinned)")
            if limit_error:
                err = limit_error[poi] / lim
                ax.axhspan(1 - err, 1 + err, color="grey", alpha=0.3)
            ax.axhline(1.05, color="grey", ls=":", lw=1, label="limit + 5 %")
            ax.set_xticks(np.arange(len(methods)), methods, rotation=30, ha="right", fontsize="x-small")
            ax.set_ylabel(f"σ({poi}) / limit")
            ax.legend(fontsize="x-small")
    return Path(path)


def plot_poi_contours(
    ellipses: Mapping[str, Tuple[Sequence[float], np.ndarray]], path: PathLike, pois: Sequence[str] = ("poi 1", "poi 2"),
    delta_chi2: float = 2.2958,
) -> Path:
    """2-D expected confidence regions of two POIs from their covariance, one ellipse per label:
    ``ellipses[label] = (centre, 2×2 covariance)``; the contour is Δχ² = ``delta_chi2`` (68.3 % CL for two
    parameters by default)."""
    t = np.linspace(0, 2 * np.pi, 200)
    with hep_figure(path, figsize=(7, 7)) as (fig, (ax,)):
        for i, (label, (centre, cov)) in enumerate(ellipses.items()):
            vals, vecs = np.linalg.eigh(np.asarray(cov, dtype=float))
            pts = vecs @ (np.sqrt(np.clip(vals, 0, None) * delta_chi2)[:, None] * np.stack([np.cos(t), np.sin(t)]))
            style = dict(color="k", ls="--") if "limit" in label else dict(color=f"C{i}")
            ax.plot(centre[0] + pts[0], centre[1] + pts[1], lw=2, label=label, **style)
        ax.plot([centre[0]], [centre[1]], "k+", ms=12)
        ax.set_xlabel(pois[0])
        ax.set_ylabel(pois[1])
        ax.legend(fontsize="x-small")
    return Path(path)


def plot_pulls(pulls: Mapping[str, np.ndarray], path: PathLike, poi: str = "POI", n_bins: int = 30) -> Path:
    """Pull distributions (μ̂ − μ_true)/σ̂ of pseudo-experiments, one histogram per label (``mplhep.histplot``,
    normalised to unit area), with the standard normal a well-calibrated fit gives; mean and width in the legend."""
    import mplhep

    edges = np.linspace(-4.0, 4.0, n_bins + 1)
    with hep_figure(path, figsize=(10, 7)) as (fig, axes):
        ax = axes[0]
        top = 0.0
        for label, p in pulls.items():
            p = np.asarray(p, dtype=float)
            p = p[np.isfinite(p)]
            h, _ = np.histogram(np.clip(p, edges[0], edges[-1]), edges)
            width = np.diff(edges)
            norm = max(h.sum(), 1) * width
            top = max(top, float((h / norm).max()))
            mplhep.histplot(h / norm, edges, yerr=np.sqrt(h) / norm, ax=ax,
                            label=f"{label}: mean {p.mean():+.2f}, width {p.std(ddof=1):.2f} ({len(p)} toys)")
        x = np.linspace(edges[0], edges[-1], 200)
        ax.plot(x, np.exp(-0.5 * x * x) / np.sqrt(2 * np.pi), "k--", label="N(0, 1)")
        ax.set_ylim(0, 1.7 * max(top, 0.4))  # room for the legend above the histograms
        ax.set_xlabel(f"pull of {poi}")
        ax.set_ylabel("toys (normalised)")
        ax.legend(fontsize="xx-small", loc="upper left")
    return Path(path)


def plot_coverage(summary: Mapping[str, Mapping], path: PathLike) -> Path:
    """Coverage of the 68 % and 95 % profile-likelihood intervals per setting and POI
    (:func:`~lumin_inferno.evaluation.coverage.coverage_summary`), with Clopper–Pearson 68 % error bars and the
    nominal levels as lines."""
    rows = [(name, poi, r) for name, e in summary.items() for poi, r in e["pois"].items()]
    with hep_figure(path, figsize=(10, 2.5 + 0.7 * len(rows))) as (fig, axes):
        ax = axes[0]
        y = np.arange(len(rows))
        lowest = 1.0
        for level, nominal, colour, dy in (("68%", 0.6827, "tab:blue", 0.12), ("95%", 0.95, "tab:orange", -0.12)):
            f = np.array([r["coverage"][level]["fraction"] for _, _, r in rows])
            lo = np.array([r["coverage"][level]["low"] for _, _, r in rows])
            hi = np.array([r["coverage"][level]["high"] for _, _, r in rows])
            lowest = min(lowest, float(np.nanmin(lo)))
            ax.errorbar(f, y + dy, xerr=[f - lo, hi - f], fmt="o", color=colour, label=f"{level} interval")
            ax.axvline(nominal, color=colour, ls="--", lw=1)
        ax.set_xlim(min(lowest, 0.6827) - 0.05, 1.0)
        ax.set_ylim(-0.6, len(rows) - 0.4 + 0.8)  # room for the legend
        ax.set_yticks(y)
        ax.set_yticklabels([f"{name}: {poi}" if len({p for _, p, _ in rows}) > 1 else name for name, poi, _ in rows],
                           fontsize="x-small")
        ax.set_xlabel("coverage")
        ax.legend(fontsize="x-small", loc="upper left", ncol=2)
    return Path(path)
