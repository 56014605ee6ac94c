"""The ensemble and feature-selection examples, in their tiny configurations."""

import math
from pathlib import Path

from tests.test_examples import _load


def test_feature_selection_example(tmp_path, capsys):
    summary = _load("feature_selection_inferno").main(str(tmp_path / "fs"), tiny=True)
    table = summary["permutation_importance"]
    by = {row["feature"]: row for row in table}
    assert table[0]["feature"] in ("x0", "x1")  # a discriminating input first (x1: the background is 3× wider)
    # the noise input carries no information: its Δσ is not significant against its spread over shuffles, and small
    # against the leading feature's; the features the measurement relies on are selected
    assert "noise" not in summary["selected"] and {"x0", "x1"} <= set(summary["selected"])
    assert abs(by["noise"]["delta_sigma"]) < 0.5 * table[0]["delta_sigma"]
    assert summary["drop_column_importance"] is not None  # the features that do not help were retrained without
    assert Path(summary["plot"]).is_file() and (tmp_path / "fs" / "feature_importance.csv").is_file()
    assert set(summary["lumin"]["after_correlation_filter"]) == {"x0", "x1", "x2", "noise"}
    assert "noise rank" in capsys.readouterr().out


def test_inferno_ensemble_example(tmp_path):
    summary = _load("inferno_ensemble_paper").main(str(tmp_path / "ens"), tiny=True)
    sigmas = summary["sigma_s"]
    assert all(math.isfinite(v["profile"]) and math.sqrt(50) < v["profile"] < 100 for v in sigmas.values())
    assert summary["reload_max_abs_diff"] == 0.0  # weights, permutations and members restored exactly
    assert summary["onnx_max_abs_diff"] is not None and summary["onnx_max_abs_diff"] < 5e-6
    assert sorted(summary["permutations"][0]) == list(range(10))
