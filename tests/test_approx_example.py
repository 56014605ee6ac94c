"""examples/approx_inferno_paper.py in its tiny configuration, so it cannot rot."""

import importlib.util
import math
from pathlib import Path

import pytest

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "approx_inferno_paper.py"


def test_approx_inferno_paper_example_tiny(tmp_path, capsys):
    spec = importlib.util.spec_from_file_location("approx_inferno_paper", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    table = module.main(str(tmp_path / "example"), tiny=True, n_models=1)
    sigmas = table[2]["approx"]["per_model"]
    assert len(sigmas) == 1 and all(math.isfinite(s) and math.sqrt(50) < s < 3 * math.sqrt(1050) for s in sigmas)
    # reference: this configuration and seed on the project's 2-core machine (torch 2.13.0 CPU) gives 21.375 in
    # repeated runs; thread counts or another BLAS move the last digits, a regression of the training moves more
    assert sigmas[0] == pytest.approx(21.375, rel=0.05)
    assert (tmp_path / "example" / "results.md").exists()
    assert "approximate INFERNO" in capsys.readouterr().out
