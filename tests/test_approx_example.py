"""examples/approx_inferno_paper.py in its tiny configuration, so it cannot rot."""

import importlib.util
import math
from pathlib import Path

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "approx_inferno_paper.py"


def test_approx_inferno_paper_example_tiny(tmp_path, capsys):
    spec = importlib.util.spec_from_file_location("approx_inferno_paper", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    table = module.main(str(tmp_path / "example"), tiny=True, n_models=1)
    sigmas = table[2]["approx"]["per_model"]
    assert len(sigmas) == 1 and all(math.isfinite(s) and math.sqrt(50) < s < 3 * math.sqrt(1050) for s in sigmas)
    assert (tmp_path / "example" / "results.md").exists()
    assert "approximate INFERNO" in capsys.readouterr().out
