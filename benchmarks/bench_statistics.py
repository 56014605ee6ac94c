"""Timing of the statistics core on CPU: Hessian + inverse vs number of parameters (``nll_hessian``, the same by
``torch.func.hessian`` for comparison, and the Fisher-information route of training), and a 50-point profile scan.

    .venv/bin/python benchmarks/bench_statistics.py

Prints two Markdown tables. Each figure is the median of repeated calls in one process.
"""

from __future__ import annotations

import time

import numpy as np
import torch

from lumin_inferno.statistics import (
    Parameter,
    ShapeSystematic,
    TemplateModel,
    fisher_information,
    nll_hessian,
    poi_variance,
    profile_scan,
)


def model(n_nuisances: int, n_bins: int = 10) -> TemplateModel:
    g = torch.Generator().manual_seed(n_nuisances)
    sig = torch.softmax(torch.randn(n_bins, generator=g, dtype=torch.float64), 0)
    bkg = torch.softmax(torch.randn(n_bins, generator=g, dtype=torch.float64), 0)
    systs, params = [], [Parameter("s", 50.0)]
    for k in range(n_nuisances):
        d = 0.05 * bkg * torch.randn(n_bins, generator=g, dtype=torch.float64)
        systs.append(ShapeSystematic(f"a{k}", "bkg", bkg + d, bkg - d * 0.9))
        params.append(Parameter(f"a{k}", 0.0, constraint=1.0))
    return TemplateModel(["sig", "bkg"], torch.stack([sig, bkg]), {"sig": "s", "bkg": 1000.0}, params, "s", systs)


def median_ms(fn, repeats: int = 50) -> float:
    for _ in range(3):
        fn()
    t = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        t.append(time.perf_counter() - t0)
    return float(np.median(t) * 1e3)


def main() -> None:
    print(f"torch={torch.__version__} threads={torch.get_num_threads()}")
    print(
        "\n| parameters (1 POI + nuisances) | `nll_hessian` + POI variance (ms) | `torch.func.hessian` + POI variance "
        "(ms) | `fisher_information` + POI variance (ms) | torch.func / nll_hessian |"
    )
    print("|---|---|---|---|---|")
    for n in (1, 2, 5, 10, 20):
        m = model(n)
        obs = m.asimov()
        t_h = median_ms(lambda: poi_variance(nll_hessian(m)))
        t_func = median_ms(lambda: poi_variance(torch.func.hessian(lambda th: m.nll(th, obs))(m.nominal())))
        t_f = median_ms(lambda: poi_variance(fisher_information(m)))
        print(f"| 1 + {n} | {t_h:.2f} | {t_func:.2f} | {t_f:.2f} | {t_func / t_h:.1f} |")
    m = model(5)
    grid = np.linspace(20, 80, 50)
    t_scan = median_ms(lambda: profile_scan(m, grid), repeats=3)
    print("\n| profile scan | time (ms) |\n|---|---|")
    print(f"| 50 points, 1 POI + 5 nuisances, 10 bins (MIGRAD per point) | {t_scan:.0f} |")


if __name__ == "__main__":
    main()
