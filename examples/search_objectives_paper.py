"""Train for what a search publishes: approximate INFERNO on the paper's benchmark 2 with each objective, every model
judged on all three figures of merit.

The fold files and the network are those of ``examples/approx_inferno_paper.py`` (nominal events plus their ±1σ
shifted copies). For each objective (``"variance"``: σ(μ); ``"discovery"``: 1/Z₀²; ``"cls_limit"``: the median
expected 95 % CLs upper limit on μ), an ensemble is trained with ``ApproxInfernoCallback`` through LUMIN's
``train_models`` (τ annealed 1 → 0.1). Every model is then evaluated on the independent test file with hard argmax bins
and the benchmark's nuisances, for three figures:

- σ(s) in events, from the profile likelihood;
- Z₀, the Asimov discovery significance;
- the expected CLs limit on s in events.

So a model trained for one figure is compared on all three, next to the training time of each ensemble.

    .venv/bin/python examples/search_objectives_paper.py            # ~10 min on 2 cores
    .venv/bin/python examples/search_objectives_paper.py --tiny     # seconds (what the test suite runs)
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import replace
from functools import partial
from pathlib import Path
from typing import Dict

from lumin.nn.data.fold_yielder import FoldYielder

sys.path.insert(0, str(Path(__file__).resolve().parent))
from approx_inferno_paper import _builder, write_approx_foldfiles  # noqa: E402

from lumin_inferno import ApproxInfernoCallback, Objective, TemperatureSchedule  # noqa: E402
from lumin_inferno.data import paper_benchmark
from lumin_inferno.data.paper import SIGNAL_YIELD  # noqa: E402
from lumin_inferno.evaluation import analysis_template_model, argmax_bins  # noqa: E402
from lumin_inferno.statistics import expected_poi_uncertainties  # noqa: E402
from lumin_inferno.io import atomic_write_text  # noqa: E402
from lumin_inferno.statistics import discovery_significance, expected_cls_upper_limit  # noqa: E402
from lumin_inferno.studies.common import load_models, seed_everything, summarise, train_ensemble  # noqa: E402

OBJECTIVES = ("variance", "discovery", "cls_limit")
FIGURES = ("sigma_s", "z0", "cls_limit_s")


def figures(model, test: dict, n_bins: int) -> Dict[str, float]:
    """σ(s) [events], Z₀ and the expected 95 % CLs limit on s [events] of one trained model on the test sample."""
    bm = paper_benchmark(2)
    tm = analysis_template_model(bm.analysis(n_bins, kind="transform"),
                                 lambda x: argmax_bins(model.predict(x, bs=50_000)), test["inputs"], test["targets"],
                                 test["weights"], transform=bm.transform())
    return {"sigma_s": SIGNAL_YIELD * expected_poi_uncertainties(tm)["mu"],
            "z0": float(discovery_significance(tm)),
            "cls_limit_s": SIGNAL_YIELD * float(expected_cls_upper_limit(tm))}


def main(outdir: str = "outputs/search_objectives", tiny: bool = False, n_models: int = 2, epochs: int = 15,
         seed: int = 27) -> dict:
    t0 = time.time()
    out = Path(outdir).resolve()
    out.mkdir(parents=True, exist_ok=True)
    n_train, n_test, n_folds, bs = (3000, 4000, 3, 500) if tiny else (20_000, 100_000, 5, 2000)
    epochs, n_bins = (2, 6) if tiny else (epochs, 10)
    seed_everything(seed)
    train_file, test_file = write_approx_foldfiles(out / "data", n_train, n_test, n_folds, seed)
    fy = FoldYielder(train_file)
    test = FoldYielder(test_file).get_fold(0)
    table: Dict[str, dict] = {}
    for i, kind in enumerate(OBJECTIVES):
        analysis = replace(paper_benchmark(2).analysis(n_bins=n_bins), objective=Objective(kind))
        builder = _builder(fy, n_bins)
        t_train = time.time()
        results, _ = train_ensemble(fy, builder, n_models, bs, epochs, out / "weights" / kind,
                                    [partial(ApproxInfernoCallback, analysis),
                                     partial(TemperatureSchedule, start=1.0, end=0.1)],
                                    seed=seed + 1000 * (i + 1),  # each objective's members independent
                                    fingerprint=json.dumps([kind, n_train, n_folds, bs, epochs, n_bins, n_models, seed]))
        seconds = time.time() - t_train
        per_model = [figures(m, test, n_bins) for m in load_models(results, builder)]
        table[kind] = {"per_model": per_model, "train_seconds": seconds,
                       **{f: summarise([p[f] for p in per_model]) for f in FIGURES}}
        print(f"[search-objectives] trained for {kind}: {n_models} models in {seconds:.0f}s", flush=True)
    lines = ["| trained for | σ(s) [events] ↓ | Z₀ ↑ | expected 95 % CLs limit on s [events] ↓ | training time |",
             "|---|---|---|---|---|"]
    for kind, row in table.items():
        cells = [f"{row[f]['median']:.2f} [{row[f]['q16']:.2f}, {row[f]['q84']:.2f}]" for f in FIGURES]
        lines.append(f"| {kind} | " + " | ".join(cells) + f" | {row['train_seconds']:.0f} s |")
    md = "\n".join(lines)
    atomic_write_text(out / "results.md", md + "\n")
    atomic_write_text(out / "results.json", json.dumps({"objectives": table, "runtime_s": time.time() - t0}, indent=2))
    print(md)
    return table


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--outdir", default="outputs/search_objectives")
    p.add_argument("--tiny", action="store_true")
    p.add_argument("--n-models", type=int, default=2)
    p.add_argument("--epochs", type=int, default=15)
    p.add_argument("--seed", type=int, default=27)
    a = p.parse_args()
    main(a.outdir, a.tiny, a.n_models, a.epochs, a.seed)
