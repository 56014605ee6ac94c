"""The INFERNO paper study on LUMIN: cross-entropy vs INFERNO on the paper's benchmarks, end to end.

Writes fold files, trains with LUMIN's ``train_models`` (a cross-entropy classifier ensemble, and an INFERNO ensemble
per benchmark via :class:`~lumin_inferno.callbacks.InfernoCallback`), and evaluates each trained model's expected
σ(s) on an Asimov dataset built from a large, independent test file (profile likelihood, nuisances profiled).
"""

from __future__ import annotations

import contextlib
import io
import json
import time
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path
from typing import Dict, List, Optional

import numpy as np
import torch

from ..callbacks.inferno import InfernoCallback
from ..data.paper import TEMPLATE_SHIFTS, paper_benchmark, write_paper_foldfiles
from ..evaluation.templates import argmax_bins, asimov_template_model, expected_uncertainty, uniform_bins
from ..models.tails import SoftmaxTemperatureTail

__all__ = ["StudySettings", "run_paper_study", "PAPER_RESULTS"]

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
    benchmarks: List[int] = field(default_factory=lambda: [2])
    n_train_per_class: int = 20_000
    n_test_per_class: int = 100_000
    n_folds: int = 5
    n_models: int = 2
    n_bins: int = 10
    temperature: float = 0.1
    width: int = 100
    depth: int = 2
    inferno_epochs: int = 30
    inferno_bs: int = 2000
    inferno_lr: float = 1e-3
    ce_epochs: int = 10
    ce_bs: int = 256
    ce_lr: float = 1e-3
    seed: int = 27
    eval_method: str = "profile"

    @classmethod
    def full(cls, **overrides) -> "StudySettings":
        """Paper-scale settings: 100k + 100k training events, 500k + 500k test events, more models and epochs."""
        base = dict(
            n_train_per_class=100_000, n_test_per_class=500_000, n_folds=10, n_models=10, inferno_epochs=50, ce_epochs=30
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


def _train(fy, settings: StudySettings, builder, bs: int, epochs: int, savepath: Path, log, cb_partials=None):
    from lumin.nn.training.train import train_models

    savepath.mkdir(parents=True, exist_ok=True)
    for i in range(settings.n_models):  # train_models shells out `rm -r` on these; create them so it stays quiet
        (savepath / f"model_id_{i}").mkdir(exist_ok=True)
    with contextlib.redirect_stdout(log):
        results, histories, _ = train_models(
            fy,
            n_models=settings.n_models,
            bs=bs,
            model_builder=builder,
            n_epochs=epochs,
            cb_partials=cb_partials,
            savepath=savepath,
            live_fdbk=False,
        )
    return results, histories


def _load_models(results, builder) -> list:
    from lumin.nn.models.model import Model

    models = []
    for r in results:
        m = Model(builder)
        idx = int(Path(r["path"]).name.split("_")[-1])
        m.load(str(Path(r["path"]) / f"train_{idx}.h5"))
        models.append(m)
    return models


def _predict(model, x: np.ndarray) -> np.ndarray:
    return model.predict(x, bs=50_000)


def _summary(values: List[float]) -> Dict[str, float]:
    v = np.asarray(values, dtype=float)
    return {"median": float(np.median(v)), "q16": float(np.quantile(v, 0.16)), "q84": float(np.quantile(v, 0.84))}


def run_paper_study(settings: StudySettings, verbose: bool = True) -> dict:
    """Run the study and write ``results.json``, ``results.md`` and ``settings.json`` into ``settings.outdir``.

    Returns a dict: per benchmark, σ(s) per model for cross-entropy and INFERNO with median/16 %/84 % summaries and
    the paper's values.
    """
    from fastprogress.fastprogress import progress_bar
    from lumin.nn.data.fold_yielder import FoldYielder

    t0 = time.time()
    out = Path(settings.outdir).resolve()
    out.mkdir(parents=True, exist_ok=True)
    (out / "settings.json").write_text(json.dumps(asdict(settings), indent=2))
    torch.manual_seed(settings.seed)
    np.random.seed(settings.seed)
    log = open(out / "train.log", "w")
    say = print if verbose else (lambda *a, **k: None)

    say(f"[paper-study] writing fold files to {out / 'data'}")
    train_path, test_path = write_paper_foldfiles(
        out / "data", settings.n_train_per_class, settings.n_test_per_class, settings.n_folds, settings.seed
    )
    fy = FoldYielder(train_path)
    test = FoldYielder(test_path).get_fold(0)
    x_test, y_test, w_test = test["inputs"], test["targets"], test["weights"]

    jobs = [("cross-entropy", None)] + [(f"INFERNO {k}", k) for k in settings.benchmarks]
    trained = {}
    for name, k in progress_bar(jobs, display=verbose) if verbose else jobs:
        inferno = k is not None
        builder = _model_builder(settings, fy, inferno)
        cbs = [partial(InfernoCallback, **paper_benchmark(k).callback_kwargs())] if inferno else None
        results, histories = _train(
            fy,
            settings,
            builder,
            settings.inferno_bs if inferno else settings.ce_bs,
            settings.inferno_epochs if inferno else settings.ce_epochs,
            out / "weights" / (f"inferno_{k}" if inferno else "ce"),
            log,
            cbs,
        )
        trained[name] = (k, _load_models(results, builder), histories)
        say(f"[paper-study] trained {name}: {settings.n_models} models ({time.time() - t0:.0f}s)")

    table = {}
    for k in settings.benchmarks:
        bm = paper_benchmark(k)
        row: Dict[str, object] = {"benchmark": k}
        for name, (trained_k, models, _) in trained.items():
            if trained_k not in (None, k):
                continue
            if trained_k is None:
                bin_fn = lambda x, m=None: uniform_bins(_predict(m, x), settings.n_bins)  # noqa: E731
            else:
                bin_fn = lambda x, m=None: argmax_bins(_predict(m, x))  # noqa: E731
            sigmas = []
            for m in models:
                tm = asimov_template_model(
                    partial(bin_fn, m=m),
                    x_test,
                    y_test,
                    w_test,
                    settings.n_bins,
                    bm.poi,
                    bm.background,
                    bm.shape_nuisances,
                    bm.callback_kwargs()["transform"],
                    TEMPLATE_SHIFTS,
                )
                sigmas.append(expected_uncertainty(tm, settings.eval_method))
            key = "ce" if trained_k is None else "inferno"
            row[key] = {"per_model": sigmas, **_summary(sigmas)}
        row.update(PAPER_RESULTS[k])
        table[k] = row

    results = {"settings": asdict(settings), "benchmarks": table, "runtime_s": time.time() - t0}
    (out / "results.json").write_text(json.dumps(results, indent=2))
    md = format_table(table)
    (out / "results.md").write_text(md + "\n")
    say(md)
    say(f"[paper-study] done in {time.time() - t0:.0f}s; outputs in {out}")
    log.close()
    return results


def format_table(table: dict) -> str:
    """Markdown table of σ(s): ours (median [16 %, 84 %] over models) next to the paper's values."""
    lines = [
        "| benchmark | cross-entropy σ(s) | INFERNO σ(s) | paper CE | paper INFERNO | analytic limit |",
        "|---|---|---|---|---|---|",
    ]
    for k, row in sorted(table.items()):
        def fmt(entry):
            return f"{entry['median']:.2f} [{entry['q16']:.2f}, {entry['q84']:.2f}]" if entry else "–"

        lines.append(
            f"| {k} | {fmt(row.get('ce'))} | {fmt(row.get('inferno'))} | {row['paper_ce']:.2f} | "
            f"{row['paper_inferno']:.2f} | {row['analytic']:.2f} |"
        )
    return "\n".join(lines)
