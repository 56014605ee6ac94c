"""Feature selection in units of the measurement: which inputs does the INFERNO summary statistic need?

The paper's benchmark 2 problem (x0, x1, x2; r and λ free) with one extra input, ``noise`` ~ N(0, 1) for both
processes, that carries no information. Steps:

1. LUMIN's own helpers, on the classification task (signal vs background), as a cheap pre-selection:
   ``auto_filter_on_linear_correlation`` (drops one of each pair of strongly rank-correlated features if a random
   forest does not get worse) and ``rf_rank_features`` (random-forest permutation importance, cut at
   ``rf_importance_cut``). Note: ``rf_rank_features`` evaluates the importance on its *training* data, so an
   overfitting forest can rank pure noise as important; a regularised forest (``min_samples_leaf``) is used, and
   for comparison LUMIN's ``get_rf_feat_importance`` is also evaluated on held-out data.
2. INFERNO training (LUMIN ``train_models`` + ``InfernoCallback``) on all features, bins aligned across members.
3. Permutation importance on an independent test file: Δσ(s) in events when one input is shuffled
   (:func:`~lumin_inferno.evaluation.importance.permutation_importance`), with its spread over shuffles; the plot.
4. Drop-column check for the features that do not help: retrain without them and compare σ(s)
   (:func:`~lumin_inferno.evaluation.importance.drop_column_importance`, with ``ColumnSubsetTransform`` so the
   nuisance transform still acts on the right columns).

    .venv/bin/python examples/feature_selection_inferno.py            # ~3-5 minutes on 2 CPU cores
    .venv/bin/python examples/feature_selection_inferno.py --tiny     # seconds (what the test suite runs)
"""

import argparse
import contextlib
import io
import json
import random
import time
import warnings
from functools import partial
from pathlib import Path
from typing import List, Sequence, Tuple

import numpy as np
import pandas as pd
import torch
from lumin.nn.data.fold_yielder import FoldYielder
from lumin.nn.ensemble.ensemble import Ensemble
from lumin.nn.models.helpers import CatEmbedder
from lumin.nn.models.model_builder import ModelBuilder
from lumin.nn.training.train import train_models

from lumin_inferno import InfernoCallback, SoftmaxTemperatureTail
from lumin_inferno.data import paper_benchmark
from lumin_inferno.data.foldfiles import quiet_df2foldfile
from lumin_inferno.data.paper import FEATURES, sample_paper, standardise
from lumin_inferno.evaluation.ensemble import align_ensemble
from lumin_inferno.evaluation.importance import (
    ColumnSubsetTransform,
    drop_column_importance,
    nuisances_acting_on,
    permutation_importance,
    plot_feature_importance,
)

#: (events per class for training and test, training folds, epochs, batch size, width, learning rate, models,
#: shuffles per feature, random-forest trees)
TINY = (4000, 4000, 2, 5, 1000, 32, 5e-3, 1, 2, 20)
FULL = (20_000, 50_000, 5, 15, 2000, 100, 1e-3, 2, 5, 60)
ALL_FEATURES: List[str] = FEATURES + ["noise"]  # the noise column is last: PaperTransform acts on x0 and x2 only


def paper_with_noise(n_per_class: int, seed: int) -> pd.DataFrame:
    """The paper's events (standardised features) plus an uninformative ``noise`` ~ N(0, 1) input, shuffled."""
    df = standardise(sample_paper(n_per_class, n_per_class, seed=seed))
    df["noise"] = np.random.default_rng(seed + 1000).normal(size=len(df)).astype(np.float32)
    return df.sample(frac=1.0, random_state=seed).reset_index(drop=True)


def write_foldfiles(
    outdir: Path, n_train: int, n_test: int, n_folds: int, seed: int
) -> Tuple[Path, Path, pd.DataFrame]:
    """``train.hdf5`` (``n_folds`` stratified folds) and ``test.hdf5`` (one fold) with LUMIN's ``df2foldfile``."""
    from lumin.data_processing.file_proc import df2foldfile

    outdir.mkdir(parents=True, exist_ok=True)
    frames = {"train": paper_with_noise(n_train, seed), "test": paper_with_noise(n_test, seed + 20)}
    for name, df in frames.items():
        folds = n_folds if name == "train" else 1
        quiet_df2foldfile(
            df2foldfile, df=df, n_folds=folds, cont_feats=ALL_FEATURES, cat_feats=[], targ_feats="gen_target",
            savename=str(outdir / name), targ_type="int64", wgt_feat="gen_weight",
            strat_key="gen_target" if folds > 1 else None,
        )
    return outdir / "train.hdf5", outdir / "test.hdf5", frames["train"]


