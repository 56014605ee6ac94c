"""How close can *any* K-bin summary get to the unbinned limit on the paper's benchmark 0 (s free, nothing else)?
Prints the floor per number of bins next to the analytic limit.

Without nuisances the Fisher information of a binned Poisson measurement of μ (signal s, background b per bin) is
I = Σ_k s_k² / (s_k + b_k), and the partition into K bins that maximises it consists of intervals of the likelihood
ratio f_s/f_b (so of the ideal classifier's output). This script draws events from the paper's densities, sorts them
by the exact ratio, cuts them into G equal-population groups and finds the best K intervals of groups by dynamic
programming; σ(s) = s₀/√I. Any trained summary with K bins, INFERNO's or a classifier's, is at or above this floor
(up to the sampling precision, ~1/√n). With nuisances the best partition is no longer one-dimensional and there is
no such closed form.

    .venv/bin/python benchmarks/binning_floor.py [--bins 5 10 20 50] [--n 1000000] [--groups 2000] [--study OUTDIR]

``--study OUTDIR`` (a ``lumin-inferno paper-study`` output folder with benchmark 0) also prints, for each of its
INFERNO-0 members, σ(s) of its hard (argmax) and soft (softmax at the final temperature) templates on the test file,
and of its hard templates on every fold of the training file (the member's own validation fold among them), from the
same closed form: where a trained summary loses against the floor.
"""

from __future__ import annotations

import argparse
from types import SimpleNamespace

import numpy as np
import torch


def best_partition(s: np.ndarray, b: np.ndarray, n_bins: int) -> float:
    """max over partitions of the groups (in their order) into ``n_bins`` intervals of Σ s_k²/(s_k + b_k)."""
    cs, cb = np.concatenate([[0.0], np.cumsum(s)]), np.concatenate([[0.0], np.cumsum(b)])
    g = len(s)
    best = np.full(g + 1, -np.inf)
    best[0] = 0.0
    for _ in range(n_bins):
        new = np.full(g + 1, -np.inf)
        for j in range(1, g + 1):
            ss, bb = cs[j] - cs[:j], cb[j] - cb[:j]
            gain = np.where(ss + bb > 0, ss ** 2 / np.maximum(ss + bb, 1e-300), 0.0)
            new[j] = np.max(best[:j] + gain)
        best = np.maximum(best, new)  # fewer non-empty bins are allowed
    return float(best[g])


def stat_only_sigma(assign: np.ndarray, is_sig: np.ndarray) -> float:
    """σ(s) = s₀/√I of bin assignments (one row of bin weights per event: one-hot or soft), events of each process
    normalised to its yield."""
    from lumin_inferno.data.paper import BACKGROUND_YIELD, SIGNAL_YIELD

    s = assign[is_sig].sum(0) * SIGNAL_YIELD / is_sig.sum()
    b = assign[~is_sig].sum(0) * BACKGROUND_YIELD / (~is_sig).sum()
    info = np.sum(np.where(s + b > 0, s ** 2 / np.maximum(s + b, 1e-300), 0.0))
    return float(SIGNAL_YIELD / np.sqrt(info))


def study_members(outdir: str) -> None:
    import json
    from pathlib import Path

    from lumin_inferno.data.foldfiles import open_foldfile
    from lumin_inferno.studies.common import load_models, predict
    from lumin_inferno.studies.paper import StudySettings, _model_builder

    out = Path(outdir)
    settings = StudySettings(**json.loads((out / "settings.json").read_text()))
    fy = open_foldfile(out / "data" / "train.hdf5")
    test = open_foldfile(out / "data" / "test.hdf5").get_fold(0)
    members = sorted((out / "weights" / "inferno_0").glob("model_id_*"), key=lambda p: int(p.name.split("_")[-1]))
    models = load_models([{"path": m} for m in members], _model_builder(settings, fy, True))
    folds = [fy.get_fold(i) for i in range(fy.n_folds)]
    print(f"\nINFERNO-0 members of {out} (stat-only σ(s), closed form):")
    print("| member | test, hard | test, soft | training-file folds, hard (validation fold in brackets) |")
    print("|---|---|---|---|")
    for i, m in enumerate(models):
        is_sig = test["targets"].ravel() == 1
        p = predict(m, test["inputs"])
        hard = np.eye(p.shape[1])[p.argmax(1)]
        cells = []
        for j, fold in enumerate(folds):
            q = predict(m, fold["inputs"])
            v = stat_only_sigma(np.eye(q.shape[1])[q.argmax(1)], fold["targets"].ravel() == 1)
            cells.append(f"[{v:.2f}]" if j == i % len(folds) else f"{v:.2f}")
        print(f"| {i} | {stat_only_sigma(hard, is_sig):.3f} | {stat_only_sigma(p, is_sig):.3f} | {', '.join(cells)} |")


def main() -> None:
    from lumin_inferno.data.paper import BACKGROUND_YIELD, SIGNAL_YIELD, analytic_limit, paper_intensity, sample_paper

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--bins", type=int, nargs="+", default=[5, 10, 20, 50])
    p.add_argument("--n", type=int, default=1_000_000, help="events per process")
    p.add_argument("--groups", type=int, default=2000, help="equal-population groups of the ratio")
    p.add_argument("--seed", type=int, default=1234)
    p.add_argument("--study", default=None, help="a paper-study output folder: diagnose its INFERNO-0 members too")
    args = p.parse_args()

    df = sample_paper(args.n, args.n, seed=args.seed)
    x = torch.as_tensor(df[["x0", "x1", "x2"]].values, dtype=torch.float64)
    nu = paper_intensity([SimpleNamespace(name="s"), SimpleNamespace(name="b")])  # r, λ at their nominal values
    nu_s = nu(x, torch.tensor([SIGNAL_YIELD, 0.0], dtype=torch.float64)).numpy()
    nu_b = nu(x, torch.tensor([0.0, BACKGROUND_YIELD], dtype=torch.float64)).numpy()
    ratio = nu_s / nu_b
    is_sig = df["gen_target"].to_numpy() == 1
    w = np.where(is_sig, SIGNAL_YIELD / args.n, BACKGROUND_YIELD / args.n)  # expected events per drawn event
    order = np.argsort(ratio)
    groups = np.array_split(order, args.groups)
    s = np.array([w[idx][is_sig[idx]].sum() for idx in groups])
    b = np.array([w[idx][~is_sig[idx]].sum() for idx in groups])
    limit = analytic_limit(0, args.n, seed=args.seed)
    print(f"paper benchmark 0: s = {SIGNAL_YIELD:g}, b = {BACKGROUND_YIELD:g}; {args.n} events per process, "
          f"{args.groups} groups of the exact likelihood ratio; analytic (unbinned) limit σ(s) = {limit:.3f}")
    print("| bins | best σ(s) of any summary with this many bins | above the unbinned limit |")
    print("|---|---|---|")
    for k in args.bins:
        info = best_partition(s, b, k)
        sigma = SIGNAL_YIELD / np.sqrt(info)
        print(f"| {k} | {sigma:.3f} | {100 * (sigma / limit - 1):+.2f} % |")
    if args.study:
        study_members(args.study)


if __name__ == "__main__":
    main()
