"""The *Learning to pivot* toy study on LUMIN: a plain classifier (λ = 0) against pivoted ones (λ > 0).

Writes the toy's fold file (z as an extra column), trains an ensemble per λ with LUMIN's ``train_models`` and
:class:`~lumin_inferno.callbacks.pivot.PivotCallback`, and evaluates on independent samples: ROC AUC (classification
power, z ~ N(0, 1)), distance correlation dCor(f, z) on background (dependence on the nuisance), and JS divergence /
KS statistic between the output distributions at z = −σ and +σ and the one at z = 0 (signal + background, as the
paper's figure). Prints a Markdown table, writes it with the settings as JSON, and plots the three distributions.

    python -m lumin_inferno.studies.pivot --outdir outputs/pivot_study          # a few minutes on 2 CPU cores
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import random
import time
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

import numpy as np
import torch

from ..callbacks.pivot import PivotCallback
from ..data.pivot_toy import NUISANCE, TOY_FEATURES, sample_pivot_toy, write_pivot_toy_foldfile
from ..evaluation.independence import compare_at_nuisance, distance_correlation, plot_output_vs_nuisance
from ..io import atomic_write_text

__all__ = ["PivotStudySettings", "toy_model_builder", "evaluate_pivot", "run_pivot_study", "format_pivot_table", "main"]


@dataclass
class PivotStudySettings:
    """Settings of one toy study (recorded next to its outputs). λ is dimensionless (adversary NLL in nats)."""

    outdir: str = "outputs/pivot_study"
    lambdas: List[float] = field(default_factory=lambda: [0.0, 10.0])
    n_train_per_class: int = 10_000
    n_test_per_class: int = 20_000
    n_folds: int = 4
    n_models: int = 2
    n_epochs: int = 15
    bs: int = 256
    lr: float = 3e-3
    width: int = 20
    depth: int = 3
    apply_to: str = "background"
    n_pretrain_main: int = 2
    n_pretrain_adv: int = 2
    adv_update_freq: int = 1
    adv_steps: int = 5
    adv_lr: float = 5e-3
    n_components: int = 5
    seed: int = 7
    #: torch intra-op threads while training: the toy's networks are so small that more threads only wait on each other
    n_threads: int = 1

    @classmethod
    def tiny(cls, **overrides) -> "PivotStudySettings":
        """Seconds: what the tests and ``--tiny`` run (too short for a converged pivot, but the effect shows)."""
        base: Dict[str, Any] = dict(n_train_per_class=2000, n_test_per_class=3000, n_folds=3, n_models=1, n_epochs=6)
        base.update(overrides)
        return cls(**base)


def toy_model_builder(cont_feats: Sequence[str], width: int = 20, depth: int = 3, lr: float = 3e-3):
    """LUMIN ModelBuilder of the toy's classifier: sigmoid output, binary cross-entropy, Adam."""
    from lumin.nn.models.helpers import CatEmbedder
    from lumin.nn.models.model_builder import ModelBuilder

    with contextlib.redirect_stdout(io.StringIO()):
        return ModelBuilder(
            objective="classification",
            n_out=1,
            cont_feats=list(cont_feats),
            cat_embedder=CatEmbedder([], []),
            model_args={"body": {"width": width, "depth": depth}},
            opt_args={"opt": "adam", "lr": lr},
        )


def evaluate_pivot(predict, test, fixed: Dict[float, Any]) -> Dict[str, Any]:
    """Metrics of a trained model. ``predict(x) -> f`` (sigmoid output); ``test``: toy DataFrame with z ~ N(0, 1);
    ``fixed``: ``{z: DataFrame at that z}`` including 0. Returns auc, dcor (background), and js_/ks_ at each z ≠ 0."""
    from sklearn.metrics import roc_auc_score

    f = np.asarray(predict(test[TOY_FEATURES].values.astype(np.float32))).reshape(-1)
    bkg = test["gen_target"].values == 0
    row: Dict[str, Any] = {
        "auc": float(roc_auc_score(test["gen_target"].values, f)),
        "dcor": distance_correlation(f[bkg], test[NUISANCE].values[bkg], max_n=3000),
    }
    outs = {z: np.asarray(predict(df[TOY_FEATURES].values.astype(np.float32))).reshape(-1) for z, df in fixed.items()}
    for z, m in compare_at_nuisance(outs, reference=0.0).items():
        row[f"js_{z:+g}"], row[f"ks_{z:+g}"] = m["js"], m["ks"]
    row["_outputs"] = outs
    return row


def format_pivot_table(rows: List[Dict[str, float]]) -> str:
    """Markdown table of the study's rows."""
    head = "| λ | ROC AUC | dCor(f, z) bkg | JS(−σ‖0) [bits] | JS(+σ‖0) [bits] | KS(−σ, 0) | KS(+σ, 0) | train s |"
    lines = [head, "|" + "---|" * 8]
    for r in rows:
        lines.append(
            f"| {r['lam']:g} | {r['auc']:.3f} | {r['dcor']:.3f} | {r['js_-1']:.4f} | {r['js_+1']:.4f} | "
            f"{r['ks_-1']:.3f} | {r['ks_+1']:.3f} | {r['train_s']:.0f} |"
        )
    return "\n".join(lines)


