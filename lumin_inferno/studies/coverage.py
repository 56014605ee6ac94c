"""The coverage study (``lumin-inferno coverage``): do the intervals of an INFERNO-trained summary cover?

It trains one approximate-INFERNO model on a toy generator (the small one-POI problem by default; the fold files
and weights are reused when the command is rerun), bins the independent test file with it, and runs pseudo-experiments
(:mod:`lumin_inferno.evaluation.coverage`) for four fits: the whole test sample's templates (the truth) and
``mc_events`` events per process drawn afresh for each toy, each with and without the MC-statistics term. It writes
``results.json`` (last: its presence marks a finished run), ``results.md``, ``plots/pulls_<poi>.png``,
``plots/coverage.png`` and the toys (``toys/``, one file per finished chunk, so an interrupted run resumes).
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path
import numpy as np

from ..exceptions import ConfigurationError
from ..io import atomic_write_text

__all__ = ["CoverageStudySettings", "run_coverage_study"]


@dataclass
class CoverageStudySettings:
    """Settings of one coverage-study run (recorded as ``settings.json``)."""

    outdir: str = "outputs/coverage"
    #: the generator (``lumin_inferno.studies.analysis.TOYS``)
    toy: str = "small"
    #: the INFERNO training (``lumin_inferno.studies.analysis.METHODS``)
    method: str = "approx_gv"
    n_train_per_process: int = 20_000
    n_test_per_process: int = 50_000
    n_folds: int = 5
    n_bins: int = 10
    inferno_epochs: int = 40
    inferno_bs: int = 2000
    n_toys: int = 1000
    chunk_size: int = 100
    #: MC events per process of the "small MC" fits (a fresh draw per toy out of the test sample)
    mc_events: int = 1000
    seed: int = 0

    def __post_init__(self) -> None:
        from .analysis import METHODS, TOYS

        if self.toy not in TOYS:
            raise ConfigurationError(f"unknown toy {self.toy!r}; choose from {list(TOYS)}")
        if self.method not in METHODS:
            raise ConfigurationError(f"unknown method {self.method!r}; choose from {list(METHODS)}")
        for name in ("n_train_per_process", "n_test_per_process", "n_bins", "inferno_epochs", "inferno_bs",
                     "n_toys", "chunk_size", "mc_events"):
            if int(getattr(self, name)) < 1:
                raise ConfigurationError(f"{name} must be ≥ 1, got {getattr(self, name)}")
        if self.n_bins < 2:
            raise ConfigurationError(f"n_bins must be ≥ 2, got {self.n_bins}")
        if self.mc_events * 5 > self.n_test_per_process:
            raise ConfigurationError(
                f"mc_events ({self.mc_events}) must be at most a fifth of n_test_per_process ({self.n_test_per_process}): "
                "each toy's MC sample is drawn out of the test sample, which stands for the truth")
        self.training_settings()  # the training's own checks (batch size against the fold size, ...), up front

    def training_settings(self):
        """The analysis study's settings of the one INFERNO model trained here."""
        from .analysis import AnalysisStudySettings

        return AnalysisStudySettings(outdir=self.outdir, toy=self.toy, methods=[self.method], n_models=1,
                                     n_train_per_process=self.n_train_per_process,
                                     n_test_per_process=self.n_test_per_process, n_folds=self.n_folds,
                                     n_bins=self.n_bins, inferno_epochs=self.inferno_epochs,
                                     inferno_bs=self.inferno_bs, seed=self.seed, oracle=False)


