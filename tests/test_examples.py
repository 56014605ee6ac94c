"""Examples run in a tiny configuration, so they cannot rot."""

import importlib.util
import math
from pathlib import Path

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def _load(name):
    spec = importlib.util.spec_from_file_location(name, EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_train_inferno_paper_example(tmp_path, capsys):
    sigma = _load("train_inferno_paper").main(str(tmp_path / "example"), tiny=True)
    assert math.isfinite(sigma) and math.sqrt(50) < sigma < math.sqrt(1050) * 3
    assert "hard bins of 5 test events" in capsys.readouterr().out
