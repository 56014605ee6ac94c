"""Learning to pivot on the paper's toy with LUMIN: a plain classifier (λ = 0) against a pivoted one (λ = 10).

    .venv/bin/python examples/pivot_toy.py                 # the documented study settings (a few minutes, 2 CPU cores)
    .venv/bin/python examples/pivot_toy.py --tiny          # seconds (what the test suite runs)

The lines that make a plain LUMIN training script adversarial are marked `# PIVOT`.
"""

import argparse
import contextlib
import io
import random
from functools import partial
from pathlib import Path

import numpy as np
import torch
from lumin.nn.data.fold_yielder import FoldYielder
from lumin.nn.ensemble.ensemble import Ensemble
from lumin.nn.training.train import train_models

from lumin_inferno.callbacks.pivot import PivotCallback  # PIVOT
from lumin_inferno.data.pivot_toy import NUISANCE, sample_pivot_toy, write_pivot_toy_foldfile
from lumin_inferno.studies.pivot import PivotStudySettings, evaluate_pivot, format_pivot_table, toy_model_builder
from lumin_inferno.evaluation.independence import plot_output_vs_nuisance


def main(outdir: str = "outputs/pivot_example", tiny: bool = False) -> dict:
    """Train λ = 0 and λ = 10 ensembles, print the metrics table, save the plot; returns ``{λ: metrics}``."""
    s = PivotStudySettings.tiny() if tiny else PivotStudySettings()
    torch.set_num_threads(1)  # tiny networks: one thread is fastest
    out = Path(outdir).resolve()
    # the nuisance z is written as an extra fold-file column (df2foldfile misc_feats), not as an input
    fy = FoldYielder(write_pivot_toy_foldfile(out / "data" / "train", s.n_train_per_class, s.n_folds, seed=s.seed))
    builder = toy_model_builder(fy.cont_feats, s.width, s.depth, s.lr)  # sigmoid output, BCE, Adam
    test = sample_pivot_toy(s.n_test_per_class, s.n_test_per_class, seed=s.seed + 1)
    fixed = {z: sample_pivot_toy(s.n_test_per_class, s.n_test_per_class, z=z, seed=s.seed + 2 + i)
             for i, z in enumerate((-1.0, 0.0, 1.0))}
    rows, outputs = [], {}
    for lam in (0.0, 10.0):
        torch.manual_seed(s.seed)
        np.random.seed(s.seed)  # LUMIN shuffles batches with numpy's global generator
        random.seed(s.seed)  # and the training folds with Python's
        pivot = partial(PivotCallback, adv_targets=[NUISANCE], lam=lam,  # PIVOT: adversary on z, weight λ
                        apply_to="background", n_pretrain_main=s.n_pretrain_main,  # PIVOT
                        n_pretrain_adv=s.n_pretrain_adv, adv_steps=s.adv_steps, adv_lr=s.adv_lr)  # PIVOT
        with contextlib.redirect_stdout(io.StringIO()):
            results, _, _ = train_models(fy, n_models=s.n_models, bs=s.bs, model_builder=builder,
                                         n_epochs=s.n_epochs, cb_partials=[pivot],  # PIVOT
                                         savepath=out / f"weights_{lam:g}", live_fdbk=False)
            ensemble = Ensemble.from_results(results, size=s.n_models, model_builder=builder, metric="loss")
        row = evaluate_pivot(lambda x: ensemble.predict(x, verbose=False), test, fixed)
        outputs[f"λ = {lam:g}"] = row.pop("_outputs")
        row.update(lam=lam, train_s=float("nan"))
        rows.append(row)
    print(format_pivot_table(rows))
    print("plot:", plot_output_vs_nuisance(outputs, out / "pivot_outputs.png"))
    return {r["lam"]: r for r in rows}


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--outdir", default="outputs/pivot_example")
    parser.add_argument("--tiny", action="store_true")
    args = parser.parse_args()
    main(args.outdir, args.tiny)