def run_coverage_study(settings: CoverageStudySettings, verbose: bool = True, client=None) -> dict:
    """Train (or reuse) the model, run (or resume) the toys, write the outputs; returns ``results.json``'s content."""
    from ..data.foldfiles import open_foldfile

    from ..evaluation.analysis import foldfile_event_bins
    from ..statistics.fit import expected_poi_uncertainties
    from ..evaluation.coverage import CoverageSetting, coverage_summary, format_coverage, run_coverage
    from ..evaluation.plots import plot_coverage, plot_pulls
    from ..evaluation.templates import argmax_bins
    from .analysis import METHODS, TOYS, train_inferno_method
    from .common import load_models, predict, seed_everything

    t0 = time.time()
    out = Path(settings.outdir).resolve()
    out.mkdir(parents=True, exist_ok=True)
    for stale in ("results.json", "results.md"):  # an unfinished rerun must not look complete
        (out / stale).unlink(missing_ok=True)
    atomic_write_text(out / "settings.json", json.dumps(asdict(settings), indent=2))
    say = print if verbose else (lambda *a, **k: None)
    seed_everything(settings.seed)
    toy = TOYS[settings.toy]()
    train_settings = settings.training_settings()
    data = out / "data"
    files = [data / n for n in ("train.hdf5", "test.hdf5", "input_pipe.json")]
    data_fp = json.dumps([settings.toy, settings.n_train_per_process, settings.n_test_per_process, settings.n_folds,
                          settings.seed])
    if all(f.exists() for f in files) and (data / "settings.fingerprint").exists() \
            and (data / "settings.fingerprint").read_text() == data_fp:
        train_path, test_path, pipe_path = files
        say(f"[coverage] reusing the fold files in {data}")
    else:
        say(f"[coverage] writing fold files to {data}")
        train_path, test_path, pipe_path = toy.write_foldfiles(data, settings.n_train_per_process,
                                                               settings.n_test_per_process, settings.n_folds,
                                                               settings.seed)
        atomic_write_text(data / "settings.fingerprint", data_fp)
    fy = open_foldfile(train_path)
    fy_pipe = open_foldfile(train_path, input_pipe=toy.input_pipe(pipe_path))
    method = METHODS[settings.method]
    fingerprint = json.dumps({**asdict(train_settings), "outdir": None, "job": settings.method}, sort_keys=True)
    say(f"[coverage] training one {method.label} model ({settings.inferno_epochs} epochs; reused if already trained)")
    builder, (results, _) = train_inferno_method(train_settings, toy, method, fy, fy_pipe,
                                                 out / "weights" / settings.method, settings.seed + 1000,
                                                 fingerprint, client)
    model = load_models(results, builder)[0]
    analysis = toy.analysis(settings.n_bins, kind="inputs")
    events = foldfile_event_bins(analysis, lambda x: argmax_bins(predict(model, x)), open_foldfile(test_path))
    truth = events.template_model(analysis)
    expected = expected_poi_uncertainties(truth)
    say(f"[coverage] Asimov σ on the whole test sample: {expected}")
    fits = [CoverageSetting("all MC, MC stat", None, True), CoverageSetting("all MC, no MC stat", None, False),
            CoverageSetting(f"{settings.mc_events} MC events, MC stat", settings.mc_events, True),
            CoverageSetting(f"{settings.mc_events} MC events, no MC stat", settings.mc_events, False)]
    say(f"[coverage] {settings.n_toys} toys × {len(fits)} fits, in chunks of {settings.chunk_size}")
    toys = run_coverage(analysis, events, fits, settings.n_toys, out, seed=settings.seed,
                        chunk_size=settings.chunk_size, client=client, progress=verbose)
    summary = coverage_summary(analysis, toys)
    for name, entry in summary.items():
        for poi, row in entry["pois"].items():
            best = toys[name][f"best_{poi}"][~toys[name]["failed"]]
            row["rms_best"] = float(np.std(best, ddof=1)) if len(best) > 1 else float("nan")
            row["asimov_sigma"] = expected[poi]
    for poi in analysis.poi_names:
        plot_pulls({name: arr[f"pull_{poi}"][~arr["failed"]] for name, arr in toys.items()},
                   out / "plots" / f"pulls_{poi}.png", poi=poi)
    plot_coverage(summary, out / "plots" / "coverage.png")
    failed = sum(e["n_failed"] for e in summary.values())
    md = format_coverage(summary) + "\n\n" + "\n".join(
        f"- {poi}: Asimov σ (whole test sample, MINOS) {expected[poi]:.4f}; RMS of the best fits: "
        + ", ".join(f"{name} {e['pois'][poi]['rms_best']:.4f}" for name, e in summary.items())
        for poi in analysis.poi_names) + f"\n\nFailed fits: {failed}" + "".join(
        f"\n- {name}: {e['n_failed']} ({'; '.join(e['errors'])})" for name, e in summary.items() if e["n_failed"])
    result = {"settings": asdict(settings), "coverage": summary, "asimov_sigma": expected,
              "runtime_s": time.time() - t0}
    atomic_write_text(out / "results.md", md + "\n")
    atomic_write_text(out / "results.json", json.dumps(result, indent=2))
    say(md)
    say(f"[coverage] done in {time.time() - t0:.0f}s; outputs in {out} (plots in {out / 'plots'})")
    return result


def coverage_study_settings(args) -> CoverageStudySettings:
    """The settings of parsed ``coverage`` arguments (validated before any work is done)."""
    overrides = {k: v for k, v in dict(
        outdir=args.outdir, toy=args.toy, method=args.method, n_toys=args.n_toys, chunk_size=args.chunk_size,
        mc_events=args.mc_events, inferno_epochs=args.inferno_epochs, n_train_per_process=args.n_train,
        n_test_per_process=args.n_test, n_bins=args.n_bins, inferno_bs=args.inferno_bs, seed=args.seed).items() if v is not None}
    return CoverageStudySettings(**overrides)

