"""Toy fits per second: ``fit_toys`` (all toys of a model at once, vmap-batched Newton) against ``fit_toy`` (one
toy at a time: Newton, MIGRAD if needed) on the same toys, side by side in one run, for models of growing size.
Prints a Markdown table; the ratio is the figure to compare (this machine is shared and noisy).

    .venv/bin/python benchmarks/bench_toys.py [--n-toys 200] [--n-single 40]
"""

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n-toys", type=int, default=200, help="toys fitted by the batched path")
    p.add_argument("--n-single", type=int, default=40, help="of them, fitted one at a time too")
    args = p.parse_args()
    from lumin_inferno.statistics import fit_toy, fit_toys, sample_toys
    from tests.evaluation.test_coverage import _events
    from tests.statistics.test_toys import _norm_dominated, _pyhf_pair

    torch.set_num_threads(1)
    analysis, ev = _events(20_000, 10)
    models = {
        "3 bins, 3 parameters (shape + norm)": _norm_dominated(),
        "3 bins, 6 parameters (histosys, normsys, staterror)": _pyhf_pair()[0],
        "small toy, 10 bins, 15 parameters (MC stat)": ev.template_model(analysis),
    }
    print("| model | batched ms/toy | one at a time ms/toy | speed-up | max |Δq| |")
    print("|---|---|---|---|---|")
    for name, model in models.items():
        obs, aux = sample_toys(model, args.n_toys, generator=torch.Generator().manual_seed(1))
        fit_toys(model, obs[:5], aux[:5])  # warm-up (vmap tracing)
        t = time.perf_counter()
        batched = fit_toys(model, obs, aux)
        tb = (time.perf_counter() - t) / args.n_toys
        t = time.perf_counter()
        single = [fit_toy(model, obs[k], aux[k]) for k in range(args.n_single)]
        ts = (time.perf_counter() - t) / args.n_single
        dq = max(abs(a.q[model.poi] - b.q[model.poi]) for a, b in zip(batched, single))
        print(f"| {name} | {1e3 * tb:.1f} | {1e3 * ts:.1f} | {ts / tb:.1f}× | {dq:.1e} |")
    print(f"\n{args.n_toys} toys batched, the first {args.n_single} also one at a time; torch threads: 1; "
          f"torch {torch.__version__}, numpy {np.__version__}")


if __name__ == "__main__":
    main()
