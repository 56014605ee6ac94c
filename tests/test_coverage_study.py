"""The coverage study end to end in a tiny configuration (train, toys, resume), and its argument checks."""

import json

import numpy as np
import pytest

from lumin_inferno.cli import main

TINY = ["--n-train", "2000", "--n-test", "5000", "--inferno-epochs", "1", "--inferno-bs", "1000", "--n-bins", "4",
        "--n-toys", "6", "--chunk-size", "3", "--mc-events", "500", "--quiet"]


def test_coverage_study_tiny_and_resume(tmp_path):
    out = tmp_path / "cov"
    assert main(["coverage", "--outdir", str(out)] + TINY) == 0
    results = json.loads((out / "results.json").read_text())
    cov = results["coverage"]
    assert list(cov) == ["all MC, MC stat", "all MC, no MC stat", "500 MC events, MC stat", "500 MC events, no MC stat"]
    for entry in cov.values():
        assert entry["n_toys"] == 6 and entry["n_failed"] == 0
        row = entry["pois"]["mu"]
        assert 0 <= row["coverage"]["68%"]["fraction"] <= row["coverage"]["95%"]["fraction"] <= 1
        assert row["asimov_sigma"] > 0 and row["rms_best"] > 0
    for name in ("coverage", "pulls_mu"):
        assert (out / "plots" / f"{name}.png").read_bytes()[:4] == b"\x89PNG"
    assert "coverage 68 %" in (out / "results.md").read_text()
    # an interrupted rerun: a chunk of toys and the completion marker gone; the model and the other chunks are reused
    chunk = sorted((out / "toys").rglob("chunk_*.npz"))[-1]
    before = dict(np.load(chunk))
    chunk.unlink()
    (out / "results.json").unlink()
    assert main(["coverage", "--outdir", str(out)] + TINY) == 0
    after = np.load(chunk)
    np.testing.assert_array_equal(before["q_mu"], after["q_mu"])
    assert json.loads((out / "results.json").read_text())["coverage"] == cov


@pytest.mark.parametrize("argv", [["--n-toys", "0"], ["--mc-events", "20000"], ["--inferno-bs", "100000"],
                                  ["--toy", "nope"], ["--method", "nope"]])
def test_bad_arguments_are_refused_before_any_work(argv, tmp_path):
    out = tmp_path / "never"
    with pytest.raises(SystemExit):
        main(["coverage", "--outdir", str(out)] + argv)
    assert not out.exists()
