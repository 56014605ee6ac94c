"""The analysis-scale study: cross-entropy vs INFERNO on the built-in analysis toy, against its known limit.

The toy (:mod:`lumin_inferno.data.analysis_toy`): two POIs (μ_ggH, μ_qqH), three backgrounds, a ttbar control
region with a free k_ttbar, 22 systematics (5 shifted-input, 8 event-weight, 9 normalisation) and MC statistics.
The study writes its fold files, trains with LUMIN's ``train_models``

* a multi-class cross-entropy classifier ensemble (one class per process, classes balanced), binned the way
  analysts bin one: argmax class × quantiles of the winning score (:func:`~lumin_inferno.evaluation.
  class_score_bins`);
* INFERNO ensembles, each a :data:`METHODS` entry: approximate INFERNO (every systematic from the fold file) on the
  generalised variance of (μ_ggH, μ_qqH) and on each POI's variance alone, and exact INFERNO (energy scales as
  differentiable input shifts through LUMIN's input pipe) on the generalised variance,

and evaluates every member and every ensemble on an independent test file with the profile likelihood of the
whole analysis (hard bins, every nuisance, the control region, MC statistics): σ of each POI (MINOS half-width),
their correlation (Hessian), the distance to the unbinned limit and the gain over cross-entropy, with all
systematics and statistical-only (nuisances fixed), plus plots.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import time
from dataclasses import asdict, dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple

import numpy as np

from ..analysis import Analysis, Objective
from ..callbacks.approx_inferno import ApproxInfernoCallback
from ..callbacks.inferno import InfernoCallback
from ..callbacks.metrics import HardSigmaMetric
from ..callbacks.schedules import TemperatureSchedule
from ..data.analysis_toy import AnalysisToy, analysis_toy, small_toy
from ..analysis import template_model
from ..evaluation.analysis import EventBins, foldfile_event_bins, foldfile_template_model, hard_summary_templates
from ..statistics.fit import expected_poi_uncertainties
from ..evaluation.report import training_report
from ..evaluation.plots import plot_channel_templates, plot_poi_contours, plot_poi_sigmas, plot_training_curves
from ..evaluation.templates import class_score_bins, class_score_edges
from ..exceptions import ConfigurationError
from ..io import atomic_write_text
from ..models.tails import SoftmaxTemperatureTail
from ..statistics.hessian import fisher_information
from ..statistics.objectives import poi_covariance
from .common import (check_training_settings, ensemble_tasks, inferno_bin_functions, load_models, predict as _predict,
                     seed_everything, summarise, train_ensembles)

__all__ = ["AnalysisStudySettings", "METHODS", "run_analysis_study", "format_table"]



@dataclass(frozen=True)
class Method:
    """One INFERNO training of the study: callback (``"approx"`` or ``"exact"``) and objective."""

    callback: str
    objective: str
    pois: Tuple[str, ...]
    label: str


#: The INFERNO trainings the study can run (``--methods``).
METHODS: Dict[str, Method] = {
    "approx_gv": Method("approx", "generalised_variance", (), "INFERNO approx, log det C"),
    "exact_gv": Method("exact", "generalised_variance", (), "INFERNO exact, log det C"),
    "approx_var_ggH": Method("approx", "variance", ("mu_ggH",), "INFERNO approx, Var(μ_ggH)"),
    "approx_var_qqH": Method("approx", "variance", ("mu_qqH",), "INFERNO approx, Var(μ_qqH)"),
}
#: the generators the study runs on (``--toy``): the analysis-scale toy and a small one-POI problem
TOYS: Dict[str, Callable[[], AnalysisToy]] = {"analysis": analysis_toy, "small": small_toy}
CE = "cross-entropy"
ORACLE = "exact-density classifier"


@dataclass
class AnalysisStudySettings:
    """Settings of one analysis-study run (recorded next to its outputs as ``settings.json``)."""

    outdir: str = "outputs/analysis_study"
    #: the generator (:data:`TOYS`)
    toy: str = "analysis"
    #: INFERNO trainings (:data:`METHODS`); ``full()`` adds the per-POI variances
    methods: List[str] = field(default_factory=lambda: ["approx_gv", "exact_gv"])
    n_train_per_process: int = 20_000
    n_test_per_process: int = 50_000
    n_folds: int = 5
    n_models: int = 2
    #: INFERNO bins (softmax outputs)
    n_bins: int = 10
    #: cross-entropy binning: 5 classes × this many score quantiles
    ce_score_bins: int = 4
    temperature: float = 0.1
    #: softmax temperature annealed geometrically from this value to ``temperature`` (``None``: constant)
    temperature_start: Optional[float] = 1.0
    width: int = 100
    depth: int = 2
    #: on the small toy 15 epochs left INFERNO no better than cross-entropy (the training report said "not
    #: converged"), 40 made it 3.8 % better (docs/training.md)
    inferno_epochs: int = 40
    inferno_bs: int = 2000
    inferno_lr: float = 1e-3
    ce_epochs: int = 10
    ce_bs: int = 256
    ce_lr: float = 1e-3
    seed: int = 0
    limit_events: int = 100_000
    limit_splits: int = 2
    #: which epoch of each INFERNO model is kept: "hard_sigma" (lowest hard-binned objective on its validation fold,
    #: :class:`~lumin_inferno.callbacks.HardSigmaMetric`) or "loss" (lowest soft validation loss)
    select_on: str = "hard_sigma"
    #: stop an INFERNO model after this many epochs without improvement of the selection metric (None: never)
    patience: Optional[int] = None
    #: add a row for the Bayes-optimal classifier (exact densities) binned like cross-entropy
    oracle: bool = True

    def __post_init__(self) -> None:
        unknown = [m for m in self.methods if m not in METHODS]
        if unknown:
            raise ConfigurationError(f"unknown method(s) {unknown}; choose from {list(METHODS)}")
        if len(set(self.methods)) != len(list(self.methods)):  # each is one ensemble in one folder
            raise ConfigurationError(f"methods given twice: {list(self.methods)}")
        if self.toy not in TOYS:
            raise ConfigurationError(f"unknown toy {self.toy!r}; choose from {list(TOYS)}")
        pois = TOYS[self.toy]().pois
        foreign = [m for m in self.methods if not set(METHODS[m].pois) <= set(pois)]
        if foreign:
            raise ConfigurationError(f"method(s) {foreign} need POIs the {self.toy!r} toy does not have ({pois})")
        check_training_settings(
            self, ("n_train_per_process", "n_test_per_process", "n_models", "n_bins", "ce_score_bins", "inferno_epochs",
                   "inferno_bs", "ce_epochs", "ce_bs", "width", "depth", "limit_events"),
            self.n_train_per_process * len(TOYS[self.toy]().processes) // self.n_folds, ("inferno_bs",),
            "n_train_per_process")
        if self.n_models > self.n_folds:
            raise ConfigurationError(f"n_models ({self.n_models}) must be ≤ n_folds ({self.n_folds}): one fold each")
        if self.limit_splits < 2:
            raise ConfigurationError(f"limit_splits must be ≥ 2 (the limit's Monte Carlo error), got {self.limit_splits}")

    @classmethod
    def full(cls, **overrides) -> "AnalysisStudySettings":
        """Larger samples, more models and epochs, a more precise limit (run time in docs/analysis_study.md)."""
        pois = set(TOYS[overrides.get("toy", "analysis")]().pois) if overrides.get("toy", "analysis") in TOYS else set()
        base: Dict[str, Any] = dict(methods=[m for m in METHODS if set(METHODS[m].pois) <= pois], n_train_per_process=50_000,
                                    n_test_per_process=100_000, n_models=3,
                                    inferno_epochs=60, ce_epochs=20, limit_events=200_000, limit_splits=4)
        base.update(overrides)
        return cls(**base)


# ------------------------------------------------------------------------------------------------------ training
def _builder(settings: AnalysisStudySettings, fy, n_out: int, inferno: bool):
    from lumin.nn.models.helpers import CatEmbedder
    from lumin.nn.models.model_builder import ModelBuilder

    model_args = {"body": {"width": settings.width, "depth": settings.depth, "act": "relu"}}
    with contextlib.redirect_stdout(io.StringIO()):
        if inferno:
            model_args["tail"] = {"temperature": settings.temperature}
            return ModelBuilder(objective="classification", n_out=n_out, cont_feats=fy.cont_feats,
                                cat_embedder=CatEmbedder([], []), model_args=model_args, tail=SoftmaxTemperatureTail,
                                opt_args={"opt": "adam", "lr": settings.inferno_lr})
        return ModelBuilder(objective="multiclass", n_out=n_out, cont_feats=fy.cont_feats,
                            cat_embedder=CatEmbedder([], []), model_args=model_args,
                            opt_args={"opt": "adam", "lr": settings.ce_lr})


def training_analysis(toy: AnalysisToy, method: Method, n_bins: int) -> Analysis:
    """The Analysis a method trains on. Approximate: every systematic as the fold file stores it. Exact: the
    energy scales as exact input shifts; the weight systematics are left out of the loss (``InfernoCallback`` reads
    no fold-file columns), the normalisations and the control region stay."""
    from dataclasses import replace

    kind = "inputs" if method.callback == "approx" else "transform"
    a = toy.analysis(n_bins, kind=kind)
    if method.callback == "exact":
        a = a.without_nuisances([s.name for s in a.systematics_of("weights")])
    return replace(a, objective=Objective(method.objective, pois=method.pois or tuple(toy.pois)))


def inferno_method_tasks(settings: AnalysisStudySettings, toy: AnalysisToy, method: Method, fy, fy_pipe,
                         savepath: Path, seed: int, fingerprint: str) -> tuple:
    """The builder and the ``settings.n_models`` member tasks of ``method`` (approximate on ``fy``, exact on
    ``fy_pipe``, the fold file with its input pipe) with the temperature schedule and, by default, selection on the
    hard-binned validation objective; train them with :func:`~lumin_inferno.studies.common.train_ensembles`."""
    builder = _builder(settings, fy, settings.n_bins, inferno=True)
    a = training_analysis(toy, method, settings.n_bins)
    cb = ApproxInfernoCallback if method.callback == "approx" else InfernoCallback
    cbs = [partial(cb, a)]
    if settings.temperature_start is not None:
        cbs.append(partial(TemperatureSchedule, start=settings.temperature_start, end=settings.temperature))
    kwargs = {}
    if settings.select_on == "hard_sigma":  # the evaluation's likelihood, with the training's objective
        selection = replace(toy.analysis(settings.n_bins, kind="inputs"), objective=a.objective)
        kwargs = dict(metric_partials=[partial(HardSigmaMetric, selection)], patience=settings.patience)
    return builder, ensemble_tasks(fy if method.callback == "approx" else fy_pipe, builder, settings.n_models,
                                   settings.inferno_bs, settings.inferno_epochs, savepath, cbs, seed=seed,
                                   fingerprint=fingerprint, **kwargs)


def train_inferno_method(settings: AnalysisStudySettings, toy: AnalysisToy, method: Method, fy, fy_pipe,
                         savepath: Path, seed: int, fingerprint: str, client=None) -> tuple:
    """Train :func:`inferno_method_tasks` (on ``client``'s Dask workers if given); returns (builder, (results,
    histories))."""
    builder, tasks = inferno_method_tasks(settings, toy, method, fy, fy_pipe, savepath, seed, fingerprint)
    return builder, train_ensembles([tasks], client)[0]


# ---------------------------------------------------------------------------------------------------- evaluation
def _class_score_bin_functions(classifiers: list, reference: np.ndarray, reference_weights: np.ndarray,
                               n_score: int) -> list:
    """Per classifier (a function inputs → class probabilities) and, for several, for their ensemble (mean of the
    class probabilities, as LUMIN's ``Ensemble``): argmax class × ``n_score`` score quantiles, edges from the
    reference sample (equal simulated yield per score bin)."""
    def make(predict: Callable[[np.ndarray], np.ndarray]):
        edges = class_score_edges(predict(reference), n_score, reference_weights)
        return lambda x: class_score_bins(predict(x), edges)

    fns = [make(c) for c in classifiers]
    if len(classifiers) > 1:
        fns.append(make(lambda x: np.mean([c(x) for c in classifiers], axis=0)))
    return fns


def oracle_probabilities(toy: AnalysisToy, pipe_path: Path) -> Callable[[np.ndarray], np.ndarray]:
    """The Bayes-optimal balanced classifier of the toy: p(process | x) = f_p(x) / Σ_q f_q(x) from the exact
    densities at the nominal point, on standardised inputs (undone with the fold files' input pipe). Binned like the
    cross-entropy classifier it shows how much of the baseline's gap is the network and how much the binning."""
    import torch

    pipe = json.loads(Path(pipe_path).read_text())
    mean, scale = np.asarray(pipe["mean"]), np.asarray(pipe["scale"])
    theta = torch.tensor([p.nominal for p in toy.parameters()], dtype=torch.float64)

    def probs(x: np.ndarray) -> np.ndarray:
        phys = torch.as_tensor(np.asarray(x, dtype=np.float64) * scale + mean)
        with torch.no_grad():
            f = torch.stack([toy.intensity(phys, theta, only=[p.name]) / p.nominal_yield for p in toy.processes], 1)
        return (f / f.sum(1, keepdim=True).clamp_min(1e-300)).numpy()

    return probs


def _evaluate(analysis: Analysis, stat_only: Analysis, fn, test_fy, test: dict) -> dict:
    """σ per POI (profile, every nuisance), their correlation (Hessian), bin occupancy, and σ stat-only. ``test``
    is ``test_fy``'s fold 0, read once: its nominal bins serve the stat-only model and the occupancy."""
    model = foldfile_template_model(analysis, fn, test_fy)
    sigma = expected_poi_uncertainties(model)
    pois = analysis.poi_names
    cov = poi_covariance(fisher_information(model), [model.index(p) for p in pois]).detach().numpy()
    bins = np.asarray(fn(test["inputs"]))
    stat = expected_poi_uncertainties(template_model(stat_only, hard_summary_templates(
        stat_only, bins, test["targets"], test["weights"])))  # no systematics: the nominal bins are all it needs
    occupancy = np.bincount(bins, minlength=analysis.n_bins)
    rho = float(cov[0, 1] / np.sqrt(cov[0, 0] * cov[1, 1])) if len(pois) > 1 else 0.0
    return {"sigma": sigma, "sigma_stat": stat, "correlation": rho,
            "covariance": cov.tolist(), "empty_bins": int((occupancy == 0).sum()),
            "occupancy": (occupancy / max(occupancy.sum(), 1)).tolist(), "model": model}


def _entry(evals: List[dict], n_models: int, pois: List[str], val: Optional[List[float]] = None) -> dict:
    """Summaries over members; the aligned ensemble's figures (``"ensemble"``), those of the members' merged joint
    bins (``"merged"``, INFERNO) and those of the member of lowest validation objective (``"selected"``, from each
    member's own validation fold: the test file is not used)."""
    members, ensemble = evals[:n_models], evals[n_models:]
    out: Dict[str, Any] = {"per_model": [{k: v for k, v in e.items() if k != "model"} for e in members]}
    chosen = None if val is None else int(np.argmin(val))
    for key in ("sigma", "sigma_stat"):
        out[key] = {p: summarise([e[key][p] for e in members]) for p in pois}
        for p in pois:
            if ensemble:
                out[key][p]["ensemble"] = ensemble[0][key][p]
            if len(ensemble) > 1:
                out[key][p]["merged"] = ensemble[1][key][p]
            if chosen is not None:
                out[key][p]["selected"] = members[chosen][key][p]
    if val is not None:  # and so chosen
        out["selected_model"] = chosen
        out["validation_objective"] = list(val)
    out["correlation"] = summarise([e["correlation"] for e in members])
    out["empty_bins"] = [e["empty_bins"] for e in members]
    if ensemble:
        out["correlation"]["ensemble"] = ensemble[0]["correlation"]
        out["ensemble_covariance"] = ensemble[0]["covariance"]
    out["covariance_model0"] = members[0]["covariance"]
    return out


# ----------------------------------------------------------------------------------------------------- the study
def run_analysis_study(settings: AnalysisStudySettings, verbose: bool = True, client=None) -> dict:
    """Run the study; write ``results.json``/``.md``/``.csv``, ``settings.json``, LUMIN's ``train.log`` and
    ``plots/`` into ``settings.outdir``; ``results.json`` is written last (its presence marks a finished run)."""
    from fastprogress.fastprogress import progress_bar
    from ..data.foldfiles import open_foldfile

    t0 = time.time()
    out = Path(settings.outdir).resolve()
    out.mkdir(parents=True, exist_ok=True)
    for stale in ("results.json", "results.md", "results.csv"):  # an unfinished rerun must not look complete
        (out / stale).unlink(missing_ok=True)
    atomic_write_text(out / "settings.json", json.dumps(asdict(settings), indent=2))
    seed_everything(settings.seed)
    say = print if verbose else (lambda *a, **k: None)
    bar = (lambda it: progress_bar(list(it), display=True)) if verbose else (lambda it: it)
    toy = TOYS[settings.toy]()

    say(f"[analysis-study] writing fold files to {out / 'data'}")
    train_path, test_path, pipe_path = toy.write_foldfiles(out / "data", settings.n_train_per_process,
                                                           settings.n_test_per_process, settings.n_folds,
                                                           settings.seed)
    fy = open_foldfile(train_path)
    fy_pipe = open_foldfile(train_path, input_pipe=toy.input_pipe(pipe_path))  # exact shifts in physical units
    test_fy = open_foldfile(test_path)
    test = test_fy.get_fold(0)
    reference = fy.get_fold(0)  # binning edges and ensemble alignment; not the evaluation sample

    jobs = [(CE, None)] + [(name, METHODS[name]) for name in settings.methods]
    ensembles = []
    for i, (name, method) in enumerate(jobs):
        seed = settings.seed + 1000 * (i + 1)  # each method's models independent of the others'
        fingerprint = json.dumps({**asdict(settings), "outdir": None, "job": name}, sort_keys=True)
        if method is None:
            builder = _builder(settings, fy, len(toy.processes), inferno=False)
            tasks = ensemble_tasks(fy, builder, settings.n_models, settings.ce_bs, settings.ce_epochs,
                                   out / "weights" / "ce", seed=seed, fingerprint=fingerprint,
                                   train_on_weights=False)  # balanced: equal events per class
        else:
            builder, tasks = inferno_method_tasks(settings, toy, method, fy, fy_pipe, out / "weights" / name, seed,
                                                  fingerprint)
        ensembles.append((name, method, builder, tasks))
    say(f"[analysis-study] training {sum(len(e[-1]) for e in ensembles)} ensemble members "
        f"({settings.n_models} per method{', on Dask' if client is not None else ''})")
    trained: Dict[str, tuple] = {}
    for (name, method, builder, _), (results, histories) in zip(
            ensembles, train_ensembles([e[-1] for e in ensembles], client, progress=verbose)):
        val = [float(r["hard_sigma"]) for r in results] if method and settings.select_on == "hard_sigma" else None
        trained[name] = (method, load_models(results, builder), histories, val)
    say(f"[analysis-study] trained {len(trained)} ensembles ({time.time() - t0:.0f}s)")

    say("[analysis-study] evaluating on the test file (profile likelihood: every nuisance, control region, MC stats)")
    table: Dict[str, dict] = {}
    models_for_plots: Dict[str, object] = {}
    # CE's members and the exact-density classifier are functions inputs → class probabilities, binned alike
    classifiers: Dict[str, List[Callable[[np.ndarray], np.ndarray]]] = {CE: [partial(_predict, m) for m in trained[CE][1]]}
    if settings.oracle:
        classifiers[ORACLE] = [oracle_probabilities(toy, pipe_path)]
        trained[ORACLE] = (None, classifiers[ORACLE], None, None)
    for name, (method, models, _, val) in bar(list(trained.items())):
        n_bins = len(toy.processes) * settings.ce_score_bins if method is None else settings.n_bins
        full = toy.analysis(n_bins, kind="inputs")
        if method is None:
            fns = _class_score_bin_functions(classifiers[name], reference["inputs"], reference["weights"],
                                             settings.ce_score_bins)
        else:  # members, their aligned mean, their joint bins merged on the training file for their objective
            merge = replace(full, objective=training_analysis(toy, method, n_bins).objective)
            fns = inferno_bin_functions(models, reference["inputs"], merge, lambda fn: EventBins.concatenate(
                [foldfile_event_bins(merge, fn, fy, i) for i in range(fy.n_folds)]))
        stat_only = full.without_nuisances(full.nuisance_names())
        evals = [_evaluate(full, stat_only, fn, test_fy, test) for fn in fns]
        table[name] = _entry(evals, len(models), toy.pois, val)
        table[name]["label"] = name if method is None else method.label
        table[name]["n_bins"] = n_bins
        models_for_plots[name] = evals[min(len(models), len(evals) - 1)]["model"]  # the aligned ensemble (or the member)

    say("[analysis-study] the unbinned limit (Fisher information of the exact densities)")
    limit, limit_stat = toy.limits(settings.limit_events, settings.limit_splits, seed=settings.seed + 99)
    limits = {"systematics": asdict(limit), "stat_only": asdict(limit_stat)}
    _compare(table, limit, limit_stat, toy.pois)
    warnings = _report(table, trained, toy)

    _plots(out / "plots", trained, models_for_plots, table, limit, toy.pois)
    md = format_table(table, limit, limit_stat, toy) + "\n\n**Training report**\n\n" + (
        "\n".join(f"- {w}" for w in warnings) if warnings else "No warnings.")
    results = {"settings": asdict(settings), "limit": limits, "methods": table, "warnings": warnings,
               "runtime_s": time.time() - t0}
    atomic_write_text(out / "results.md", md + "\n")
    atomic_write_text(out / "results.csv", _csv(table, toy.pois))
    atomic_write_text(out / "results.json", json.dumps(results, indent=2))
    say(md)
    say(f"[analysis-study] done in {time.time() - t0:.0f}s; outputs in {out} (plots in {out / 'plots'})")
    return results


def _compare(table: Dict[str, dict], limit, limit_stat, pois: List[str]) -> None:
    """Distance of each method's median (and ensemble) to the limit and its gain over cross-entropy, in %."""
    for name, row in table.items():
        for key, lim in (("sigma", limit), ("sigma_stat", limit_stat)):
            row[f"{key}_to_limit_pct"] = {p: 100.0 * (row[key][p]["median"] / lim.sigma[p] - 1.0) for p in pois}
            row[f"{key}_vs_ce_pct"] = {p: 100.0 * (row[key][p]["median"] / table[CE][key][p]["median"] - 1.0)
                                       for p in pois}
            for which in ("ensemble", "merged"):
                if which in row[key][pois[0]]:
                    row[f"{key}_{which}_to_limit_pct"] = {
                        p: 100.0 * (row[key][p][which] / lim.sigma[p] - 1.0) for p in pois}
                    row[f"{key}_{which}_vs_ce_pct"] = {
                        p: 100.0 * (row[key][p][which] / table[CE][key][p]["median"] - 1.0) for p in pois}


def _report(table: Dict[str, dict], trained: dict, toy: AnalysisToy) -> List[str]:
    """The training report (:func:`~lumin_inferno.evaluation.training_report`) of every INFERNO model: σ of each
    POI of its objective against cross-entropy's median, its empty test bins, its selection metric's convergence."""
    out: List[str] = []
    for name, (method, models, histories, _) in trained.items():
        if method is None:
            continue
        row = table[name]
        for i, member in enumerate(row["per_model"]):
            history = histories[i][1].get("hard_sigma")
            for j, p in enumerate(method.pois or toy.pois):
                out += training_report(f"{row['label']}, model {i}, σ({p})", member["sigma"][p],
                                       table[CE]["sigma"][p]["median"],
                                       member["occupancy"] if j == 0 else None, history if j == 0 else None)
    return out


def _plots(plot_dir: Path, trained: dict, models: dict, table: dict, limit, pois: List[str]) -> None:
    """Training curves, templates per channel with variations (each method's ensemble), σ per POI against the limit,
    and the 2-D (μ_ggH, μ_qqH) 68 % CL contours of every method's ensemble next to the limit's."""
    inferno = {name: h for name, (m, _, h, _) in trained.items() if m is not None}
    if inferno:
        plot_training_curves(inferno, plot_dir / "training_curves_inferno.png", sqrt=False)
        if all("hard_sigma" in h[1] for hs in inferno.values() for h in hs):
            plot_training_curves(inferno, plot_dir / "training_curves_hard_sigma.png", metric="hard_sigma")
    plot_training_curves({CE: trained[CE][2]}, plot_dir / "training_curves_ce.png", sqrt=False)
    for name, model in models.items():
        slug = name.replace(" ", "_").replace("-", "_")
        plot_channel_templates(model, plot_dir / f"templates_{slug}.png",
                               title=table[name]["label"])
    plot_poi_sigmas({table[n]["label"]: table[n]["sigma"] for n in table}, limit.sigma,
                    plot_dir / "sigma_vs_limit.png", limit.sigma_error)
    if len(pois) < 2:
        return
    ellipses = {}
    for name, row in table.items():
        cov = row.get("ensemble_covariance", row["covariance_model0"])
        ellipses[row["label"]] = ((1.0, 1.0), np.asarray(cov)[:2, :2])
    s = np.array([limit.sigma[p] for p in pois[:2]])
    ellipses["limit (unbinned)"] = ((1.0, 1.0), np.outer(s, s) * np.array([[1, limit.correlation], [limit.correlation, 1]]))
    plot_poi_contours(ellipses, plot_dir / "poi_contours.png", pois=tuple(pois[:2]))


# ------------------------------------------------------------------------------------------------------ tables
def _fmt(e: dict) -> str:
    ens = f"; ens. {e['ensemble']:.3f}" if "ensemble" in e else ""
    sel = f"; sel. {e['selected']:.3f}" if "selected" in e else ""
    return f"{e['median']:.3f} [{e['q16']:.3f}, {e['q84']:.3f}]{ens}{sel}"


def format_table(table: Dict[str, dict], limit, limit_stat, toy: AnalysisToy) -> str:
    """Markdown tables (all systematics; statistical only): σ of each POI (median [16 %, 84 %] over models; for
    INFERNO also its members' joint bins merged into one summary, a row of its own), correlation of the first two POIs,
    distance to the limit and gain over cross-entropy's median."""
    pois = toy.pois
    free = [f.name for f in toy.factors if not f.poi]
    floating = f", {', '.join(free)} free" if free else ""
    n_cols = 3 + 3 * len(pois)
    out = []
    for key, lim, title in (("sigma", limit, f"all systematics ({len(toy.nuisance_names)} nuisances{floating}, "
                                             "MC statistics)"),
                            ("sigma_stat", limit_stat, f"statistical only (nuisances fixed{floating}, MC statistics)")):
        out.append(f"**{title}**\n")
        out.append("| method | bins | " + " | ".join(f"σ({p})" for p in pois) + " | ρ | "
                   + " | ".join(f"{p} − limit" for p in pois) + " | " + " | ".join(f"{p} vs CE" for p in pois) + " |")
        out.append("|" + "---|" * n_cols)
        for name, row in table.items():
            rho = f"{row['correlation']['median']:+.3f}" if key == "sigma" and len(pois) > 1 else "–"
            d, g = row[f"{key}_to_limit_pct"], row[f"{key}_vs_ce_pct"]
            out.append(f"| {row['label']} | {row['n_bins']} | " + " | ".join(_fmt(row[key][p]) for p in pois)
                       + f" | {rho} | " + " | ".join(f"{d[p]:+.1f} %" for p in pois) + " | "
                       + " | ".join(f"{g[p]:+.1f} %" for p in pois) + " |")
            if f"{key}_merged_to_limit_pct" in row:
                d, g = row[f"{key}_merged_to_limit_pct"], row[f"{key}_merged_vs_ce_pct"]
                out.append(f"| {row['label']}, members merged | {row['n_bins']} | "
                           + " | ".join(f"{row[key][p]['merged']:.3f}" for p in pois) + " | – | "
                           + " | ".join(f"{d[p]:+.1f} %" for p in pois) + " | "
                           + " | ".join(f"{g[p]:+.1f} %" for p in pois) + " |")
        rho = f"{lim.correlation:+.3f}" if key == "sigma" and len(pois) > 1 else "–"
        out.append("| limit (unbinned, ± MC error) | – | "
                   + " | ".join(f"{lim.sigma[p]:.3f} ± {lim.sigma_error[p]:.3f}" for p in pois)
                   + f" | {rho} |" + " |" * (2 * len(pois)))
        out.append("")
    empty = ", ".join(f"{row['label']}: {row['empty_bins']}" for row in table.values())
    out.append(f"Empty bins per model on the test file: {empty}.")
    return "\n".join(out)


def _csv(table: Dict[str, dict], pois: List[str]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["method", "label", "n_bins", "errors", "poi", "median", "q16", "q84", "ensemble", "merged",
                "to_limit_pct", "vs_ce_pct"])
    for name, row in table.items():
        for key in ("sigma", "sigma_stat"):
            for p in pois:
                e = row[key][p]
                w.writerow([name, row["label"], row["n_bins"], "all" if key == "sigma" else "stat_only", p, e["median"],
                            e["q16"], e["q84"], e.get("ensemble", ""), e.get("merged", ""), row[f"{key}_to_limit_pct"][p],
                            row[f"{key}_vs_ce_pct"][p]])
    return buf.getvalue()
