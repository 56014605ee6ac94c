"""Command line: ``lumin-inferno paper-study``, ``lumin-inferno analysis-study``, ``lumin-inferno coverage``,
``lumin-inferno pivot-study``
(also ``python -m lumin_inferno ...``)."""

from __future__ import annotations

import argparse
import contextlib
import sys
from typing import List, Optional


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="lumin-inferno", description="INFERNO for LUMIN")
    sub = p.add_subparsers(dest="command", required=True)
    s = sub.add_parser("paper-study", help="cross-entropy vs INFERNO on the INFERNO paper's benchmarks")
    s.add_argument("--outdir", default="outputs/paper_study", help="where fold files, weights and results go")
    s.add_argument("--benchmarks", type=int, nargs="+", default=None, help="which of the benchmarks 0-4 (default: all five)")
    s.add_argument("--full", action="store_true", help="paper-scale settings (long; see docs/paper_study.md)")
    s.add_argument("--n-models", type=int, default=None, help="models per method (default 3; --full: 10)")
    s.add_argument("--inferno-epochs", type=int, default=None,
                   help="INFERNO epochs (default 50; --full: 80)")
    s.add_argument("--ce-epochs", type=int, default=None)
    s.add_argument("--n-train", type=int, default=None, help="training events per class")
    s.add_argument("--n-test", type=int, default=None, help="test events per class")
    s.add_argument("--n-folds", type=int, default=None)
    s.add_argument("--inferno-bs", type=int, default=None, help="INFERNO batch size (events)")
    s.add_argument("--seed", type=int, default=None)
    s.add_argument("--lr-schedule", choices=["constant", "onecycle"], default=None, help="INFERNO learning-rate schedule")
    s.add_argument("--n-bins", type=int, default=None, help="INFERNO bins = softmax outputs (default 10)")
    s.add_argument("--temperature", type=float, default=None, help="softmax temperature (default 0.1)")
    anneal = s.add_mutually_exclusive_group()
    anneal.add_argument("--anneal-from", type=float, default=None,
                        help="anneal the temperature geometrically from this value down to --temperature (default 1.0)")
    anneal.add_argument("--constant-temperature", action="store_true", help="no annealing: --temperature throughout")
    s.add_argument("--select-on", choices=["hard_sigma", "loss"], default=None,
                   help="keep each INFERNO model's epoch of lowest hard-binned validation σ(s) (default) or soft loss")
    s.add_argument("--patience", type=int, default=None,
                   help="stop an INFERNO model after this many epochs without improvement (default: never; the "
                        "temperature is annealed over all epochs, docs/training.md)")
    s.add_argument("--reseed-empty-bins", action="store_true",
                   help="split the fullest INFERNO bin into any bin left empty in a training epoch (ReseedEmptyBins)")
    s.add_argument("--width", type=int, default=None, help="hidden-layer width (default 100)")
    s.add_argument("--depth", type=int, default=None, help="hidden layers (default 2)")
    _fanout_args(s)
    s.add_argument("--quiet", action="store_true")
    a = sub.add_parser("analysis-study",
                       help="cross-entropy vs INFERNO on the analysis-scale toy (2 POIs, control region, 22 systematics)")
    a.add_argument("--outdir", default="outputs/analysis_study", help="where fold files, weights and results go")
    a.add_argument("--toy", choices=["analysis", "small"], default=None,
                   help="the generator: the analysis-scale toy (default) or the small one-POI problem")
    a.add_argument("--select-on", choices=["hard_sigma", "loss"], default=None,
                   help="keep each INFERNO model's epoch of lowest hard-binned validation objective (default) or loss")
    a.add_argument("--patience", type=int, default=None,
                   help="stop an INFERNO model after this many epochs without improvement (default: never; the "
                        "temperature is annealed over all epochs, docs/training.md)")
    a.add_argument("--full", action="store_true", help="larger samples, more models and epochs (docs/analysis_study.md)")
    a.add_argument("--methods", nargs="+", default=None,
                   help="INFERNO trainings among approx_gv exact_gv approx_var_ggH approx_var_qqH (default: approx_gv "
                        "exact_gv; --full: all four)")
    a.add_argument("--n-models", type=int, default=None, help="models per method (default 2; --full: 3)")
    a.add_argument("--inferno-epochs", type=int, default=None,
                   help="INFERNO epochs (default 40; --full: 60)")
    a.add_argument("--ce-epochs", type=int, default=None, help="cross-entropy epochs (default 10; --full: 20)")
    a.add_argument("--n-train", type=int, default=None, help="training events per process (default 20000)")
    a.add_argument("--n-test", type=int, default=None, help="test events per process (default 50000)")
    a.add_argument("--n-folds", type=int, default=None, help="training folds (default 5)")
    a.add_argument("--n-bins", type=int, default=None, help="INFERNO bins (default 10)")
    a.add_argument("--ce-score-bins", type=int, default=None, help="cross-entropy score bins per class (default 4)")
    a.add_argument("--inferno-bs", type=int, default=None, help="INFERNO batch size (events, default 2000)")
    a.add_argument("--limit-events", type=int, default=None, help="events per process per split of the limit")
    a.add_argument("--seed", type=int, default=None)
    _fanout_args(a)
    a.add_argument("--quiet", action="store_true")
    c = sub.add_parser("coverage",
                       help="coverage of an INFERNO summary's intervals with pseudo-experiments, small and large MC, "
                            "with and without the MC-statistics term")
    c.add_argument("--outdir", default="outputs/coverage", help="where fold files, weights, toys and results go")
    c.add_argument("--toy", choices=["small", "analysis"], default=None, help="the generator (default: small)")
    c.add_argument("--method", default=None, help="the INFERNO training (default approx_gv)")
    c.add_argument("--n-toys", type=int, default=None, help="pseudo-experiments per fit setting (default 1000)")
    c.add_argument("--chunk-size", type=int, default=None, help="toys per task / file (default 100)")
    c.add_argument("--mc-events", type=int, default=None,
                   help="MC events per process of the small-MC fits, drawn afresh per toy (default 1000)")
    c.add_argument("--inferno-epochs", type=int, default=None, help="INFERNO epochs (default 40)")
    c.add_argument("--n-train", type=int, default=None, help="training events per process (default 20000)")
    c.add_argument("--n-test", type=int, default=None, help="test events per process, the truth (default 50000)")
    c.add_argument("--n-bins", type=int, default=None, help="INFERNO bins (default 10)")
    c.add_argument("--inferno-bs", type=int, default=None, help="INFERNO batch size (events, default 2000)")
    c.add_argument("--seed", type=int, default=None)
    _fanout_args(c)
    c.add_argument("--quiet", action="store_true")
    sub.add_parser(
        "pivot-study",
        help="learning to pivot on the Louppe-Kagan-Cranmer toy (options: lumin-inferno pivot-study --help)",
        add_help=False,
    )
    return p