def run_pivot_study(settings: Optional[PivotStudySettings] = None, verbose: bool = True) -> List[Dict[str, Any]]:
    """Run the study; returns one row of metrics per λ (also in ``outdir/results.{md,json}``, plot in
    ``outdir/pivot_outputs.png``). ``results.json`` is written last: its presence marks a finished run."""
    s = settings or PivotStudySettings()
    threads = torch.get_num_threads()
    torch.set_num_threads(s.n_threads)
    try:
        return _run(s, verbose)
    finally:
        torch.set_num_threads(threads)


def _run(s: PivotStudySettings, verbose: bool) -> List[Dict[str, Any]]:
    from ..data.foldfiles import open_foldfile
    from lumin.nn.ensemble.ensemble import Ensemble
    from lumin.nn.training.train import train_models

    out = Path(s.outdir).resolve()
    out.mkdir(parents=True, exist_ok=True)
    for stale in ("results.json", "results.md"):  # an unfinished rerun must not look complete
        (out / stale).unlink(missing_ok=True)
    fy = open_foldfile(write_pivot_toy_foldfile(out / "data" / "train", s.n_train_per_class, s.n_folds, seed=s.seed))
    test = sample_pivot_toy(s.n_test_per_class, s.n_test_per_class, seed=s.seed + 1)
    fixed = {z: sample_pivot_toy(s.n_test_per_class, s.n_test_per_class, z=z, seed=s.seed + 2 + i)
             for i, z in enumerate((-1.0, 0.0, 1.0))}  # z = −σ, 0, +σ with σ = 1
    builder = toy_model_builder(fy.cont_feats, s.width, s.depth, s.lr)
    rows = []
    for lam in s.lambdas:  # λ = 0 also runs the callback: same pretraining, adversary trained but not acting
        torch.manual_seed(s.seed)
        np.random.seed(s.seed)  # LUMIN shuffles batches with numpy's global generator...
        random.seed(s.seed)  # ...and training folds with Python's
        cb = partial(
            PivotCallback, adv_targets=[NUISANCE], lam=lam, apply_to=s.apply_to, n_pretrain_main=s.n_pretrain_main,
            n_pretrain_adv=s.n_pretrain_adv, adv_update_freq=s.adv_update_freq, adv_steps=s.adv_steps,
            adv_lr=s.adv_lr, n_components=s.n_components,
        )
        t0 = time.time()
        weights = out / f"weights_lambda_{lam:g}"
        for i in range(s.n_models):  # train_models shells out `rm -r model_id_i` first: give it something to remove
            (weights / f"model_id_{i}").mkdir(parents=True, exist_ok=True)
        with contextlib.redirect_stdout(io.StringIO()):
            results, _, _ = train_models(
                fy, n_models=s.n_models, bs=s.bs, model_builder=builder, n_epochs=s.n_epochs,
                cb_partials=[cb], savepath=weights, live_fdbk=False,
            )
            ensemble = Ensemble.from_results(results, size=s.n_models, model_builder=builder, metric="loss")
        train_s = time.time() - t0
        row = evaluate_pivot(lambda x: ensemble.predict(x, verbose=False), test, fixed)
        row.update(lam=float(lam), train_s=train_s, valid_loss=[float(r["loss"]) for r in results])
        rows.append(row)
        if verbose:
            print(f"λ = {lam:g}: AUC {row['auc']:.3f}, dCor {row['dcor']:.3f}, "
                  f"JS(±σ) {row['js_-1']:.4f}/{row['js_+1']:.4f} ({train_s:.0f} s)", flush=True)
    plot = plot_output_vs_nuisance({f"λ = {r['lam']:g}": r.pop("_outputs") for r in rows}, out / "pivot_outputs.png")
    table = format_pivot_table(rows)
    atomic_write_text(out / "results.md", table + "\n")
    atomic_write_text(out / "results.json", json.dumps({"settings": asdict(s), "rows": rows}, indent=2))  # last
    if verbose:
        print(table)
        print(f"plot: {plot}")
    return rows


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="lumin-inferno pivot-study", description="Learning to pivot: the paper's toy on LUMIN")
    p.add_argument("--outdir", default="outputs/pivot_study")
    p.add_argument("--tiny", action="store_true", help="seconds-long settings (as the tests)")
    p.add_argument("--lambdas", type=float, nargs="+", default=None, help="adversary weights (0 = plain classifier)")
    p.add_argument("--n-models", type=int, default=None)
    p.add_argument("--n-epochs", type=int, default=None)
    p.add_argument("--n-train", type=int, default=None, help="training events per class")
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--quiet", action="store_true")
    return p


def main(argv: Optional[List[str]] = None) -> int:
    """Command line of the study (``python -m lumin_inferno.studies.pivot --help``)."""
    args = _parser().parse_args(argv)
    overrides = {
        k: v
        for k, v in dict(outdir=args.outdir, lambdas=args.lambdas, n_models=args.n_models, n_epochs=args.n_epochs,
                         n_train_per_class=args.n_train, seed=args.seed).items()
        if v is not None
    }
    settings = PivotStudySettings.tiny(**overrides) if args.tiny else PivotStudySettings(**overrides)
    run_pivot_study(settings, verbose=not args.quiet)
    return 0


if __name__ == "__main__":
    import sys

    sys.exit(main())
