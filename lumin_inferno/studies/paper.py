"""The INFERNO paper study on LUMIN: cross-entropy vs INFERNO on the paper's benchmarks, end to end.

Writes fold files, trains with LUMIN's ``train_models`` (a cross-entropy classifier ensemble, and an INFERNO ensemble
per benchmark via :class:`~lumin_inferno.callbacks.InfernoCallback`), and evaluates each trained model's expected
σ(s) on an Asimov dataset built from a large, independent test file (profile likelihood, nuisances profiled).
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import time
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import numpy as np

from ..callbacks.bins import ReseedEmptyBins
from ..callbacks.inferno import InfernoCallback
from ..callbacks.metrics import HardSigmaMetric
from ..callbacks.schedules import TemperatureSchedule
from ..data.paper import SIGNAL_YIELD, analytic_limit, paper_benchmark, write_paper_foldfiles
from ..exceptions import ConfigurationError
from ..evaluation.plots import plot_profile_curves, plot_sigma_summary, plot_templates, plot_training_curves
from ..evaluation.analysis import analysis_template_model, event_bins
from ..evaluation.report import training_report
from ..evaluation.templates import bin_occupancy, memoised_bins, uniform_bins
from ..statistics.fit import expected_poi_uncertainty
from ..statistics.fit import profile_scan
from ..models.tails import SoftmaxTemperatureTail
from ..io import atomic_write_text
from .common import (check_training_settings, ensemble_tasks, inferno_bin_functions, load_models, predict,
                     seed_everything, summarise, train_ensembles)

__all__ = ["StudySettings", "run_paper_study", "PAPER_RESULTS", "format_table", "format_cross_table"]

#: Table 2 of the paper (median over 100 initialisations): expected σ(s).
PAPER_RESULTS: Dict[int, Dict[str, float]] = {
    0: {"paper_ce": 14.99, "paper_inferno": 15.51, "analytic": 14.71},
    1: {"paper_ce": 18.94, "paper_inferno": 16.79, "analytic": 15.52},
    2: {"paper_ce": 23.94, "paper_inferno": 16.95, "analytic": 15.65},
    3: {"paper_ce": 21.54, "paper_inferno": 16.89, "analytic": 15.62},
    4: {"paper_ce": 26.71, "paper_inferno": 18.68, "analytic": 16.89},
}


@dataclass
class StudySettings:
    """Settings of one study run (recorded next to its outputs)."""

    outdir: str = "outputs/paper_study"
    benchmarks: List[int] = field(default_factory=lambda: [0, 1, 2, 3, 4])
    n_train_per_class: int = 50_000
    n_test_per_class: int = 100_000
    n_folds: int = 5
    n_models: int = 3
    n_bins: int = 10
    temperature: float = 0.1
    width: int = 100
    depth: int = 2
    #: benchmark 4 kept epochs 37–43 of 60; 30 epochs left it under-trained (docs/training.md)
    inferno_epochs: int = 50
    inferno_bs: int = 2000
    inferno_lr: float = 1e-3
    #: "constant" (Adam at inferno_lr) or "onecycle" (LUMIN's OneCycle: warm-up over 20 % of the epochs from lr/10 to
    #: lr, then cosine decay to lr/1000; momentum β₁ 0.95 → 0.85 → 0.95)
    inferno_lr_schedule: str = "constant"
    #: the softmax temperature is annealed geometrically from this value to ``temperature`` over the INFERNO epochs
    #: (:class:`~lumin_inferno.callbacks.TemperatureSchedule`; lowered σ(s) on benchmarks 2 and 4, docs/paper_study.md);
    #: ``None``: constant ``temperature``
    temperature_start: Optional[float] = 1.0
    #: which epoch of each INFERNO model is kept: "hard_sigma" (the epoch of lowest hard-binned σ(s) on its
    #: validation fold, :class:`~lumin_inferno.callbacks.HardSigmaMetric`) or "loss" (LUMIN's default: the lowest
    #: soft validation loss, compared across temperatures)
    select_on: str = "hard_sigma"
    #: stop an INFERNO model after this many epochs without improvement of the selection metric (None: never)
    patience: Optional[int] = None
    #: re-seed INFERNO bins left empty in a training epoch by splitting the fullest bin
    #: (:class:`~lumin_inferno.callbacks.ReseedEmptyBins`)
    reseed_empty_bins: bool = False
    #: β of the moving average of the INFERNO loss's templates over training batches (0: the per-batch templates;
    #: :class:`~lumin_inferno.callbacks.base.TemplateLossCallback`)
    template_average: float = 0.0
    ce_epochs: int = 10
    ce_bs: int = 256
    ce_lr: float = 1e-3
    seed: int = 27
    eval_method: str = "profile"
    analytic_events: int = 1_000_000

    def __post_init__(self) -> None:
        """Every setting checked here, before any data is written or any model trained."""
        self.benchmarks = list(self.benchmarks)
        bad = [b for b in self.benchmarks if b not in PAPER_RESULTS]
        if not self.benchmarks or bad:
            raise ConfigurationError(f"benchmarks must be among {sorted(PAPER_RESULTS)}, got {self.benchmarks}")
        if len(set(self.benchmarks)) != len(self.benchmarks):  # each is one ensemble in one folder
            raise ConfigurationError(f"benchmarks given twice: {self.benchmarks}")
        check_training_settings(
            self, ("n_train_per_class", "n_test_per_class", "n_models", "inferno_epochs", "inferno_bs", "ce_epochs",
                   "ce_bs", "width", "depth", "analytic_events"),
            2 * self.n_train_per_class // self.n_folds, ("inferno_bs", "ce_bs"), "n_train_per_class")
        if not 0.0 <= self.template_average < 1.0:
            raise ConfigurationError(f"template_average must be in [0, 1), got {self.template_average}")
        if self.inferno_lr_schedule not in ("constant", "onecycle"):
            raise ConfigurationError(f"inferno_lr_schedule must be 'constant' or 'onecycle', got {self.inferno_lr_schedule!r}")

    @classmethod
    def full(cls, **overrides) -> "StudySettings":
        """Paper-scale data: 100k + 100k training events (5 folds), 500k + 500k test events; 10 models per method
        (the median of 5 moved by up to 0.3 events between replicas), INFERNO 60 epochs, cross-entropy 20 epochs
        (run time in docs/paper_study.md)."""
        base: Dict[str, Any] = dict(
            n_train_per_class=100_000, n_test_per_class=500_000, n_folds=5, n_models=10, inferno_epochs=80, ce_epochs=20
        )
        base.update(overrides)
        return cls(**base)


def _model_builder(settings: StudySettings, fy, inferno: bool):
    from lumin.nn.models.helpers import CatEmbedder
    from lumin.nn.models.model_builder import ModelBuilder

    kwargs = dict(
        objective="classification",
        cont_feats=fy.cont_feats,
        cat_embedder=CatEmbedder([], []),
        model_args={"body": {"width": settings.width, "depth": settings.depth, "act": "relu"}},
    )
    with contextlib.redirect_stdout(io.StringIO()):
        if inferno:
            kwargs["model_args"]["tail"] = {"temperature": settings.temperature}
            return ModelBuilder(
                n_out=settings.n_bins,
                tail=SoftmaxTemperatureTail,
                opt_args={"opt": "adam", "lr": settings.inferno_lr},
                **kwargs,
            )
        return ModelBuilder(n_out=1, opt_args={"opt": "adam", "lr": settings.ce_lr}, **kwargs)


def _lr_schedule(settings: StudySettings):
    from lumin.nn.callbacks.cyclic_callbacks import OneCycle

    if settings.inferno_lr_schedule != "onecycle":
        raise ConfigurationError(
            f"inferno_lr_schedule must be 'constant' or 'onecycle', got {settings.inferno_lr_schedule!r}"
        )
    warm = max(1, round(0.2 * settings.inferno_epochs))
    lr = settings.inferno_lr
    return partial(OneCycle, lengths=(warm, max(1, settings.inferno_epochs - warm)), lr_range=[lr / 10, lr, lr / 1000])


def inferno_callbacks(settings: StudySettings, benchmark: int) -> Tuple[List[partial], Optional[List[partial]]]:
    """LUMIN ``cb_partials`` and ``metric_partials`` of an INFERNO member for ``benchmark`` under ``settings``:
    :class:`~lumin_inferno.callbacks.InfernoCallback` on the benchmark's analysis (inputs transformed exactly), the
    learning-rate and temperature schedules, :class:`~lumin_inferno.callbacks.ReseedEmptyBins` if asked for, and
    :class:`~lumin_inferno.callbacks.HardSigmaMetric` when models are selected on the hard σ (else no metrics)."""
    bm = paper_benchmark(benchmark)
    analysis, transform = bm.analysis(settings.n_bins, kind="transform"), bm.transform()
    cbs = [partial(InfernoCallback, analysis, transform=transform, template_average=settings.template_average)]
    if settings.inferno_lr_schedule != "constant":
        cbs.append(_lr_schedule(settings))
    if settings.temperature_start is not None:
        cbs.append(partial(TemperatureSchedule, start=settings.temperature_start, end=settings.temperature))
    if settings.reseed_empty_bins:
        cbs.append(partial(ReseedEmptyBins))
    metrics = [partial(HardSigmaMetric, analysis, transform=transform)] if settings.select_on == "hard_sigma" else None
    return cbs, metrics


def _tasks(fy, settings: StudySettings, builder, bs: int, epochs: int, savepath: Path, cb_partials=None,
           metric_partials=None) -> list:
    kwargs = {}
    if metric_partials:
        kwargs = dict(metric_partials=metric_partials, patience=settings.patience)
    fingerprint = json.dumps({**asdict(settings), "outdir": None, "job": savepath.name}, sort_keys=True)
    return ensemble_tasks(fy, builder, settings.n_models, bs, epochs, savepath, cb_partials, seed=settings.seed,
                          fingerprint=fingerprint, **kwargs)


def _evaluate(bin_fn, test, settings: StudySettings, benchmark: int):
    """The hard-binned Asimov TemplateModel of one summary statistic on the test sample, for one benchmark."""
    bm = paper_benchmark(benchmark)
    return analysis_template_model(bm.analysis(settings.n_bins, kind="transform"), bin_fn, test["inputs"],
                                   test["targets"], test["weights"], transform=bm.transform())


def _bin_functions(models: list, benchmark: Optional[int], settings: StudySettings, reference_inputs: np.ndarray,
                   train: dict) -> list:
    """One bin function per model (INFERNO: argmax; cross-entropy: uniform bins of the score), and for INFERNO the
    aligned ensemble and, with the training sample ``train`` (all folds' inputs, targets, weights), the members'
    joint bins merged for the benchmark they were trained for
    (:func:`~lumin_inferno.studies.common.inferno_bin_functions`)."""
    if benchmark is None:
        return [partial(lambda x, m: uniform_bins(predict(m, x), settings.n_bins), m=m) for m in models]
    bm = paper_benchmark(benchmark)
    analysis = bm.analysis(settings.n_bins, kind="transform")
    return inferno_bin_functions(models, reference_inputs, analysis, lambda fn: event_bins(
        analysis, fn, train["inputs"], train["targets"], train["weights"], transform=bm.transform()))


def run_paper_study(settings: StudySettings, verbose: bool = True, client=None) -> dict:
    """Run the study; write results (``results.json``/``.md``/``.csv``, ``cross_benchmark.csv``), plots and
    ``settings.json`` into ``settings.outdir``; ``results.json`` is written last (its presence marks a finished run;
    a rerun removes the old one first and resumes from the finished members under ``weights/``).

    For each benchmark k: cross-entropy and INFERNO-k σ(s) per model with median/16 %/84 % summaries, the σ(s) of the
    INFERNO-k ensemble (mean softmax), the analytic limit (unbinned extended likelihood), the paper's values and
    INFERNO's distance to the limit; and the cross-benchmark matrix (INFERNO trained for k, evaluated on j).
    """
    from fastprogress.fastprogress import progress_bar
    from ..data.foldfiles import open_foldfile

    if settings.select_on not in ("hard_sigma", "loss"):
        raise ConfigurationError(f"select_on must be 'hard_sigma' or 'loss', got {settings.select_on!r}")
    t0 = time.time()
    out = Path(settings.outdir).resolve()
    out.mkdir(parents=True, exist_ok=True)
    for stale in ("results.json", "results.md", "results.csv", "cross_benchmark.csv"):  # an unfinished rerun must
        (out / stale).unlink(missing_ok=True)                                           # not look complete
    atomic_write_text(out / "settings.json", json.dumps(asdict(settings), indent=2))
    seed_everything(settings.seed)  # LUMIN shuffles folds with Python's random
    say = print if verbose else (lambda *a, **k: None)
    bar = (lambda it: progress_bar(list(it), display=True)) if verbose else (lambda it: it)

    say(f"[paper-study] writing fold files to {out / 'data'}")
    train_path, test_path = write_paper_foldfiles(
        out / "data", settings.n_train_per_class, settings.n_test_per_class, settings.n_folds, settings.seed
    )
    fy = open_foldfile(train_path)
    test = open_foldfile(test_path).get_fold(0)

    jobs: List[tuple] = [("cross-entropy", None)] + [(f"INFERNO {k}", k) for k in settings.benchmarks]
    ensembles = []
    for name, k in jobs:
        inferno = k is not None
        builder = _model_builder(settings, fy, inferno)
        cbs, metrics = inferno_callbacks(settings, k) if inferno else (None, None)
        tasks = _tasks(fy, settings, builder, settings.inferno_bs if inferno else settings.ce_bs,
                       settings.inferno_epochs if inferno else settings.ce_epochs,
                       out / "weights" / (f"inferno_{k}" if inferno else "ce"), cbs, metrics)
        ensembles.append((name, k, builder, metrics is not None, tasks))
    say(f"[paper-study] training {sum(len(e[-1]) for e in ensembles)} ensemble members "
        f"({settings.n_models} per method{', on Dask' if client is not None else ''})")
    trained: Dict[str, tuple] = {}
    for (name, k, builder, selected, _), (results, histories) in zip(
            ensembles, train_ensembles([e[-1] for e in ensembles], client, progress=verbose)):
        val = [float(r["hard_sigma"]) for r in results] if selected else None  # each model's selection metric
        trained[name] = (k, load_models(results, builder), histories, val)
    say(f"[paper-study] trained {len(trained)} ensembles ({time.time() - t0:.0f}s)")

    # σ(s) of every trained summary statistic on every benchmark (the diagonal is the paper's main table).
    say("[paper-study] evaluating on the test sample (profile likelihood, nuisances profiled)")
    cross: Dict[str, Dict[int, dict]] = {}
    templates: Dict[str, Dict[int, object]] = {}
    evals = [(name, j) for name in trained for j in settings.benchmarks]
    fns_of: Dict[str, list] = {}
    folds = [fy.get_fold(i) for i in range(fy.n_folds)]  # the merge of INFERNO members' joint bins is fitted here
    train = {c: np.concatenate([f[c] for f in folds]) for c in ("inputs", "targets", "weights")}
    for name, j in bar(evals):
        k, models, _, val = trained[name]
        if name not in fns_of:  # one set per statistic, its predictions reused on every benchmark (evals by name)
            fns_of = {name: [memoised_bins(fn) for fn in _bin_functions(models, k, settings, test["inputs"], train)]}
        fns = fns_of[name]
        tms = [_evaluate(fn, test, settings, j) for fn in fns]
        # σ(s) = s₀ σ(μ): the analysis's POI is the signal strength
        sigmas = [SIGNAL_YIELD * expected_poi_uncertainty(tm, method=settings.eval_method) for tm in tms]
        hessian = [SIGNAL_YIELD * expected_poi_uncertainty(tm, method="hessian") for tm in tms[: len(models)]]  # √(H⁻¹)ₛₛ
        entry = {"per_model": sigmas[: len(models)], **summarise(sigmas[: len(models)]),
                 "hessian": {"per_model": hessian, **summarise(hessian)}}
        if len(sigmas) > len(models):  # the aligned mean, then the merged joint bins
            entry["ensemble"] = sigmas[len(models)]
        if len(sigmas) > len(models) + 1:
            entry["merged"] = sigmas[len(models) + 1]
        if val is not None:  # the member of lowest hard σ on its own validation fold (the test file unseen)
            entry["selected"] = sigmas[int(np.argmin(val))]
        if k is not None and j == k:
            occupancy = [bin_occupancy(fn(test["inputs"]), settings.n_bins) for fn in fns[: len(models)]]
            entry["occupancy"] = [o.tolist() for o in occupancy]
            entry["empty_bins"] = [int((o <= 0).sum()) for o in occupancy]
        cross.setdefault(name, {})[j] = entry
        templates.setdefault(name, {})[j] = tms[0]

    table: Dict[int, dict] = {}
    for k in settings.benchmarks:
        limit = analytic_limit(k, settings.analytic_events, seed=settings.seed + 99)
        row: Dict[str, Any] = {"benchmark": k, "ce": cross["cross-entropy"][k], "inferno": cross[f"INFERNO {k}"][k]}
        row.update(PAPER_RESULTS[k])
        row["limit"] = limit
        row["inferno_to_limit_pct"] = 100.0 * (row["inferno"]["median"] / limit - 1.0)
        row["warnings"] = _report(k, row, trained[f"INFERNO {k}"], settings)
        table[k] = row

    results = {
        "settings": asdict(settings),
        "benchmarks": table,
        "cross_benchmark": {name: {j: e for j, e in row.items()} for name, row in cross.items()},
        "runtime_s": time.time() - t0,
    }
    md = format_table(table) + "\n\n" + format_cross_table(cross, settings.benchmarks) + _format_warnings(table)
    atomic_write_text(out / "results.md", md + "\n")
    atomic_write_text(out / "results.csv", _csv(table))
    atomic_write_text(out / "cross_benchmark.csv", _cross_csv(cross, settings.benchmarks))
    _plots(out / "plots", trained, templates, table, settings)
    atomic_write_text(out / "results.json", json.dumps(results, indent=2))  # last: the run is complete
    say(md)
    say(f"[paper-study] done in {time.time() - t0:.0f}s; outputs in {out} (plots in {out / 'plots'})")
    return results


def _report(k: int, row: dict, trained: tuple, settings: StudySettings) -> List[str]:
    """The training report (:func:`~lumin_inferno.evaluation.training_report`) of each INFERNO-k model on benchmark
    k: against the cross-entropy median, its empty test bins, its selection metric's convergence."""
    _, models, histories, _ = trained
    inf = row["inferno"]
    out: List[str] = []
    for i in range(len(models)):
        history = histories[i][1].get("hard_sigma") if settings.select_on == "hard_sigma" else None
        out += training_report(f"INFERNO {k}, model {i}", inf["per_model"][i], row["ce"]["median"],
                               inf["occupancy"][i], history)
    return out


def _format_warnings(table: dict) -> str:
    lines = [w for row in table.values() for w in row["warnings"]]
    return "\n\n**Training report**\n\n" + ("\n".join(f"- {w}" for w in lines) if lines else "No warnings.")


def _plots(plot_dir: Path, trained: dict, templates: dict, table: dict, settings: StudySettings) -> None:
    """Training curves, learned templates, profile curves (CE vs INFERNO) and σ(s) per benchmark vs the limit."""
    inferno = {name: h for name, (k, _, h, _) in trained.items() if k is not None}
    plot_training_curves(inferno, plot_dir / "training_curves_inferno.png")
    if settings.select_on == "hard_sigma":
        plot_training_curves(inferno, plot_dir / "training_curves_hard_sigma.png", metric="hard_sigma",
                             scale=SIGNAL_YIELD)  # σ(s) = s₀ σ(μ), events
    plot_training_curves({"cross-entropy": trained["cross-entropy"][2]}, plot_dir / "training_curves_ce.png",
                         sqrt=False)
    for k in settings.benchmarks:
        plot_templates(templates[f"INFERNO {k}"][k], plot_dir / f"templates_inferno_{k}.png",
                       title=f"INFERNO {k} (model 0), benchmark {k} templates")
        plot_templates(templates["cross-entropy"][k], plot_dir / f"templates_ce_{k}.png",
                       title=f"cross-entropy (model 0), benchmark {k} templates")
        curves = {}
        width = 2.5 * table[k]["ce"]["median"]
        grid = np.linspace(max(50.0 - width, 1.0), 50.0 + width, 25)  # s ≥ 0 is the POI's physical bound
        for label, tm in (("cross-entropy", templates["cross-entropy"][k]), (f"INFERNO {k}", templates[f"INFERNO {k}"][k])):
            curves[label] = (grid, profile_scan(tm, grid / SIGNAL_YIELD))  # the POI is μ = s / s₀
        plot_profile_curves(curves, plot_dir / f"profile_{k}.png")
    plot_sigma_summary(table, plot_dir / "sigma_summary.png")


def _fmt(entry: Optional[dict]) -> str:
    return f"{entry['median']:.2f} [{entry['q16']:.2f}, {entry['q84']:.2f}]" if entry else "–"


def format_table(table: dict) -> str:
    """Markdown table of σ(s) per benchmark: ours (median [16 %, 84 %] over models; the member selected by its
    validation hard σ; the aligned mean of the members; their joint bins merged into n_bins), the paper's values, the
    analytic limit (computed here; the paper's in brackets), the distances to it, and each INFERNO model's empty bins
    on the test file."""
    lines = [
        "| benchmark | cross-entropy σ(s) | INFERNO σ(s) | INFERNO selected | INFERNO aligned mean | INFERNO merged "
        "| paper CE | paper INFERNO | analytic limit (paper) | INFERNO − limit | selected − limit | merged − limit "
        "| INFERNO √(H⁻¹)ₛₛ | empty bins |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]

    def opt(x: Optional[float]) -> str:
        return "–" if x is None else f"{x:.2f}"

    for k, row in sorted(table.items()):
        inf = row["inferno"]
        sel = inf.get("selected")
        merged = inf.get("merged")

        def pct(x: Optional[float]) -> str:
            return "–" if x is None else f"{100 * (x / row['limit'] - 1):+.1f} %"

        lines.append(
            f"| {k} | {_fmt(row['ce'])} | {_fmt(inf)} | {opt(sel)} | {opt(inf.get('ensemble'))} | {opt(merged)} "
            f"| {row['paper_ce']:.2f} | {row['paper_inferno']:.2f} | {row['limit']:.2f} ({row['analytic']:.2f}) "
            f"| {row['inferno_to_limit_pct']:+.1f} % | {pct(sel)} | {pct(merged)} | {inf['hessian']['median']:.2f} "
            f"| {', '.join(str(e) for e in inf.get('empty_bins', [])) or '–'} |"
        )
    return "\n".join(lines)


def format_cross_table(cross: dict, benchmarks: List[int]) -> str:
    """Markdown matrix: rows = summary statistic (cross-entropy, INFERNO trained for k), columns = benchmark j on
    which σ(s) is evaluated (median over models)."""
    lines = ["| trained for \\ evaluated on | " + " | ".join(str(j) for j in benchmarks) + " |",
             "|---|" + "---|" * len(benchmarks)]
    for name, row in cross.items():
        lines.append(f"| {name} | " + " | ".join(f"{row[j]['median']:.2f}" for j in benchmarks) + " |")
    return "\n".join(lines)


def _csv(table: dict) -> str:
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["benchmark", "ce_median", "ce_q16", "ce_q84", "inferno_median", "inferno_q16", "inferno_q84",
                "inferno_ensemble", "inferno_selected", "inferno_merged", "paper_ce", "paper_inferno", "limit", "paper_limit",
                "inferno_to_limit_pct",
                "ce_hessian_median", "inferno_hessian_median"])
    for k, row in sorted(table.items()):
        ce, inf = row["ce"], row["inferno"]
        w.writerow([k, ce["median"], ce["q16"], ce["q84"], inf["median"], inf["q16"], inf["q84"],
                    inf.get("ensemble", ""), inf.get("selected", ""), inf.get("merged", ""), row["paper_ce"],
                    row["paper_inferno"], row["limit"], row["analytic"],
                    row["inferno_to_limit_pct"], ce["hessian"]["median"], inf["hessian"]["median"]])
    return buf.getvalue()


def _cross_csv(cross: dict, benchmarks: List[int]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["trained_for"] + [f"eval_benchmark_{j}" for j in benchmarks])
    for name, row in cross.items():
        w.writerow([name] + [row[j]["median"] for j in benchmarks])
    return buf.getvalue()
