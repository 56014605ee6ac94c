"""The paper study end to end in a tiny configuration (seconds)."""

import json
import math

from lumin_inferno.cli import main


def test_paper_study_tiny(tmp_path):
    out = tmp_path / "study"
    rc = main(["paper-study", "--outdir", str(out), "--benchmarks", "2", "--n-models", "1", "--inferno-epochs", "2",
               "--ce-epochs", "1", "--n-train", "1500", "--n-test", "3000", "--n-folds", "3", "--inferno-bs", "500", "--quiet"])
    assert rc == 0
    results = json.loads((out / "results.json").read_text())
    settings = json.loads((out / "settings.json").read_text())
    assert settings["seed"] == 27 and settings["benchmarks"] == [2]
    row = results["benchmarks"]["2"]
    for key in ("ce", "inferno"):
        assert len(row[key]["per_model"]) == 1
        for stat in ("median", "q16", "q84"):
            assert math.isfinite(row[key][stat]) and row[key][stat] > 0
    assert row["paper_inferno"] == 16.95 and row["analytic"] == 15.65
    md = (out / "results.md").read_text()
    assert md.startswith("| benchmark |") and "\n| 2 |" in md
