"""Train one search objective again with a changed setting on the data of an ``examples/search_objectives_paper.py``
run, and print every model's three figures of merit (σ(s), Z₀, expected CLs limit on s) on its test file: the
measurements behind "training on the limit" in docs/search_objectives.md.

    .venv/bin/python benchmarks/tune_search_objective.py OUTDIR cls_limit --epochs 30
    .venv/bin/python benchmarks/tune_search_objective.py OUTDIR cls_limit --warm-start variance --epochs 15
    .venv/bin/python benchmarks/tune_search_objective.py OUTDIR cls_limit --constant-temperature

``--warm-start KIND``: member *i* starts from the weights member *i* of the run's ``KIND`` ensemble was saved with
(the same validation fold), then trains on the objective with the usual schedule. Members are seeded as in the
example (seed + 1000 × (objective index + 1) + i); the run's own ensembles are not touched.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import sys
import tempfile
import time
from dataclasses import replace
from functools import partial
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "examples"))
from search_objectives_paper import FIGURES, OBJECTIVES, figures  # noqa: E402
from approx_inferno_paper import _builder  # noqa: E402


def main() -> None:
    from lumin_inferno.data.foldfiles import open_foldfile
    from lumin.nn.models.model_builder import ModelBuilder

    from lumin_inferno import ApproxInfernoCallback, Objective, TemperatureSchedule
    from lumin_inferno.data import paper_benchmark
    from lumin_inferno.fanout import train_member_tasks
    from lumin_inferno.studies.common import ensemble_tasks, load_models

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("outdir", help="output directory of examples/search_objectives_paper.py (its data and weights)")
    p.add_argument("objective", choices=OBJECTIVES)
    p.add_argument("--epochs", type=int, default=15)
    p.add_argument("--n-models", type=int, default=2)
    p.add_argument("--warm-start", choices=OBJECTIVES, default=None)
    p.add_argument("--constant-temperature", action="store_true", help="τ = 0.1 throughout (default: 1 → 0.1)")
    p.add_argument("--seed", type=int, default=27)
    args = p.parse_args()
    out = Path(args.outdir)
    fy = open_foldfile(out / "data" / "train_systematics.hdf5")
    test = open_foldfile(out / "data" / "test.hdf5").get_fold(0)
    n_bins, bs = 10, 2000
    analysis = replace(paper_benchmark(2).analysis(n_bins=n_bins), objective=Objective(args.objective))
    builder = _builder(fy, n_bins)
    cbs = [partial(ApproxInfernoCallback, analysis)]
    if not args.constant_temperature:
        cbs.append(partial(TemperatureSchedule, start=1.0, end=0.1))
    seed = args.seed + 1000 * (OBJECTIVES.index(args.objective) + 1)
    t0 = time.time()
    with tempfile.TemporaryDirectory() as tmp:
        tasks = ensemble_tasks(fy, builder, args.n_models, bs, args.epochs, Path(tmp) / "w", cbs, seed=seed)
        if args.warm_start is not None:
            for i, t in enumerate(tasks):
                start = out / "weights" / args.warm_start / f"model_id_{i}" / f"train_{i}.h5"
                if not start.is_file():
                    raise SystemExit(f"no weights to start from: {start}")
                with contextlib.redirect_stdout(io.StringIO()):
                    tasks[i] = replace(t, builder=ModelBuilder.from_model_builder(builder, pretrain_file=str(start)))
        done = train_member_tasks(tasks, progress=False)
        models = load_models([d[0] for d in done], builder)
    seconds = time.time() - t0
    per_model = [figures(m, test, n_bins) for m in models]
    change = {"epochs": args.epochs, "warm_start": args.warm_start, "constant_temperature": args.constant_temperature}
    cells = [f"{np.median([f[k] for f in per_model]):.2f} ({', '.join(f'{f[k]:.2f}' for f in per_model)})"
             for k in FIGURES]
    print(f"| {args.objective} | {json.dumps(change)} | " + " | ".join(cells) + f" | {seconds:.0f} s |")


if __name__ == "__main__":
    main()