def lumin_preselection(train_df: pd.DataFrame, n_trees: int, importance_cut: float, savedir: Path) -> dict:
    """LUMIN's classification-based helpers: correlation filter, then random-forest permutation importance."""
    from sklearn.ensemble import RandomForestClassifier

    with warnings.catch_warnings():  # LUMIN's pkg_resources import and rfpimp's distutils import announce themselves
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", UserWarning)
        from lumin.optimisation.features import (
            auto_filter_on_linear_correlation,
            get_rf_feat_importance,
            rf_rank_features,
        )

    half = len(train_df) // 2
    trn, val = train_df.iloc[:half].reset_index(drop=True), train_df.iloc[half:].reset_index(drop=True)
    rf_params = {"min_samples_leaf": 50, "max_features": 0.5, "n_jobs": 1, "random_state": 0}
    log = io.StringIO()
    with contextlib.redirect_stdout(log), warnings.catch_warnings():
        # rfpimp's distutils import, and numpy's "ddof" warning from LUMIN's std over a single forest (n_rfs=1)
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", RuntimeWarning)
        uncorrelated = auto_filter_on_linear_correlation(
            trn, val, ALL_FEATURES, "classification", "gen_target", wgt_name="gen_weight", corr_threshold=0.8,
            n_estimators=n_trees, rf_params=dict(rf_params), optimise_rf=False, n_rfs=1,
            savename=str(savedir / "lumin_feature_dendrogram"),
        )
        ranked = rf_rank_features(
            trn, val, objective="classification", train_feats=uncorrelated, targ_name="gen_target",
            wgt_name="gen_weight", importance_cut=importance_cut, n_estimators=n_trees, rf_params=dict(rf_params),
            optimise_rf=False, n_rfs=1, plot_results=False, retrain_on_import_feats=False, verbose=False,
        )
        rf = RandomForestClassifier(n_estimators=n_trees, **rf_params)
        rf.fit(trn[uncorrelated], trn["gen_target"], sample_weight=trn["gen_weight"])
        held_out = get_rf_feat_importance(rf, val[uncorrelated], val["gen_target"], val["gen_weight"])
    return {
        "after_correlation_filter": list(uncorrelated),
        "rf_rank_features": list(ranked),
        "rf_importance_held_out": {str(f): float(v) for f, v in zip(held_out["Feature"], held_out["Importance"])},
    }


def _builder(feats: Sequence[str], width: int, lr: float):
    with contextlib.redirect_stdout(io.StringIO()):
        return ModelBuilder(
            objective="classification", n_out=10, cont_feats=list(feats), cat_embedder=CatEmbedder([], []),
            model_args={"body": {"width": width, "depth": 2}, "tail": {"temperature": 0.1}},
            tail=SoftmaxTemperatureTail, opt_args={"opt": "adam", "lr": lr},
        )


def train_inferno(train_file: Path, kept: Sequence[int], n_models: int, epochs: int, bs: int, width: int, lr: float,
                  savepath: Path, reference_inputs: np.ndarray):
    """Train INFERNO (benchmark 2) on the input columns ``kept``; returns the aligned ensemble (a bin function of
    ``inputs[:, kept]``)."""
    fy = FoldYielder(train_file)
    dropped = [f for j, f in enumerate(ALL_FEATURES) if j not in kept]
    if dropped:
        fy.add_ignore(dropped)
    bm = paper_benchmark(2)
    analysis, transform = bm.analysis(n_bins=10, kind="transform"), bm.transform()
    # nuisances acting only on dropped inputs do not affect this statistic (and would make the loss singular)
    acting = nuisances_acting_on(transform, analysis, kept, len(ALL_FEATURES))
    analysis = analysis.without_nuisances([n for n in analysis.nuisance_names() if n not in acting])
    transform = ColumnSubsetTransform(transform, list(kept), len(ALL_FEATURES))
    builder = _builder(fy.cont_feats, width, lr)
    for i in range(n_models):  # train_models shells out `rm -r` on these; create them so it stays quiet
        (savepath / f"model_id_{i}").mkdir(parents=True, exist_ok=True)
    with contextlib.redirect_stdout(io.StringIO()):
        results, _, _ = train_models(
            fy, n_models=n_models, bs=bs, model_builder=builder, n_epochs=epochs, live_fdbk=False,
            cb_partials=[partial(InfernoCallback, analysis, transform=transform)], savepath=savepath,
        )
        ensemble = Ensemble.from_results(results, size=n_models, model_builder=builder, metric="loss", verbose=False)
    return align_ensemble(ensemble, reference_inputs[:, list(kept)])


