"""The analysis-scale study end to end in a tiny configuration, and its argument checks."""

import csv
import json
import math

import pytest

from lumin_inferno.cli import _parser, analysis_study_settings, main

POIS = ("mu_ggH", "mu_qqH")


def test_analysis_study_tiny(tmp_path):
    out = tmp_path / "study"
    rc = main(["analysis-study", "--outdir", str(out), "--methods", "approx_gv", "exact_gv", "--n-models", "2",
               "--inferno-epochs", "2", "--ce-epochs", "1", "--n-train", "1200", "--n-test", "3000", "--n-folds", "3",
               "--inferno-bs", "1000", "--n-bins", "6", "--ce-score-bins", "2", "--limit-events", "20000", "--quiet"])
    assert rc == 0
    results = json.loads((out / "results.json").read_text())
    assert results["settings"]["methods"] == ["approx_gv", "exact_gv"]
    limit, limit_stat = results["limit"]["systematics"], results["limit"]["stat_only"]
    methods = results["methods"]
    assert list(methods) == ["cross-entropy", "approx_gv", "exact_gv", "exact-density classifier"]
    for p in POIS:
        # fixing 22 nuisances can only shrink the optimum
        assert 0 < limit_stat["sigma"][p] < limit["sigma"][p]
    for name, row in methods.items():
        trained = name != "exact-density classifier"  # the Bayes-optimal classifier: one member, nothing trained
        assert row["n_bins"] == (6 if name in ("approx_gv", "exact_gv") else 10)
        assert len(row["per_model"]) == len(row["empty_bins"]) == (2 if trained else 1)
        for p in POIS:
            s, s0 = row["sigma"][p], row["sigma_stat"][p]
            assert s["q16"] <= s["median"] <= s["q84"] and (not trained or math.isfinite(s["ensemble"]))
            if trained and name != "cross-entropy":  # INFERNO: the members' joint bins merged into one summary
                assert s["merged"] > 0.95 * limit["sigma"][p]
            for m in row["per_model"]:
                # per model: profiling the nuisances never beats fixing them, and nothing binned beats the unbinned
                # optimum (up to its Monte Carlo error on a few thousand events)
                assert m["sigma"][p] >= m["sigma_stat"][p] * (1 - 1e-6)
                assert m["sigma_stat"][p] > 0.95 * limit_stat["sigma"][p]
            d = row["sigma_to_limit_pct"][p]
            assert math.isclose(d, 100 * (s["median"] / limit["sigma"][p] - 1))
            g = row["sigma_vs_ce_pct"][p]
            assert math.isclose(g, 100 * (s["median"] / methods["cross-entropy"]["sigma"][p]["median"] - 1))
            assert s0["median"] <= s["median"] * (1 + 1e-6)
        assert -1 <= row["correlation"]["median"] <= 1
    md = (out / "results.md").read_text()
    assert "**all systematics" in md and "**statistical only" in md and "| INFERNO exact, log det C | 6 |" in md
    rows = list(csv.DictReader((out / "results.csv").open()))
    assert len(rows) == 4 * 2 * 2 and {r["errors"] for r in rows} == {"all", "stat_only"}
    for name in ("training_curves_inferno", "training_curves_ce", "templates_cross_entropy", "templates_approx_gv",
                 "templates_exact_density_classifier",
                 "sigma_vs_limit", "poi_contours"):
        assert (out / "plots" / f"{name}.png").read_bytes()[:4] == b"\x89PNG"


@pytest.mark.parametrize("argv", [["--n-models", "0"], ["--methods", "nope"], ["--inferno-bs", "0"],
                                  ["--n-models", "6"], ["--n-train", "100"], ["--methods", "approx_gv", "approx_gv"]])
def test_bad_arguments_are_refused_before_any_work(argv, tmp_path, capsys):
    out = tmp_path / "never"
    with pytest.raises(SystemExit) as e:
        main(["analysis-study", "--outdir", str(out)] + argv)
    assert e.value.code == 2 and not out.exists()
    assert "error:" in capsys.readouterr().err


def test_full_settings():
    s = analysis_study_settings(_parser().parse_args(["analysis-study", "--full", "--n-models", "4"]))
    assert s.n_models == 4 and s.n_train_per_process == 50_000 and s.limit_splits == 4


def test_small_toy_one_poi_no_control_region(tmp_path):
    """The second generator through the same study: one POI, no control region, no correlation column."""
    out = tmp_path / "small"
    assert main(["analysis-study", "--toy", "small", "--outdir", str(out), "--methods", "approx_gv", "--n-models", "2",
                 "--inferno-epochs", "2", "--ce-epochs", "1", "--n-train", "1500", "--n-test", "3000", "--n-folds",
                 "3", "--inferno-bs", "1000", "--n-bins", "6", "--ce-score-bins", "2", "--limit-events", "20000",
                 "--quiet"]) == 0
    results = json.loads((out / "results.json").read_text())
    limit = results["limit"]["systematics"]
    assert list(limit["sigma"]) == ["mu"] and limit["correlation"] == 0.0
    row = results["methods"]["approx_gv"]
    assert row["sigma"]["mu"]["selected"] in [m["sigma"]["mu"] for m in row["per_model"]]
    assert row["selected_model"] == min(range(2), key=lambda i: row["validation_objective"][i])
    assert all(abs(sum(m["occupancy"]) - 1) < 1e-9 for m in row["per_model"])
    assert isinstance(results["warnings"], list)
    md = (out / "results.md").read_text()
    assert "| σ(mu) | ρ | mu − limit | mu vs CE |" in md and "**Training report**" in md
    assert not (out / "plots" / "poi_contours.png").exists()
    with pytest.raises(Exception, match="POIs"):
        analysis_study_settings(_parser().parse_args(["analysis-study", "--toy", "small", "--methods",
                                                      "approx_var_ggH"]))
