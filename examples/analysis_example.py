"""From a DataFrame to a combine datacard and a pyhf fit: one Analysis read by training, evaluation and export.

A toy H→ττ-like measurement: two signal production modes (ggH, qqH: two POIs), two backgrounds (ttbar with a free
normalisation measured in a control region, Z→ττ), four features; systematics of every kind:

* ``jes``: a jet-energy-scale-like shift of ``pt`` and ``mjj`` stored as ±1σ shifted copies of the events
  (``"inputs"``, correlated across every process);
* ``pdf``: up/down event weights of the signals (``"weights"``);
* ``lumi_13TeV``, ``xs_ztt``: normalisations (``"norm"``, symmetric / asymmetric κ);
* MC statistics (Barlow–Beeston lite) from the events' Σw².

The network is trained with approximate INFERNO on the generalised variance of (μ_ggH, μ_qqH), evaluated on an
independent test file (hard bins, every systematic), and the same Analysis writes the pyhf workspace, the
HistFactory XML and the combine datacard; pyhf refits the workspace.

    .venv/bin/python examples/analysis_example.py           # a couple of minutes on 2 cores
    .venv/bin/python examples/analysis_example.py --tiny    # seconds (what the test suite runs)
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import random
from functools import partial
from pathlib import Path
from typing import Dict, Tuple

import numpy as np
import pandas as pd
import torch
from lumin.nn.data.fold_yielder import FoldYielder
from lumin.nn.models.helpers import CatEmbedder
from lumin.nn.models.model import Model
from lumin.nn.models.model_builder import ModelBuilder
from lumin.nn.training.train import train_models

from lumin_inferno import (
    Analysis,
    ApproxInfernoCallback,
    FixedChannel,
    NormFactor,
    Objective,
    Process,
    SoftmaxTemperatureTail,
    Systematic,
    expected_poi_uncertainties,
    foldfile_template_model,
    write_combine_datacard,
    write_histfactory_xml,
    write_pyhf_workspace,
)
from lumin_inferno.data.systematics import write_systematics_foldfile
from lumin_inferno.evaluation import argmax_bins
from lumin_inferno.export.pyhf import pyhf_modifier_settings, pyhf_poi_uncertainty

FEATURES = ["pt", "mjj", "deta", "m_vis"]
#: label, expected events, feature means (the four features overlap between processes)
PROCESSES = {"ggH": (0, 60.0, (60.0, 200.0, 1.5, 125.0)), "qqH": (1, 25.0, (70.0, 700.0, 4.0, 125.0)),
             "ttbar": (2, 800.0, (80.0, 300.0, 2.0, 110.0)), "ztt": (3, 1500.0, (45.0, 150.0, 1.2, 90.0))}
SPREAD = (20.0, 150.0, 1.0, 20.0)


def analysis(n_bins: int = 8) -> Analysis:
    """The measurement, described once."""
    return Analysis(
        processes=tuple(Process(name, y, labels=(label,), role="signal" if name.endswith("H") else "background")
                        for name, (label, y, _) in PROCESSES.items()),
        factors=(NormFactor("mu_ggH", ("ggH",), bounds=(-5.0, 10.0)), NormFactor("mu_qqH", ("qqH",), bounds=(-5.0, 10.0)),
                 NormFactor("k_ttbar", ("ttbar",), poi=False)),
        systematics=(
            Systematic("jes", "inputs", ("ggH", "qqH", "ttbar", "ztt")),
            Systematic("pdf", "weights", ("ggH", "qqH")),
            Systematic("lumi_13TeV", "norm", ("ggH", "qqH", "ztt"), kappa_up=1.025),
            Systematic("xs_ztt", "norm", ("ztt",), kappa_up=1.06, kappa_down=0.96),
        ),
        channels=(FixedChannel(  # a ttbar control region (b-tagged events), yields from the same simulation
            "ttbar_cr", yields={"ttbar": (900.0, 600.0, 300.0), "ztt": (40.0, 20.0, 10.0)},
            variations={"jes": {"ttbar": ((930.0, 610.0, 296.0), (871.0, 591.0, 303.0))}},
            mc_uncertainty={"ttbar": (15.0, 12.0, 9.0), "ztt": (4.0, 3.0, 2.0)}),),
        n_bins=n_bins,
        objective=Objective("generalised_variance"),
    )


def events(n_per_process: int, seed: int) -> Tuple[pd.DataFrame, Dict[str, tuple], Dict[str, tuple]]:
    """Nominal events (weights: expected events / generated), their ±1σ jes copies and pdf weights."""
    rng = np.random.default_rng(seed)
    frames = []
    for name, (label, y, means) in PROCESSES.items():
        x = rng.normal(means, SPREAD, size=(n_per_process, 4)).clip(min=[1.0, 1.0, 0.0, 1.0])
        frames.append(pd.DataFrame(x, columns=FEATURES).assign(target=label, weight=y / n_per_process))
    df = pd.concat(frames).sample(frac=1.0, random_state=seed).reset_index(drop=True)
    up, down = df.copy(), df.copy()
    for frame, sign in ((up, 1.0), (down, -1.0)):  # jes: pt and mjj scale together by ±3 %
        frame[["pt", "mjj"]] *= 1.0 + sign * 0.03
    signal = df["target"].isin([0, 1])
    slope = 0.1 * np.tanh((df["deta"] - 2.5) / 2.0)  # pdf: a shape change of the signals along deta
    pdf = (df["weight"] * np.where(signal, 1 + slope, 1.0), df["weight"] * np.where(signal, 1 - slope, 1.0))
    return df, {"jes": (up, down)}, {"pdf": pdf}


def standardise(df: pd.DataFrame, mean: pd.Series, std: pd.Series) -> pd.DataFrame:
    out = df.copy()
    out[FEATURES] = ((df[FEATURES] - mean) / std).astype(np.float32)
    return out


def write(outdir: Path, n_train: int, n_test: int, n_folds: int, seed: int) -> Tuple[Path, Path]:
    train, shifted, weights = events(n_train, seed)
    test, shifted_t, weights_t = events(n_test, seed + 1)
    mean, std = train[FEATURES].mean(), train[FEATURES].std()
    paths = []
    for name, df, sh, wt, folds in (("train", train, shifted, weights, n_folds),
                                    ("test", test, shifted_t, weights_t, 1)):
        paths.append(write_systematics_foldfile(
            outdir / name, standardise(df, mean, std), folds, FEATURES, "target",
            {k: tuple(standardise(f, mean, std) for f in pair) for k, pair in sh.items()}, wt,
            wgt_feat="weight", strat_key="target" if folds > 1 else None))
    return paths[0], paths[1]


def main(outdir: str = "outputs/analysis_example", tiny: bool = False, seed: int = 0) -> dict:
    torch.manual_seed(seed)
    np.random.seed(seed)
    random.seed(seed)
    out = Path(outdir).resolve()
    out.mkdir(parents=True, exist_ok=True)
    n_train, n_test, epochs, bs, n_bins = (2500, 4000, 3, 1500, 6) if tiny else (15_000, 30_000, 20, 4000, 8)
    a = analysis(n_bins)
    a.save(out / "analysis.json")  # the description travels with the results
    train_file, test_file = write(out / "data", n_train, n_test, 3, seed)
    fy = FoldYielder(train_file)
    with contextlib.redirect_stdout(io.StringIO()):
        builder = ModelBuilder(
            objective="classification", n_out=n_bins, cont_feats=fy.cont_feats, cat_embedder=CatEmbedder([], []),
            model_args={"body": {"width": 64, "depth": 2}, "tail": {"temperature": 0.1}},
            tail=SoftmaxTemperatureTail, opt_args={"opt": "adam", "lr": 1e-3})
        (out / "weights" / "model_id_0").mkdir(parents=True, exist_ok=True)
        results, _, _ = train_models(fy, n_models=1, bs=bs, model_builder=builder, n_epochs=epochs,
                                     cb_partials=[partial(ApproxInfernoCallback, a)], savepath=out / "weights",
                                     live_fdbk=False)
    model = Model(builder)
    model.load(str(Path(results[0]["path"]) / "train_0.h5"))
    summary = lambda x: argmax_bins(model.predict(x, bs=50_000))  # noqa: E731

    likelihood = foldfile_template_model(a, summary, test_file)  # hard bins, every systematic, MC statistics
    ours = expected_poi_uncertainties(likelihood)
    workspace = write_pyhf_workspace(a, likelihood, out / "workspace.json")
    spec = json.loads(workspace.read_text())
    theirs = {poi: pyhf_poi_uncertainty(spec, modifier_settings=pyhf_modifier_settings(a), poi=poi)
              for poi in a.poi_names}
    card = write_combine_datacard(a, likelihood, out / "combine")
    xml = write_histfactory_xml(a, likelihood, out / "histfactory")
    result = {"sigma": ours, "sigma_pyhf": theirs, "workspace": str(workspace), "datacard": str(card),
              "histfactory": str(xml / "combination.xml")}
    (out / "results.json").write_text(json.dumps(result, indent=2))
    print("| POI | σ (our profile fit) | σ (pyhf on the exported workspace) |\n|---|---|---|")
    for poi in a.poi_names:
        print(f"| {poi} | {ours[poi]:.4f} | {theirs[poi]:.4f} |")
    print(f"[analysis-example] workspace {workspace}, datacard {card}, HistFactory XML {xml}")
    return result


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--outdir", default="outputs/analysis_example")
    p.add_argument("--tiny", action="store_true")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    main(args.outdir, args.tiny, args.seed)