def main(outdir: str = "outputs/feature_selection", tiny: bool = False, seed: int = 0) -> dict:
    t0 = time.time()
    torch.manual_seed(seed)
    np.random.seed(seed)
    random.seed(seed)  # LUMIN shuffles the training folds with Python's random
    out = Path(outdir).resolve()
    out.mkdir(parents=True, exist_ok=True)
    if tiny:
        n_train, n_test, n_folds, epochs, bs, width, lr, n_models, repeats, trees = TINY
    else:
        n_train, n_test, n_folds, epochs, bs, width, lr, n_models, repeats, trees = FULL
    train_file, test_file, train_df = write_foldfiles(out / "data", n_train, n_test, n_folds, seed + 27)

    # 1. LUMIN's classification-based pre-selection
    lumin = lumin_preselection(train_df, trees, importance_cut=0.005, savedir=out)

    # 2.-3. INFERNO on every feature, permutation importance on the independent test file
    test = FoldYielder(test_file).get_fold(0)
    x, y, w = test["inputs"], test["targets"], test["weights"]
    bm = paper_benchmark(2)
    likelihood = dict(analysis=bm.analysis(n_bins=10, kind="transform"), transform=bm.transform())
    every = list(range(len(ALL_FEATURES)))
    statistic = train_inferno(train_file, every, n_models, epochs, bs, width, lr, out / "weights_all", x)
    table = permutation_importance(statistic, inputs=x, targets=y, weights=w, features=ALL_FEATURES, n_repeats=repeats, seed=seed,
                                   **likelihood)
    table["helps"] = (table["delta_sigma"] > 2 * table["delta_sigma_std"]) & (table["delta_sigma"] > 0)
    title = f"INFERNO (benchmark 2): Δσ(μ) when an input is shuffled, {repeats} shuffles (σ(s) = 50 σ(μ))"
    plot = plot_feature_importance(table, out / "feature_importance.png", title=title, poi="μ")
    table.to_csv(out / "feature_importance.csv", index=False)

    # 4. drop-column check of what does not help: retrain without it, σ(s) with vs without
    candidates = [int(c) for c in table.loc[~table["helps"], "column"]]
    drop = None
    if candidates:
        trainings = iter(range(1000))
        drop = drop_column_importance(
            lambda kept: train_inferno(train_file, kept, n_models, epochs, bs, width, lr,
                                       out / f"weights_drop_{next(trainings)}", x),
            inputs=x, targets=y, weights=w, features=ALL_FEATURES, columns=candidates, reference=statistic,
            **likelihood,
        )
        drop.to_csv(out / "drop_column_importance.csv", index=False)

    noise = table.set_index("feature").loc["noise"]
    summary = {
        "lumin": lumin,
        "permutation_importance": table.to_dict(orient="records"),
        "drop_column_importance": None if drop is None else drop.to_dict(orient="records"),
        "noise_rank": int(table.index[table["feature"] == "noise"][0]) + 1,
        "noise_delta_sigma": float(noise["delta_sigma"]),
        "selected": [f for f in table["feature"] if bool(table.set_index("feature").loc[f, "helps"])],
        "plot": str(plot),
        "settings": {"n_train_per_class": n_train, "n_test_per_class": n_test, "epochs": epochs, "n_models": n_models,
                     "n_repeats": repeats, "seed": seed, "tiny": tiny},
        "seconds": time.time() - t0,
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2, default=float))
    with pd.option_context("display.width", 160, "display.precision", 3):
        print("LUMIN pre-selection (classification):", lumin)
        print("permutation importance for the measurement (σ(s) in events, Hessian):")
        print(table[["feature", "sigma", "sigma_permuted", "delta_sigma", "delta_sigma_std", "helps"]].to_string())
        if drop is not None:
            print("drop-column check (retrained without the feature):")
            print(drop[["feature", "sigma", "sigma_dropped", "delta_sigma"]].to_string())
    print(f"noise ranks {summary['noise_rank']}/{len(table)} with Δσ = {summary['noise_delta_sigma']:+.3f} events; "
          f"plot: {plot}")
    return summary


if __name__ == "__main__":
    p = argparse.ArgumentParser()
    p.add_argument("--outdir", default="outputs/feature_selection")
    p.add_argument("--tiny", action="store_true")
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args()
    main(a.outdir, a.tiny, a.seed)
