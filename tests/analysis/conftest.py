"""A 2-POI, 4-process, 2-channel analysis with every kind of systematic and MC statistics, and its templates."""

import pytest
import torch

from lumin_inferno.analysis import (
    Analysis, FixedChannel, InputShift, NormFactor, Objective, Process, SummaryTemplates, Systematic,
)

D = torch.float64
N_BINS = 5


def make_analysis(norm_code: str = "code4", **kwargs) -> Analysis:
    return Analysis(
        processes=(
            Process("ggH", 200.0, labels=(0,), role="signal"),
            Process("qqH", 120.0, labels=(1,), role="signal"),
            Process("ttbar", 600.0, labels=(2,)),
            Process("ztt", 900.0, labels=(3,)),
            Process("qcd", None, mc_stat=False),
        ),
        factors=(
            NormFactor("mu_ggH", ("ggH",)),
            NormFactor("mu_qqH", ("qqH",)),
            NormFactor("k_tt", ("ttbar",), poi=False),
        ),
        systematics=(
            Systematic("jes", "inputs", ("ggH", "qqH", "ttbar", "ztt")),
            Systematic("tes", "transform", ("ztt",), shifts=(InputShift("tau_pt", scale=0.03),)),
            Systematic("pdf", "weights", ("ggH", "qqH")),
            Systematic("lumi_13TeV", "norm", ("ggH", "qqH", "ztt"), kappa_up=1.025, interpolation=norm_code),
            Systematic("xs_tt", "norm", ("ttbar", "qcd"), kappa_up=1.08, kappa_down=0.95, interpolation=norm_code),
        ),
        channels=(
            FixedChannel(
                "ttbar_cr",
                yields={"ttbar": (400.0, 250.0, 120.0), "ztt": (20.0, 15.0, 5.0), "qcd": (30.0, 10.0, 4.0)},
                variations={"jes": {"ttbar": ((410.0, 260.0, 126.0), (392.0, 241.0, 115.0))}},
                mc_uncertainty={"ttbar": (12.0, 9.0, 6.0), "ztt": (3.0, 2.0, 1.5)},
            ),
        ),
        n_bins=N_BINS,
        objective=Objective("generalised_variance"),
        **kwargs,
    )


def make_templates(analysis: Analysis, seed: int = 1, requires_grad: bool = False) -> SummaryTemplates:
    g = torch.Generator().manual_seed(seed)
    nominal, shifted, var = {}, {}, {}
    for k, p in enumerate(analysis.summary_processes):
        t = 0.3 * torch.rand(N_BINS, generator=g, dtype=D) + 0.1
        t[(N_BINS - 1 - k) % N_BINS] += 1.5  # each process peaks in its own bin
        t = t / t.sum()
        nominal[p.name] = t.requires_grad_(requires_grad) if requires_grad else t
        var[p.name] = (t.detach() * 0.02 + 1e-4) ** 2
    for s in analysis.shape_systematics():
        for p in s.processes:
            if p not in nominal:
                continue
            d = 0.05 * (torch.rand(N_BINS, generator=g, dtype=D) - 0.5)
            d = d - d.mean() if s.kind != "weights" else d
            shifted[(p, s.name)] = (nominal[p] + d, nominal[p] - 0.8 * d)
    return SummaryTemplates(nominal, shifted, var)


@pytest.fixture
def analysis():
    return make_analysis()
