"""Approximate INFERNO on the INFERNO paper's problem: train from ±1σ shifted copies stored in the fold file.

An analyst has the nominal events and the same events re-processed with each systematic shifted up and down. Here
the shifted copies are made with the paper's background transform at r = ±0.2 and λ = 3.5 / 2.5 (the same shifts
the evaluation uses for its templates), written with ``write_systematics_foldfile``, and a LUMIN model is trained
with ``ApproxInfernoCallback`` through ``train_models``; σ(s) of each model is then evaluated exactly as for
exact INFERNO (hard argmax bins on an independent test file, profile likelihood with the benchmark's nuisances).

    .venv/bin/python examples/approx_inferno_paper.py                     # benchmark 2, quick settings (~2 min)
    .venv/bin/python examples/approx_inferno_paper.py --compare           # + exact INFERNO and cross-entropy
    .venv/bin/python examples/approx_inferno_paper.py --tiny              # seconds (what the test suite runs)
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import random
import time
from functools import partial
from pathlib import Path
from typing import Dict, List, Sequence, Tuple

import numpy as np
import pandas as pd
import torch
from lumin.nn.data.fold_yielder import FoldYielder
from lumin.nn.models.helpers import CatEmbedder
from lumin.nn.models.model import Model
from lumin.nn.models.model_builder import ModelBuilder
from lumin.nn.training.train import train_models

from lumin_inferno.callbacks.approx_inferno import ApproxInfernoCallback
from lumin_inferno.data.paper import (
    FEATURES,
    SIGNAL_YIELD,
    TEMPLATE_SHIFTS,
    PaperTransform,
    paper_benchmark,
    sample_paper,
    standardise,
    write_paper_foldfiles,
)
from lumin_inferno.data.systematics import write_systematics_foldfile
from lumin_inferno.evaluation import analysis_template_model, argmax_bins
from lumin_inferno.statistics import expected_poi_uncertainty
from lumin_inferno.models import SoftmaxTemperatureTail


def shifted_copies(nominal: pd.DataFrame,
                   shifts: Dict[str, float] = TEMPLATE_SHIFTS) -> Dict[str, Tuple[pd.DataFrame, pd.DataFrame]]:
    """The nominal events with each background shape nuisance moved by ±its step (r ± 0.2, λ = 3 ± 0.5): what a real
    analysis would get by re-processing its events. Signal rows are unchanged. Same index and order as nominal."""
    transform, bm = PaperTransform(), paper_benchmark(2)
    x = torch.as_tensor(nominal[FEATURES].to_numpy(np.float32))
    is_bkg = torch.as_tensor(nominal["gen_target"].to_numpy() == 0)
    out = {}
    for p in bm.shape_nuisances:
        pair = []
        for sign in (+1.0, -1.0):
            with torch.no_grad():
                xs = transform(x, {p.name: torch.tensor(p.nominal + sign * shifts[p.name])}, is_bkg).numpy()
            frame = nominal.copy()
            frame[FEATURES] = xs
            pair.append(frame)
        out[p.name] = (pair[0], pair[1])
    return out


def write_approx_foldfiles(outdir: Path, n_train: int, n_test: int, n_folds: int, seed: int) -> Tuple[Path, Path]:
    """``train_systematics.hdf5`` (nominal + shifted copies; the same nominal events as ``write_paper_foldfiles``
    with this seed) and the paper study's independent ``test.hdf5``."""
    _, test = write_paper_foldfiles(outdir, n_train, n_test, n_folds, seed)
    nominal = standardise(sample_paper(n_train, n_train, seed=seed)).sample(frac=1.0, random_state=seed)
    nominal = nominal.reset_index(drop=True)
    train = write_systematics_foldfile(
        Path(outdir) / "train_systematics", nominal, n_folds, FEATURES, "gen_target",
        shifted_inputs=shifted_copies(nominal), wgt_feat="gen_weight", strat_key="gen_target",
    )
    return train, test


def _builder(fy, n_bins: int = 10) -> ModelBuilder:
    with contextlib.redirect_stdout(io.StringIO()):
        return ModelBuilder(
            objective="classification", n_out=n_bins, cont_feats=fy.cont_feats, cat_embedder=CatEmbedder([], []),
            model_args={"body": {"width": 100, "depth": 2, "act": "relu"}, "tail": {"temperature": 0.1}},
            tail=SoftmaxTemperatureTail, opt_args={"opt": "adam", "lr": 1e-3},
        )


def _sigma_per_model(results, builder, test, benchmark: int, n_bins: int = 10) -> List[float]:
    bm = paper_benchmark(benchmark)
    sigmas = []
    for r in results:
        m = Model(builder)
        idx = int(Path(r["path"]).name.split("_")[-1])
        m.load(str(Path(r["path"]) / f"train_{idx}.h5"))
        tm = analysis_template_model(
            bm.analysis(n_bins, kind="transform"), lambda x, m=m: argmax_bins(m.predict(x, bs=50_000)),
            test["inputs"], test["targets"], test["weights"], transform=bm.transform(),
        )
        sigmas.append(SIGNAL_YIELD * expected_poi_uncertainty(tm, method="profile"))  # σ(s) = 50 σ(μ)
    return sigmas


