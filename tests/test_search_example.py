"""examples/search_objectives_paper.py in its tiny configuration: every objective trains, every model gets all three
figures of merit, and the figures are consistent with each other."""

import importlib.util
import json
import math
from pathlib import Path

from scipy.stats import norm

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "search_objectives_paper.py"


def test_search_objectives_example_tiny(tmp_path):
    spec = importlib.util.spec_from_file_location("search_objectives_paper", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    table = module.main(str(tmp_path / "so"), tiny=True, n_models=1)
    assert list(table) == ["variance", "discovery", "cls_limit"]
    for row in table.values():
        (m,) = row["per_model"]
        assert all(math.isfinite(v) and v > 0 for v in m.values())
        # s = 50 events: Z₀ ≈ s / σ(s) and the limit ≈ Φ⁻¹(0.975) σ(s), up to the non-Gaussian tails and σ's
        # dependence on μ (a wrong unit, 50× or 1/50, or a one-sided quantile would be far outside)
        assert 0.75 < m["z0"] / (50.0 / m["sigma_s"]) < 1.33
        assert 0.75 < m["cls_limit_s"] / (norm.ppf(0.975) * m["sigma_s"]) < 1.33
    saved = json.loads((tmp_path / "so" / "results.json").read_text())
    assert set(saved["objectives"]) == set(table)