def _fanout_args(p: argparse.ArgumentParser) -> None:
    g = p.add_mutually_exclusive_group()
    g.add_argument("--workers", type=int, default=None,
                   help="run ensemble members (and toys) on a local Dask cluster of this many worker processes "
                        "(docs/scale_out.md)")
    g.add_argument("--scheduler", default=None,
                   help="train ensemble members on the Dask cluster whose scheduler is at this address (tcp://host:port)")


@contextlib.contextmanager
def _client(args: argparse.Namespace):
    """The Dask client of ``--workers``/``--scheduler`` (closed afterwards), or ``None``: train here."""
    if not (args.workers or args.scheduler):
        yield None
        return
    from .fanout import connect

    client = connect(args.scheduler, n_workers=args.workers or 2)
    try:
        yield client
    finally:
        local = client.cluster if args.workers else None
        client.close()
        if local is not None:
            local.close()


def study_settings(args: argparse.Namespace):
    """The :class:`~lumin_inferno.studies.paper.StudySettings` of parsed ``paper-study`` arguments (defaults, or
    ``--full``'s, overridden by every option given)."""
    from .studies.paper import StudySettings

    overrides = {
        k: v
        for k, v in dict(
            outdir=args.outdir,
            benchmarks=args.benchmarks,
            n_models=args.n_models,
            inferno_epochs=args.inferno_epochs,
            ce_epochs=args.ce_epochs,
            n_train_per_class=args.n_train,
            n_test_per_class=args.n_test,
            n_folds=args.n_folds,
            inferno_bs=args.inferno_bs,
            seed=args.seed,
            inferno_lr_schedule=args.lr_schedule,
            n_bins=args.n_bins,
            temperature=args.temperature,
            temperature_start=args.anneal_from,
            width=args.width,
            depth=args.depth,
            select_on=args.select_on,
            patience=args.patience,
        ).items()
        if v is not None
    }
    if args.constant_temperature:
        overrides["temperature_start"] = None
    if args.reseed_empty_bins:
        overrides["reseed_empty_bins"] = True
    if args.patience == 0:
        overrides["patience"] = None
    return StudySettings.full(**overrides) if args.full else StudySettings(**overrides)


def analysis_study_settings(args: argparse.Namespace):
    """The :class:`~lumin_inferno.studies.analysis.AnalysisStudySettings` of parsed ``analysis-study`` arguments
    (validated here, before any work is done)."""
    from .studies.analysis import AnalysisStudySettings

    overrides = {k: v for k, v in dict(
        outdir=args.outdir, methods=args.methods, n_models=args.n_models, inferno_epochs=args.inferno_epochs,
        ce_epochs=args.ce_epochs, n_train_per_process=args.n_train, n_test_per_process=args.n_test,
        n_folds=args.n_folds, n_bins=args.n_bins, ce_score_bins=args.ce_score_bins, inferno_bs=args.inferno_bs,
        limit_events=args.limit_events, seed=args.seed, toy=args.toy, select_on=args.select_on,
        patience=args.patience).items() if v is not None}
    if args.patience == 0:
        overrides["patience"] = None
    return AnalysisStudySettings.full(**overrides) if args.full else AnalysisStudySettings(**overrides)


def main(argv: Optional[List[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["pivot-study"]:
        from .studies.pivot import main as pivot_main

        return pivot_main(argv[1:])
    args = _parser().parse_args(argv)
    if args.command == "paper-study":
        from .exceptions import ConfigurationError
        from .studies.paper import run_paper_study

        try:
            settings = study_settings(args)
        except ConfigurationError as e:
            _parser().error(str(e))
        with _client(args) as client:
            run_paper_study(settings, verbose=not args.quiet, client=client)
    elif args.command == "analysis-study":
        from .exceptions import ConfigurationError
        from .studies.analysis import run_analysis_study

        try:
            settings = analysis_study_settings(args)
        except ConfigurationError as e:
            _parser().error(str(e))
        with _client(args) as client:
            run_analysis_study(settings, verbose=not args.quiet, client=client)
    elif args.command == "coverage":
        from .exceptions import ConfigurationError
        from .studies.coverage import coverage_study_settings, run_coverage_study

        try:
            cov = coverage_study_settings(args)
        except ConfigurationError as e:
            _parser().error(str(e))
        with _client(args) as client:
            run_coverage_study(cov, verbose=not args.quiet, client=client)
    return 0


if __name__ == "__main__":
    sys.exit(main())