def _summary(values: Sequence[float]) -> Dict[str, float]:
    v = np.asarray(values, dtype=float)
    return {"median": float(np.median(v)), "q16": float(np.quantile(v, 0.16)), "q84": float(np.quantile(v, 0.84))}


def _fmt(entry) -> str:
    return f"{entry['median']:.2f} [{entry['q16']:.2f}, {entry['q84']:.2f}]" if entry else "–"


def main(outdir: str = "outputs/approx_inferno", tiny: bool = False, benchmarks: Sequence[int] = (2,),
         n_models: int = 2, epochs: int = 30, compare: bool = False, seed: int = 27) -> dict:
    """Write the fold files, train approximate INFERNO per benchmark, evaluate σ(s) per model; with ``compare``
    also run the paper study (cross-entropy and exact INFERNO, same settings and seed). Returns the results table
    (also written to ``outdir/results.{json,md}``)."""
    t0 = time.time()
    out = Path(outdir).resolve()
    out.mkdir(parents=True, exist_ok=True)
    n_train, n_test, n_folds, bs = (3000, 4000, 3, 500) if tiny else (20_000, 100_000, 5, 2000)
    epochs = 2 if tiny else epochs
    torch.manual_seed(seed)
    np.random.seed(seed)  # LUMIN shuffles batches with numpy's global generator...
    random.seed(seed)  # ...and the training folds with Python's
    train_file, test_file = write_approx_foldfiles(out / "data", n_train, n_test, n_folds, seed)
    fy = FoldYielder(train_file)
    test = FoldYielder(test_file).get_fold(0)
    table: Dict[int, dict] = {}
    for k in benchmarks:
        builder = _builder(fy)
        savepath = out / "weights" / f"approx_{k}"
        savepath.mkdir(parents=True, exist_ok=True)
        for i in range(n_models):  # train_models shells out `rm -r` on these; create them so it stays quiet
            (savepath / f"model_id_{i}").mkdir(exist_ok=True)
        with contextlib.redirect_stdout(io.StringIO()):
            results, _, _ = train_models(
                fy, n_models=n_models, bs=bs, model_builder=builder, n_epochs=epochs,
                cb_partials=[partial(ApproxInfernoCallback, paper_benchmark(k).analysis(n_bins=10))],
                savepath=savepath, live_fdbk=False,
            )
        sigmas = _sigma_per_model(results, builder, test, k)
        table[k] = {"benchmark": k, "approx": {"per_model": sigmas, **_summary(sigmas)}}
        print(f"[approx-inferno] benchmark {k}: approximate INFERNO σ(s) = {_fmt(table[k]['approx'])} "
              f"({time.time() - t0:.0f}s)")
    if compare:
        from lumin_inferno.studies.paper import StudySettings, run_paper_study

        settings = StudySettings(outdir=str(out / "study"), benchmarks=list(benchmarks), n_models=n_models,
                                 inferno_epochs=epochs, seed=seed, n_train_per_class=n_train,
                                 n_test_per_class=n_test, n_folds=n_folds, inferno_bs=bs)
        study = run_paper_study(settings, verbose=False)
        for k in benchmarks:
            row = study["benchmarks"][k]
            table[k].update({"ce": row["ce"], "exact": row["inferno"], "paper_inferno": row["paper_inferno"],
                             "analytic": row["analytic"]})
    lines = ["| benchmark | cross-entropy σ(s) | exact INFERNO σ(s) | approximate INFERNO σ(s) | approx / exact | "
             "paper INFERNO | analytic limit (paper) |", "|---|---|---|---|---|---|---|"]
    for k, row in table.items():
        ratio = f"{row['approx']['median'] / row['exact']['median']:.3f}" if "exact" in row else "–"
        lines.append(f"| {k} | {_fmt(row.get('ce'))} | {_fmt(row.get('exact'))} | {_fmt(row['approx'])} | {ratio} | "
                     f"{row.get('paper_inferno', '–')} | {row.get('analytic', '–')} |")
    md = "\n".join(lines)
    (out / "results.md").write_text(md + "\n")
    (out / "results.json").write_text(json.dumps({"table": table, "runtime_s": time.time() - t0,
                                                  "settings": dict(tiny=tiny, n_models=n_models, epochs=epochs,
                                                                   bs=bs, n_train=n_train, n_test=n_test,
                                                                   n_folds=n_folds, seed=seed)}, indent=2))
    print(md)
    print(f"[approx-inferno] done in {time.time() - t0:.0f}s; outputs in {out}")
    return table


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--outdir", default="outputs/approx_inferno")
    p.add_argument("--tiny", action="store_true")
    p.add_argument("--compare", action="store_true", help="also train cross-entropy and exact INFERNO (paper study)")
    p.add_argument("--benchmarks", type=int, nargs="+", default=[2])
    p.add_argument("--n-models", type=int, default=2)
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--seed", type=int, default=27)
    a = p.parse_args()
    main(a.outdir, a.tiny, a.benchmarks, a.n_models, a.epochs, a.compare, a.seed)
