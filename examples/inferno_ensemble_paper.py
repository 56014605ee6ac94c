"""An ensemble of INFERNO models with LUMIN's ``Ensemble``: why the bins must be aligned, and what that buys.

Trains ``n_models`` INFERNO models on the paper's benchmark 2 with LUMIN's ``train_models``, builds LUMIN's
``Ensemble`` (members weighted by 1/validation loss = 1/σ²(s)), and evaluates the expected σ(s) on an independent
test file for: each single model, LUMIN's own ``Ensemble.predict`` (column-by-column average of unaligned bins), the
vote of LUMIN's ensemble with ``HardBinPredHandler`` (also unaligned), and the aligned ensemble
(:func:`~lumin_inferno.evaluation.ensemble.align_ensemble`). Then saves, reloads and exports the aligned ensemble to
ONNX and checks onnxruntime against torch.

    .venv/bin/python examples/inferno_ensemble_paper.py                 # ~2-4 minutes on 2 CPU cores
    .venv/bin/python examples/inferno_ensemble_paper.py --tiny          # seconds (what the test suite runs)
"""

import argparse
import contextlib
import io
import json
import time
from functools import partial
from pathlib import Path

import numpy as np
import torch
from lumin.nn.data.fold_yielder import FoldYielder
from lumin.nn.ensemble.ensemble import Ensemble
from lumin.nn.models.helpers import CatEmbedder
from lumin.nn.models.model_builder import ModelBuilder
from lumin.nn.training.train import train_models

from lumin_inferno import HardBinPredHandler, InfernoCallback, SoftmaxTemperatureTail
from lumin_inferno.data import paper_benchmark
from lumin_inferno.data import SIGNAL_YIELD, write_paper_foldfiles
from lumin_inferno.evaluation import analysis_template_model, argmax_bins
from lumin_inferno.statistics import expected_poi_uncertainty
from lumin_inferno.evaluation.ensemble import align_ensemble, load_inferno_ensemble, save_inferno_ensemble


def main(outdir: str = "outputs/inferno_ensemble", tiny: bool = False, n_models: int = 2, seed: int = 0) -> dict:
    t0 = time.time()
    torch.manual_seed(seed)
    np.random.seed(seed)
    out = Path(outdir).resolve()
    n_train, n_test, epochs, bs, width = (3000, 4000, 2, 500, 32) if tiny else (20_000, 100_000, 15, 2000, 100)
    train_file, test_file = write_paper_foldfiles(
        out / "data", n_train, n_test, n_folds=3 if tiny else 5, seed=27 + seed
    )
    fy = FoldYielder(train_file)
    with contextlib.redirect_stdout(io.StringIO()):
        builder = ModelBuilder(
            objective="classification",
            n_out=10,
            cont_feats=fy.cont_feats,
            cat_embedder=CatEmbedder([], []),
            model_args={"body": {"width": width, "depth": 2}, "tail": {"temperature": 0.1}},
            tail=SoftmaxTemperatureTail,
            opt_args={"opt": "adam", "lr": 1e-3},
        )
    benchmark = paper_benchmark(2)
    analysis, transform = benchmark.analysis(n_bins=10, kind="transform"), benchmark.transform()
    for i in range(n_models):  # train_models shells out `rm -r` on these; create them so it stays quiet
        (out / "weights" / f"model_id_{i}").mkdir(parents=True, exist_ok=True)
    with contextlib.redirect_stdout(io.StringIO()):
        results, _, _ = train_models(
            fy, n_models=n_models, bs=bs, model_builder=builder, n_epochs=epochs, live_fdbk=False,
            cb_partials=[partial(InfernoCallback, analysis, transform=transform)], savepath=out / "weights",
        )
        ensemble = Ensemble.from_results(results, size=n_models, model_builder=builder, metric="loss", verbose=False)

    test = FoldYielder(test_file).get_fold(0)
    x, y, w = test["inputs"], test["targets"], test["weights"]
    aligned = align_ensemble(ensemble, x)  # permutations fixed once, on the nominal test inputs

    def sigma(bin_fn) -> dict:
        tm = analysis_template_model(analysis, bin_fn, x, y, w, transform)
        return {m: SIGNAL_YIELD * expected_poi_uncertainty(tm, method=m) for m in ("profile", "hessian")}  # σ(s) = 50 σ(μ)

    rows = {}
    for i, m in enumerate(ensemble.models):
        name = f"model {i} (weight {ensemble.weights[i]:.3f})"
        rows[name] = sigma(lambda a, m=m: argmax_bins(m.predict(a, bs=50_000)))
    rows["LUMIN Ensemble.predict, unaligned mean"] = sigma(
        lambda a: argmax_bins(ensemble.predict(a, verbose=False, bs=50_000)))
    rows["LUMIN Ensemble + HardBinPredHandler, unaligned vote"] = sigma(
        lambda a: argmax_bins(ensemble.predict(a, pred_cb=HardBinPredHandler(), verbose=False, bs=50_000)))
    rows["aligned ensemble (align_ensemble)"] = sigma(aligned)
    same_bin = float((aligned.member_predictions(x, 50_000)[0].argmax(1)
                      == aligned.member_predictions(x, 50_000)[-1].argmax(1)).mean())

    # save, reload, export
    saved = save_inferno_ensemble(out / "ensemble", aligned, analysis, overwrite=True)
    loaded = load_inferno_ensemble(saved, builder)
    reload_diff = float(np.abs(loaded.aligned.predict(x[:5000]) - aligned.predict(x[:5000])).max())
    onnx_diff = None
    try:
        import onnxruntime as ort

        from lumin_inferno.export import export_onnx

        path = export_onnx(loaded.aligned, out / "ensemble_aligned.onnx", dynamo=not tiny)  # legacy: 0.2 s
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        onnx_diff = float(np.abs(session.run(None, {"inputs": x[:5000]})[0] - aligned.predict(x[:5000])).max())
    except ImportError:  # pragma: no cover - onnxruntime is a requirement of the export
        pass

    summary = {
        "benchmark": 2,
        "n_models": n_models,
        "n_train_per_class": n_train,
        "n_test_per_class": n_test,
        "epochs": epochs,
        "seed": seed,
        "validation_loss": [float(r["loss"]) for r in results],
        "weights": [float(v) for v in ensemble.weights],
        "permutations": [p.tolist() for p in aligned.permutations],
        "same_bin_fraction_after_alignment": same_bin,
        "sigma_s": rows,
        "reload_max_abs_diff": reload_diff,
        "onnx_max_abs_diff": onnx_diff,
        "seconds": time.time() - t0,
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    print(f"benchmark 2, {n_models} INFERNO models, expected σ(s) on {2 * n_test} test events (events):")
    print(f"{'':55s} {'profile':>8s} {'Hessian':>8s}")
    for name, v in rows.items():
        print(f"{name:55s} {v['profile']:8.2f} {v['hessian']:8.2f}")
    print(f"permutations: {summary['permutations']}; events in the same bin after alignment: {same_bin:.1%}")
    print(f"reload max |Δp| = {reload_diff:.2g}, onnxruntime vs torch max |Δp| = {onnx_diff}")
    return summary


if __name__ == "__main__":
    p = argparse.ArgumentParser()
    p.add_argument("--outdir", default="outputs/inferno_ensemble")
    p.add_argument("--tiny", action="store_true")
    p.add_argument("--n-models", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args()
    main(a.outdir, a.tiny, a.n_models, a.seed)
