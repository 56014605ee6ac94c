"""Train INFERNO members for one paper benchmark with changed settings on an existing paper-study's fold files, and
print their σ(s) on its test file next to their validation hard σ: the measurements behind docs/training.md.

    .venv/bin/python benchmarks/tune_paper_benchmark.py OUTDIR BENCHMARK '{"inferno_bs": 8000, "inferno_lr": 0.003}'

Settings are :class:`~lumin_inferno.studies.paper.StudySettings` fields (e.g. ``"reseed_empty_bins": true``); models
are selected on the hard σ unless ``"select_on": "loss"``. Printed: benchmark | settings | median σ(s) | per member |
validation hard σ | epochs | best epoch | empty test bins | seconds; σ(s) is the Hessian width (√(H⁻¹)ₛₛ), seed 27
as in the study.
"""

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np

from lumin_inferno.data.paper import SIGNAL_YIELD
from lumin_inferno.evaluation.templates import argmax_bins, bin_occupancy
from lumin_inferno.statistics import expected_poi_uncertainty
from lumin_inferno.studies.common import load_models, predict, train_ensemble
from lumin_inferno.studies.paper import StudySettings, _evaluate, _model_builder, inferno_callbacks


def main() -> None:
    from lumin_inferno.data.foldfiles import open_foldfile

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("outdir")
    p.add_argument("benchmark", type=int)
    p.add_argument("settings", nargs="?", default="{}", help="JSON object of StudySettings overrides")
    args = p.parse_args()
    out, k, cfg = Path(args.outdir), args.benchmark, json.loads(args.settings)
    s = StudySettings(**{**json.loads((out / "settings.json").read_text()), **cfg})
    fy = open_foldfile(out / "data" / "train.hdf5")
    test = open_foldfile(out / "data" / "test.hdf5").get_fold(0)
    builder = _model_builder(s, fy, True)
    cbs, metrics = inferno_callbacks(s, k)  # hard-σ selection unless the settings say "select_on": "loss"
    t0 = time.time()
    with tempfile.TemporaryDirectory() as tmp:
        results, histories = train_ensemble(fy, builder, s.n_models, s.inferno_bs, s.inferno_epochs, Path(tmp) / "w",
                                            cbs, seed=s.seed, patience=s.patience,
                                            metric_partials=metrics)
        models = load_models(results, builder)
    seconds = time.time() - t0
    fns = [lambda x, m=m: argmax_bins(predict(m, x)) for m in models]
    test_sigma = [SIGNAL_YIELD * expected_poi_uncertainty(_evaluate(fn, test, s, k), method="hessian") for fn in fns]
    empty = [int((bin_occupancy(fn(test["inputs"]), s.n_bins) <= 0).sum()) for fn in fns]
    key = "hard_sigma" if metrics else "loss"
    val = [SIGNAL_YIELD * r["hard_sigma"] for r in results] if metrics else []
    best = [int(np.argmin(h[1][key] if metrics else h[0]["Validation"])) + 1 for h in histories]
    epochs = [len(h[0]["Validation"]) for h in histories]
    print(f"| {k} | {json.dumps(cfg)} | {np.median(test_sigma):.2f} | {', '.join(f'{v:.2f}' for v in test_sigma)} "
          f"| {', '.join(f'{v:.2f}' for v in val)} | {epochs} | {best} | {empty} | {seconds:.0f} |")


if __name__ == "__main__":
    main()
