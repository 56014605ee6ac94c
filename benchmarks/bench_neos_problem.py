"""Wall time of ONE update of our objectives on neos' own demo problem: the counterpart of ``bench_neos.py`` (which
runs neos itself, in its own virtual environment), so that the two are compared on the same problem.

The problem of neos' ``demo.ipynb``: four 2-D Gaussian blobs (signal at (−1, 1), nominal background at (1, −1),
background up at (2.5, 2), down at (−2.5, −1.5), unit covariance), ``--batch`` points of EACH per update; an MLP
2 → W → W → B with ReLU (neos: a sigmoid output histogrammed by a bKDE on B bins; here: our softmax over B bins at
τ = 0.1, :class:`~lumin_inferno.models.SoftmaxTemperatureTail`'s construction); yields 20 (signal) and 100
(background) × the soft templates; one normalisation POI and one histosys nuisance (the up/down blobs' templates,
code4p, N(0, 1) constraint). One update = forward of the four batches, the statistics core's objective
(``variance``: σ²(s) from the Fisher information; ``discovery``: 1/Z₀²; ``cls_limit``: the expected CLs upper limit,
both with their fits and implicit gradients), backward, one Adam step — no LUMIN in the loop, as neos has no training
framework around its update either. float32 network, float64 likelihood (neos' demo: float64 throughout).

    .venv/bin/python benchmarks/bench_neos_problem.py [--widths 100 1024] [--batch 2000] [--bins 4] [--repeats 7]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from torch import nn

from lumin_inferno.statistics import Parameter, ShapeSystematic, TemplateModel, fisher_information
from lumin_inferno.statistics.objectives import model_objective

OBJECTIVES = ("variance", "discovery", "cls_limit")
MEANS = {"sig": (-1.0, 1.0), "bkg_nominal": (1.0, -1.0), "bkg_up": (2.5, 2.0), "bkg_down": (-2.5, -1.5)}


def _net(width: int, bins: int) -> nn.Module:
    return nn.Sequential(nn.Linear(2, width), nn.ReLU(), nn.Linear(width, width), nn.ReLU(), nn.Linear(width, bins))


def _update(net: nn.Module, opt: torch.optim.Optimizer, batch: dict, objective: str) -> None:
    x = torch.cat(list(batch.values()))
    probs = torch.softmax(net(x) / 0.1, dim=1).double()
    parts = probs.split([len(v) for v in batch.values()])
    t = {k: v.mean(0) for k, v in zip(batch, parts)}  # soft templates (fractions per bin)
    model = TemplateModel(
        ["signal", "background"], torch.stack([t["sig"], t["bkg_nominal"]]), {"signal": "s", "background": 100.0},
        [Parameter("s", 20.0, bounds=(0.0, None)), Parameter("bkg_unc", 0.0, constraint=1.0)], poi="s",
        shape_systematics=[ShapeSystematic("bkg_unc", "background", t["bkg_up"], t["bkg_down"])],
    )
    info = fisher_information(model) if objective == "variance" else None
    loss = model_objective(model, info, [model.poi_index], objective)
    opt.zero_grad()
    loss.backward()
    opt.step()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--widths", type=int, nargs="+", default=[100, 1024])
    p.add_argument("--batch", type=int, default=2000, help="points of EACH of the four samples per update")
    p.add_argument("--bins", type=int, default=4)
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--warmup", type=int, default=2)
    a = p.parse_args()
    rng = np.random.default_rng(0)
    print(f"torch={torch.__version__} threads={torch.get_num_threads()}; neos demo problem, 4 samples x batch "
          f"{a.batch} = {4 * a.batch} points/update, {a.bins} bins, 1 POI + 1 histosys")
    print("| objective | network | update (ms), median [min, max] |")
    print("|---|---|---|")
    for width in a.widths:
        for objective in OBJECTIVES:
            torch.manual_seed(0)
            net = _net(width, a.bins)
            opt = torch.optim.Adam(net.parameters(), lr=1e-3)
            times = []
            for i in range(a.warmup + a.repeats):
                batch = {k: torch.as_tensor(rng.normal(m, 1.0, size=(a.batch, 2)), dtype=torch.float32)
                         for k, m in MEANS.items()}
                t0 = time.perf_counter()
                _update(net, opt, batch, objective)
                if i >= a.warmup:
                    times.append(1e3 * (time.perf_counter() - t0))
            print(f"| {objective} | 2-{width}-{width}-{a.bins} | {np.median(times):.1f} [{min(times):.1f}, "
                  f"{max(times):.1f}] |", flush=True)


if __name__ == "__main__":
    main()
