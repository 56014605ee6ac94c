"""A plain LUMIN training script, turned into an INFERNO training by the lines marked `# INFERNO`.

    .venv/bin/python examples/train_inferno_paper.py            # ~1 minute on 2 CPU cores
    .venv/bin/python examples/train_inferno_paper.py --tiny     # seconds (what the test suite runs)
"""

import argparse
import contextlib
import io
import random
from functools import partial
from pathlib import Path

import numpy as np
import torch
from lumin.nn.data.fold_yielder import FoldYielder
from lumin.nn.ensemble.ensemble import Ensemble
from lumin.nn.models.helpers import CatEmbedder
from lumin.nn.models.model_builder import ModelBuilder
from lumin.nn.training.train import train_models

from lumin_inferno import InfernoCallback, SoftmaxTemperatureTail, align_ensemble  # INFERNO
from lumin_inferno.data import paper_benchmark
from lumin_inferno.data import SIGNAL_YIELD, write_paper_foldfiles
from lumin_inferno.evaluation import analysis_template_model
from lumin_inferno.statistics import expected_poi_uncertainty


def main(outdir: str = "outputs/example", tiny: bool = False) -> float:
    torch.manual_seed(0)
    np.random.seed(0)  # LUMIN shuffles batches with numpy's global generator
    random.seed(0)  # and the order of the training folds with Python's
    out = Path(outdir).resolve()
    n_train, n_test, epochs, bs = (3000, 4000, 2, 500) if tiny else (20_000, 100_000, 15, 2000)
    train_file, test_file = write_paper_foldfiles(out / "data", n_train, n_test, n_folds=3 if tiny else 5)
    fy = FoldYielder(train_file)

    with contextlib.redirect_stdout(io.StringIO()):
        builder = ModelBuilder(
            objective="classification",
            n_out=10,  # INFERNO: 10 bins instead of 1 output
            cont_feats=fy.cont_feats,
            cat_embedder=CatEmbedder([], []),
            model_args={"body": {"width": 100, "depth": 2}, "tail": {"temperature": 0.1}},  # INFERNO
            tail=SoftmaxTemperatureTail,  # INFERNO
            opt_args={"opt": "adam", "lr": 1e-3},
        )
    benchmark = paper_benchmark(2)  # INFERNO: r and λ float freely
    analysis = benchmark.analysis(n_bins=10, kind="transform")  # INFERNO: the measurement, described once
    results, _, _ = train_models(
        fy,
        n_models=2,
        bs=bs,
        model_builder=builder,
        n_epochs=epochs,
        cb_partials=[partial(InfernoCallback, analysis, transform=benchmark.transform())],  # INFERNO
        savepath=out / "weights",
        live_fdbk=False,
    )
    ensemble = Ensemble.from_results(results, size=2, model_builder=builder, metric="loss")

    test = FoldYielder(test_file).get_fold(0)
    # INFERNO bins are unordered classes: align the members' bins before averaging them (on validation inputs)
    aligned = align_ensemble(ensemble, fy.get_fold(0)["inputs"])  # INFERNO
    print("hard bins of 5 test events:", aligned.predict_bins(test["inputs"][:5]))
    template_model = analysis_template_model(
        analysis,
        aligned,  # a callable: inputs -> hard bins
        test["inputs"],
        test["targets"],
        test["weights"],
        transform=benchmark.transform(),
    )
    sigma = SIGNAL_YIELD * expected_poi_uncertainty(template_model, method="profile")  # the POI is μ = s / 50
    print(f"expected uncertainty on s (ensemble, profile likelihood, benchmark 2): {sigma:.2f} events")
    return sigma


if __name__ == "__main__":
    p = argparse.ArgumentParser()
    p.add_argument("--outdir", default="outputs/example")
    p.add_argument("--tiny", action="store_true")
    a = p.parse_args()
    main(a.outdir, a.tiny)
