"""What the plots draw, read back from the figures (not their file sizes): stacked templates, pulls, densities."""

import matplotlib.pyplot as plt
import numpy as np
import pytest
import torch
from matplotlib.patches import StepPatch

from lumin_inferno.evaluation.independence import plot_output_vs_nuisance
from lumin_inferno.evaluation.plots import plot_pulls, plot_templates
from lumin_inferno.statistics import Parameter, ShapeSystematic, TemplateModel

D = torch.float64


@pytest.fixture
def drawn(monkeypatch):
    """The figures the plot functions close after saving, kept for inspection."""
    figures = []
    close = plt.close

    def keep(fig=None):
        figures.append(fig)
        close(fig)

    monkeypatch.setattr(plt, "close", keep)
    return figures


def _steps(ax):
    return [p for p in ax.patches if isinstance(p, StepPatch)]


def test_templates_are_stacked_counts_with_the_shifts_as_lines(tmp_path, drawn):
    sig = torch.tensor([0.1, 0.2, 0.7], dtype=D)
    bkg = torch.tensor([0.6, 0.3, 0.1], dtype=D)
    up, down = torch.tensor([0.5, 0.3, 0.2], dtype=D), torch.tensor([0.7, 0.3, 0.0], dtype=D)
    m = TemplateModel(["signal", "background"], torch.stack([sig, bkg]), {"signal": "s", "background": 1000.0},
                      [Parameter("s", 50.0), Parameter("r", 0.0, constraint=1.0)], poi="s",
                      shape_systematics=[ShapeSystematic("r", "background", up, down)])
    path = plot_templates(m, tmp_path / "t.png")
    assert path.read_bytes()[:4] == b"\x89PNG" and [p.name for p in tmp_path.iterdir()] == ["t.png"]
    ax = drawn[-1].axes[0]
    order = np.argsort((50 * sig / (50 * sig + 1000 * bkg)).numpy())  # bins by signal purity
    steps = _steps(ax)
    tops = sorted((p.get_data().values for p in steps[:2]), key=lambda v: v.sum())
    assert np.allclose(tops[0], 1000 * bkg.numpy()[order])  # background at the bottom of the stack
    assert np.allclose(tops[1], (50 * sig + 1000 * bkg).numpy()[order])  # signal stacked on it
    lines = [p.get_data().values for p in steps[2:]]
    assert len(lines) == 2 and np.allclose(lines[0], 1000 * up.numpy()[order])
    assert np.allclose(lines[1], 1000 * down.numpy()[order])


def test_pulls_are_unit_area_with_mean_and_width_in_the_legend(tmp_path, drawn):
    pulls = np.random.default_rng(0).normal(0.3, 1.2, 2000)
    plot_pulls({"fit": pulls}, tmp_path / "p.png", poi="mu", n_bins=40)
    ax = drawn[-1].axes[0]
    (step,) = _steps(ax)
    values, edges = step.get_data().values, step.get_data().edges
    inside = np.clip(pulls, -4, 4)
    assert np.sum(values * np.diff(edges)) == pytest.approx(1.0)
    assert np.allclose(values, np.histogram(inside, edges)[0] / (len(inside) * np.diff(edges)))
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert any(f"mean {pulls.mean():+.2f}, width {pulls.std(ddof=1):.2f} (2000 toys)" in t for t in legend)


def test_output_vs_nuisance_draws_the_densities(tmp_path, drawn):
    rng = np.random.default_rng(1)
    outputs = {"model": {-1.0: rng.uniform(0, 0.6, 500), 0.0: rng.uniform(0.2, 1.0, 500)}}
    plot_output_vs_nuisance(outputs, tmp_path / "o.png", bins=10)
    ax = drawn[-1].axes[0]
    edges = np.linspace(0, 1, 11)
    got = [p.get_data().values for p in _steps(ax)]
    want = [np.histogram(outputs["model"][z], edges, density=True)[0] for z in (-1.0, 0.0)]
    assert len(got) == 2 and all(np.allclose(g, w) for g, w in zip(got, want))
