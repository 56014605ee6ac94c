"""Cost of a training step on the searches' objectives (discovery significance, expected CLs limit) against the
Fisher objectives and a cross-entropy step, side by side on the same batch.

The synthetic 4-process analysis of ``bench_analysis_step.py`` (signal + three backgrounds, 8 features, a free
background normalisation, normalisations, MC statistics) with ``K_shape`` shifted-input systematics; every step is
LUMIN's ``Model._fit_batch`` with ``ApproxInfernoCallback`` and the objective named in the column. A search objective
adds fits of the batch's likelihood to the step (one conditional fit for Z₀, 3–5 for the limit; Newton's method with
the exact Hessian), while its network work is the same as the Fisher objectives'. Quote the ratios.

    .venv/bin/python benchmarks/bench_search_step.py [--batches 2000] [--k-shape 1 5] [--repeats 7]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from lumin.nn.data.fold_yielder import FoldYielder
from lumin.nn.losses.basic_weighted import WeightedCCE
from lumin.nn.models.model import Model

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_analysis_step import _analysis, _builders, _foldfile, _step, _time  # noqa: E402

from lumin_inferno import ApproxInfernoCallback, Objective  # noqa: E402

OBJECTIVES = ("variance", "generalised_variance", "discovery", "cls_limit")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--batches", type=int, nargs="+", default=[2000])
    p.add_argument("--k-shape", type=int, nargs="+", default=[1, 5])
    p.add_argument("--repeats", type=int, default=7)
    a = p.parse_args()
    torch.manual_seed(0)
    print(f"torch={torch.__version__} threads={torch.get_num_threads()}")
    print("| batch | K_shape | CE step (ms) | " + " | ".join(f"{o} (ms)" for o in OBJECTIVES) + " | "
          + " | ".join(f"{o} / CE" for o in OBJECTIVES) + " |")
    print("|---|---|---|" + "---|" * (2 * len(OBJECTIVES)))
    with tempfile.TemporaryDirectory() as tmp:
        for bs in a.batches:
            for ks in a.k_shape:
                base = _analysis(ks, 0)
                fy = FoldYielder(_foldfile(Path(tmp) / f"{bs}_{ks}", base, bs))
                ce_b, inf_b = _builders()
                torch.manual_seed(0)
                steps = {"ce": _step(Model(ce_b), None, fy, bs, WeightedCCE())}
                init = Model(inf_b).model.state_dict()
                for o in OBJECTIVES:
                    m = Model(inf_b)
                    m.model.load_state_dict(init)  # the same network for every objective
                    steps[o] = _step(m, ApproxInfernoCallback(replace(base, objective=Objective(o, pois=("mu",)))), fy, bs)
                for s in steps.values():
                    _time(s, 2, "cpu")  # warm-up
                t = {k: [] for k in steps}
                for _ in range(a.repeats):  # interleaved, so machine noise hits all alike
                    for k, s in steps.items():
                        t[k].append(_time(s, 1, "cpu"))
                t = {k: 1e3 * float(np.median(v)) for k, v in t.items()}
                print(f"| {bs} | {ks} | {t['ce']:.1f} | " + " | ".join(f"{t[o]:.1f}" for o in OBJECTIVES) + " | "
                      + " | ".join(f"{t[o] / t['ce']:.1f}" for o in OBJECTIVES) + " |", flush=True)


if __name__ == "__main__":
    main()
