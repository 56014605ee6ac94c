"""The coverage runner: toys of a summary on an evaluation sample, chunks on disk, resume, errors, Dask."""

import numpy as np
import pytest

from lumin_inferno.data.analysis_toy import small_toy
from lumin_inferno.evaluation.analysis import event_bins
from lumin_inferno.evaluation.coverage import CoverageSetting, coverage_summary, format_coverage, run_coverage
from lumin_inferno.exceptions import ConfigurationError, EmptyProcessError


def _events(n_per_process=3000, n_bins=5):
    """The small toy's events, binned by fixed quantile edges of a simple score (no network needed)."""
    toy = small_toy()
    analysis = toy.analysis(n_bins, kind="inputs")
    df, shifted, weights = toy.sample(n_per_process, seed=2)
    feats = list(toy.features)
    score = lambda x: x[:, 0] + x[:, 1] - 0.5 * x[:, 2]  # noqa: E731
    edges = np.quantile(score(df[feats].to_numpy()), np.linspace(0, 1, n_bins + 1)[1:-1])
    fn = lambda x: np.digitize(score(np.asarray(x)), edges)  # noqa: E731
    ev = event_bins(analysis, fn, df[feats].to_numpy(), df["target"].to_numpy(), df["weight"].to_numpy(),
                    shifted_inputs={k: (u[feats].to_numpy(), d[feats].to_numpy()) for k, (u, d) in shifted.items()},
                    shifted_weights=weights)
    return analysis, ev


SETTINGS = [CoverageSetting("all MC", None, True), CoverageSetting("small MC, no MC stat", 300, False),
            CoverageSetting("small MC, MC stat", 300, True)]


def test_run_coverage_chunks_resume_and_same_numbers(tmp_path):
    analysis, ev = _events()
    toys = run_coverage(analysis, ev, SETTINGS, 12, tmp_path, seed=3, chunk_size=5, progress=False)
    assert set(toys) == {s.name for s in SETTINGS}
    for arr in toys.values():
        assert len(arr["q_mu"]) == 12 and not arr["failed"].any()
        assert np.isfinite(arr["pull_mu"]).all()
    # every setting fits the same pseudo-data: a paired comparison
    np.testing.assert_array_equal(toys["all MC"]["n_observed"], toys["small MC, no MC stat"]["n_observed"])
    chunks = sorted((tmp_path / "toys").rglob("chunk_*.npz"))
    assert len(chunks) == 9  # 3 settings × chunks of 5, 5, 2
    # the small-MC fits differ from the truth's: their templates are fresh draws of 300 events per process
    assert not np.allclose(toys["all MC"]["best_mu"], toys["small MC, MC stat"]["best_mu"])
    chunks[4].unlink()  # an interrupted run: one chunk missing
    again = run_coverage(analysis, ev, SETTINGS, 12, tmp_path, seed=3, chunk_size=5, progress=False)
    for name in toys:
        for k in ("best_mu", "sigma_mu", "q_mu"):
            np.testing.assert_array_equal(toys[name][k], again[name][k])
    with pytest.raises(ConfigurationError, match="toys of another"):
        run_coverage(analysis, ev, SETTINGS, 12, tmp_path, seed=4, chunk_size=5, progress=False)
    (tmp_path / "toys" / "manifest.json").unlink()  # chunks nobody can vouch for are not reused
    with pytest.raises(ConfigurationError, match="no manifest"):
        run_coverage(analysis, ev, SETTINGS, 12, tmp_path, seed=3, chunk_size=5, progress=False)
    summary = coverage_summary(analysis, toys)
    table = format_coverage(summary)
    assert "small MC, MC stat" in table and "coverage 68 %" in table


def test_run_coverage_asks_for_more_mc_than_the_sample_has(tmp_path):
    analysis, ev = _events(n_per_process=200)
    with pytest.raises(EmptyProcessError, match="process 'sig'"):
        run_coverage(analysis, ev, [CoverageSetting("tiny", 500, True)], 4, tmp_path, progress=False)
    with pytest.raises(ConfigurationError, match="mc_events"):
        CoverageSetting("bad", 0)


def test_truth_templates_cover_nominally(tmp_path):
    # fit templates equal to the truth: only the asymptotic approximation is tested, the coverage must be nominal
    analysis, ev = _events()
    toys = run_coverage(analysis, ev, SETTINGS[:1], 300, tmp_path, seed=1, chunk_size=150, progress=False)
    s = coverage_summary(analysis, toys)["all MC"]
    assert s["n_failed"] == 0
    for level, target in (("68%", 0.6827), ("95%", 0.95)):
        frac = s["pois"]["mu"]["coverage"][level]["fraction"]
        assert abs(frac - target) < 3 * np.sqrt(target * (1 - target) / 300), (level, frac)
    assert abs(s["pois"]["mu"]["pull_std"] - 1) < 0.12


def test_dask_chunks_equal_serial_chunks(tmp_path):
    from lumin_inferno.fanout import connect

    analysis, ev = _events()
    settings = [SETTINGS[0], SETTINGS[2]]
    serial = run_coverage(analysis, ev, settings, 6, tmp_path / "serial", seed=5, chunk_size=3, progress=False)
    client = connect(n_workers=2)
    try:
        spread = run_coverage(analysis, ev, settings, 6, tmp_path / "dask", seed=5, chunk_size=3, client=client,
                              progress=False)
    finally:
        cluster = client.cluster
        client.close()
        cluster.close()
    for name in serial:
        for k in ("best_mu", "sigma_mu", "q_mu"):
            np.testing.assert_allclose(serial[name][k], spread[name][k], rtol=1e-9, atol=1e-9)
