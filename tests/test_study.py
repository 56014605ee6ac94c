"""The paper study end to end in a tiny configuration (seconds)."""

import csv
import json
import math
from pathlib import Path

import pytest

from lumin_inferno.cli import _parser, main, study_settings


def test_paper_study_tiny(tmp_path):
    out = tmp_path / "study"
    rc = main(["paper-study", "--outdir", str(out), "--benchmarks", "1", "2", "--n-models", "2", "--inferno-epochs",
               "2", "--ce-epochs", "1", "--n-train", "1500", "--n-test", "3000", "--n-folds", "3", "--inferno-bs", "500",
               "--quiet"])
    assert rc == 0
    results = json.loads((out / "results.json").read_text())
    settings = json.loads((out / "settings.json").read_text())
    assert settings["seed"] == 27 and settings["benchmarks"] == [1, 2] and settings["n_models"] == 2
    for k, paper_limit in (("1", 15.52), ("2", 15.65)):
        row = results["benchmarks"][k]
        for key in ("ce", "inferno"):
            assert len(row[key]["per_model"]) == 2
            for stat in ("median", "q16", "q84"):
                assert math.isfinite(row[key][stat]) and row[key][stat] > 0
            assert row[key]["q16"] <= row[key]["median"] <= row[key]["q84"]
        assert math.isfinite(row["inferno"]["ensemble"]) and row["inferno"]["ensemble"] > 0
        # the members' joint bins merged back into 10 bins (fitted on the training file), above the limit
        assert row["limit"] < row["inferno"]["merged"] < 2 * row["limit"]
        # the member of lowest validation hard σ, its test σ taken from the per-model list; empty test bins per model
        assert row["inferno"]["selected"] in row["inferno"]["per_model"]
        assert len(row["inferno"]["empty_bins"]) == 2 and all(0 <= e < 10 for e in row["inferno"]["empty_bins"])
        assert all(abs(sum(o) - 1) < 1e-9 for o in row["inferno"]["occupancy"])
        assert isinstance(row["warnings"], list)
        # the analytic limit is computed, and agrees with the paper's row; nothing binned beats it
        assert abs(row["limit"] / paper_limit - 1) < 0.01 and row["analytic"] == paper_limit
        assert row["inferno"]["q16"] > row["limit"] and row["ce"]["q16"] > row["limit"]
        assert math.isclose(row["inferno_to_limit_pct"], 100 * (row["inferno"]["median"] / row["limit"] - 1))
    # cross-benchmark matrix: every trained statistic on every benchmark; floating more nuisances never helps
    cross = results["cross_benchmark"]
    assert set(cross) == {"cross-entropy", "INFERNO 1", "INFERNO 2"}
    for name, row in cross.items():
        assert set(row) == {"1", "2"}
        assert row["2"]["median"] >= row["1"]["median"] * (1 - 1e-6)
    md = (out / "results.md").read_text()
    assert md.startswith("| benchmark |") and "\n| 2 |" in md and "| INFERNO 1 |" in md
    assert "**Training report**" in md
    rows = list(csv.DictReader((out / "results.csv").open()))
    assert [r["benchmark"] for r in rows] == ["1", "2"] and float(rows[1]["limit"]) > 0
    assert len(list(csv.DictReader((out / "cross_benchmark.csv").open()))) == 3
    for name in ("training_curves_inferno", "training_curves_hard_sigma", "training_curves_ce", "templates_inferno_2",
                 "templates_ce_2",
                 "profile_1", "profile_2", "sigma_summary"):
        png = out / "plots" / f"{name}.png"
        assert png.stat().st_size > 5_000 and png.read_bytes()[:4] == b"\x89PNG"


def test_same_seed_same_table(tmp_path):
    """Two runs of the same command with the same seed print the same table, to the last digit (on one machine,
    torch version and thread count: docs/training.md)."""
    tables = []
    for run in ("a", "b"):
        out = tmp_path / run
        assert main(["paper-study", "--outdir", str(out), "--benchmarks", "2", "--n-models", "1", "--inferno-epochs",
                     "2", "--ce-epochs", "1", "--n-train", "1000", "--n-test", "2000", "--n-folds", "2",
                     "--inferno-bs", "500", "--quiet"]) == 0
        tables.append((out / "results.md").read_text())
        results = json.loads((out / "results.json").read_text())
        results.pop("runtime_s")
        results["settings"].pop("outdir")
        tables.append(json.dumps(results, sort_keys=True))
    assert tables[0] == tables[2] and tables[1] == tables[3]


def test_study_options_reach_the_settings():
    args = _parser().parse_args(["paper-study", "--full", "--anneal-from", "1.0", "--temperature", "0.05", "--width", "200",
                                 "--depth", "3", "--n-bins", "12", "--lr-schedule", "onecycle"])
    s = study_settings(args)
    assert (s.temperature_start, s.temperature, s.width, s.depth, s.n_bins) == (1.0, 0.05, 200, 3, 12)
    assert s.inferno_lr_schedule == "onecycle" and s.n_train_per_class == 100_000 and s.inferno_epochs == 80
    assert s.select_on == "hard_sigma" and s.patience is None
    assert study_settings(_parser().parse_args(["paper-study", "--patience", "0"])).patience is None
    s = study_settings(_parser().parse_args(["paper-study", "--select-on", "loss", "--patience", "5"]))
    assert s.select_on == "loss" and s.patience == 5
    default = study_settings(_parser().parse_args(["paper-study"]))
    assert default.temperature_start == 1.0 and default.temperature == 0.1 and default.n_train_per_class == 50_000
    assert study_settings(_parser().parse_args(["paper-study", "--constant-temperature"])).temperature_start is None
    assert not default.reseed_empty_bins
    assert study_settings(_parser().parse_args(["paper-study", "--reseed-empty-bins"])).reseed_empty_bins


@pytest.mark.parametrize("argv", [["--benchmarks", "7"], ["--temperature", "0"], ["--n-bins", "1"], ["--n-models", "0"],
                                  ["--inferno-bs", "0"], ["--n-train", "200"],
                                  ["--patience", "-1"], ["--n-folds", "1"], ["--benchmarks", "2", "2"]])
def test_bad_arguments_are_refused_before_any_work(argv, tmp_path):
    out = tmp_path / "never"
    with pytest.raises(SystemExit):
        main(["paper-study", "--outdir", str(out)] + argv)
    assert not out.exists()  # refused before the fold files were written


def test_members_train_with_one_thread_wherever_they_run(paper_foldfiles):
    # serial and --workers runs give the same table only with the same torch thread count (docs/scale_out.md): the
    # count travels in each member's task (set by the member's own process) and in its fingerprint
    from lumin.nn.data.fold_yielder import FoldYielder

    from lumin_inferno.studies.common import MEMBER_THREADS, ensemble_tasks

    tasks = ensemble_tasks(FoldYielder(str(paper_foldfiles[0])), None, 2, 100, 1, Path("unused"), fingerprint="f")
    assert MEMBER_THREADS == 1
    assert [(t.model_id, t.torch_threads, t.fingerprint) for t in tasks] == [(0, 1, "f|threads=1"), (1, 1, "f|threads=1")]
